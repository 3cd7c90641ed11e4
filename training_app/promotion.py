"""The promotion gate: a version becomes active only when its numbers say it may.

An LLM version must not fall below the domain's active version on the policy's metrics, in the
policy's configuration (fine-tuned + retrieval by default), on the same held-out questions; with
no comparable active version it must not fall below its own base model. It must not lose more
general ability (the probe) than the policy allows. An embedding version must not retrieve worse
than its base model or the active embedding version. Forcing past the gate takes an owner and a
reason; every promotion records who, when, why and what the gate said.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from domains import audit

from training_app.models import (
    GATE_METRICS,
    EvaluationRun,
    ModelVersion,
    Promotion,
    PromotionPolicy,
    TrainingRun,
)

# The configuration without fine-tuning that a fine-tuned configuration is compared with.
BASE_OF = {"model": "base", "model_rag": "base_rag"}
LLM_KINDS = (TrainingRun.Kind.SFT, TrainingRun.Kind.CPT_SFT)
EMBEDDING_METRICS = ("hit@1", "mrr@10")


@dataclass
class GateResult:
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # metric, candidate, baseline, allowed_drop, ok
    baseline: str = ""  # what was compared against, in words
    evaluation_id: int | None = None
    probe: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def policy_for(domain) -> PromotionPolicy:
    policy, _created = PromotionPolicy.objects.get_or_create(domain=domain)
    return policy


def latest_evaluation(version: ModelVersion, configuration: str, dataset_version_id: int | None = None):
    from domains.models import Job

    qs = EvaluationRun.objects.filter(model_version=version, job__status=Job.Status.SUCCEEDED) \
        .order_by("-created_at", "-id")
    if dataset_version_id is not None:
        qs = qs.filter(dataset_version_id=dataset_version_id)
    for run in qs:
        if configuration in (run.results or {}):
            return run
    return None


def _compare(rows: list[dict], reasons: list[str], candidate: dict, baseline: dict, metrics: dict, what: str) -> None:
    for metric, allowed in metrics.items():
        higher_better = GATE_METRICS.get(metric, True)
        mine, theirs = candidate.get(metric), baseline.get(metric)
        if mine is None or theirs is None:
            continue
        drop = (theirs - mine) if higher_better else (mine - theirs)
        ok = drop <= float(allowed) + 1e-9
        rows.append({"metric": metric, "candidate": mine, "baseline": theirs, "allowed_drop": float(allowed),
                     "higher_is_better": higher_better, "ok": ok})
        if not ok:
            reasons.append(_("%(metric)s %(mine).3f is worse than %(what)s's %(theirs).3f (at most %(allowed).3f "
                             "worse is allowed)") % {"metric": metric, "mine": mine, "what": what, "theirs": theirs,
                                                     "allowed": float(allowed)})


def gate_for(version: ModelVersion) -> GateResult:
    if version.kind == TrainingRun.Kind.EMBEDDING:
        return _embedding_gate(version)
    if version.kind not in LLM_KINDS:
        return GateResult(True, baseline=_("no automatic gate for this kind"))
    policy = policy_for(version.domain)
    config = policy.configuration
    label = EvaluationRun.Configuration(config).label
    run = latest_evaluation(version, config)
    if run is None:
        return GateResult(False, [_("v%(n)s has no finished evaluation of “%(config)s”: evaluate it first (or force "
                                    "the promotion, with a reason).") % {"n": version.number, "config": label}])
    candidate = run.results[config]
    rows, reasons = [], []
    active = ModelVersion.objects.for_domain(version.domain).active().filter(kind__in=LLM_KINDS) \
        .exclude(pk=version.pk).first()
    active_run = latest_evaluation(active, config, run.dataset_version_id) if active is not None else None
    if active_run is not None:
        baseline = _("active v%(n)s") % {"n": active.number}
        _compare(rows, reasons, candidate, active_run.results[config], policy.metrics, baseline)
    elif BASE_OF.get(config) in (run.results or {}):
        baseline = _("its base model (%(config)s)") % {"config": EvaluationRun.Configuration(BASE_OF[config]).label}
        _compare(rows, reasons, candidate, run.results[BASE_OF[config]], policy.metrics, _("its base model"))
    else:
        baseline = _("nothing comparable (no active version evaluated on these questions, no base run)")
    probe = run.probe or None
    if probe and probe.get("model") is not None and probe.get("base") is not None:
        lost = probe["base"] - probe["model"]
        if lost > policy.probe_max_drop + 1e-9:
            reasons.append(_("general ability fell: %(model).2f of the probe right against the base model's %(base).2f "
                             "(at most %(drop).2f lower is allowed)") % {"model": probe["model"], "base": probe["base"],
                                                                         "drop": policy.probe_max_drop})
    return GateResult(not reasons, reasons, rows, baseline, run.pk, probe)


def _embedding_gate(version: ModelVersion) -> GateResult:
    evaluation = (version.metrics or {}).get("retrieval")
    if not evaluation or not evaluation.get("table"):
        return GateResult(False, [_("v%(n)s has no retrieval evaluation on held-out questions (force the promotion, "
                                    "with a reason, to use it anyway).") % {"n": version.number}])
    table = {row["name"]: row for row in evaluation["table"]}
    tuned = table.get("fine-tuned", {})
    rows, reasons = [], []
    tolerance = {m: 0.0 for m in EMBEDDING_METRICS}
    _compare(rows, reasons, tuned, table.get("base", {}), tolerance, _("its base model"))
    active = ModelVersion.objects.for_domain(version.domain).active().filter(kind=TrainingRun.Kind.EMBEDDING) \
        .exclude(pk=version.pk).first()
    baseline = _("its base model")
    theirs = ((active.metrics or {}).get("retrieval") or {}) if active is not None else {}
    if theirs.get("table") and theirs.get("split") == evaluation.get("split") \
            and active.dataset_hash == version.dataset_hash:
        baseline = _("its base model and active v%(n)s") % {"n": active.number}
        _compare(rows, reasons, tuned, {r["name"]: r for r in theirs["table"]}.get("fine-tuned", {}), tolerance,
                 _("active v%(n)s") % {"n": active.number})
    return GateResult(not reasons, reasons, rows, baseline)


def promote_version(*, version: ModelVersion, by, force: bool = False, reason: str = "") -> Promotion:
    """Make ``version`` active if the gate allows it (or, forced by an owner, with a reason), and record it."""
    reason = (reason or "").strip()
    gate = gate_for(version)
    if not gate.allowed and not force:
        raise ValidationError({"gate": gate.reasons})
    if force and not gate.allowed and not reason:
        raise ValidationError({"reason": _("A forced promotion needs a reason: say why the gate may be overruled.")})
    with transaction.atomic():
        previous = ModelVersion.objects.for_domain(version.domain).active().filter(kind=version.kind) \
            .exclude(pk=version.pk).first()
        version.promote()
        forced = bool(force and not gate.allowed)
        audit.record(domain=version.domain, by=by, action="model.promote", target=f"model v{version.number}",
                     summary=("forced: " if forced else "") + (reason or "passed the gate")[:200],
                     forced=forced, previous=previous.number if previous else None)
        return Promotion.objects.create(
            domain=version.domain, model_version=version, previous=previous,
            by=by if getattr(by, "is_authenticated", False) else None, forced=forced,
            reason=reason[:2000], gate=gate.to_dict())


def demote_version(*, version: ModelVersion, by) -> ModelVersion:
    """Stop serving ``version`` (the domain falls back to what is left active, or none), recorded."""
    if version.is_active:
        version.demote()
        audit.record(domain=version.domain, by=by, action="model.demote", target=f"model v{version.number}")
    return version
