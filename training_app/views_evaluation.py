"""Evaluation pages: the domain's leaderboard, one run's report (table, bar chart, answers, downloads) and
blind expert scoring. Viewers read, experts start runs and score, as on the other training pages."""
from __future__ import annotations

import csv
import io
import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from datasets_app.models import DatasetVersion, TeacherConfig
from domains import access as gate
from domains.models import Role
from domains.views import _job_fragment
from training_app import scoring
from training_app.forms import PromotionPolicyForm
from training_app.evaluation_tasks import DEFAULT_CONFIGURATIONS, start_evaluation
from training_app.models import EvalItem, EvaluationRun, ModelVersion
from training_app.promotion import policy_for
from training_app.views import _pk, _respond

C = EvaluationRun.Configuration
# The bars of the report's chart, and whether higher is better.
CHART_METRICS = (("accuracy", True), ("key_fact_recall", True), ("rouge_l", True), ("hallucination_rate", False),
                 ("refusal_rate", False))
TABLE_METRICS = ("accuracy", "key_fact_recall", "exact_match", "rouge_l", "hallucination_rate", "refusal_rate",
                 "correct_refusal_rate", "context_recall", "judge_score", "seconds_per_answer")


def _runs(access: gate.Access):
    return EvaluationRun.objects.for_domain(access.domain).select_related(
        "model_version", "dataset_version", "dataset_version__dataset", "job", "created_by")


def _run_of(access: gate.Access, pk) -> EvaluationRun:
    return get_object_or_404(_runs(access), pk=_pk(pk, "evaluation"))


def bar_chart(results: dict, configurations, *, width: int = 640, bar_h: int = 12) -> dict | None:
    """Geometry of a grouped horizontal bar chart: one group per metric, one bar per configuration."""
    groups = []
    y = 8
    label_w, right = 150, 60
    span = width - label_w - right
    for metric, higher in CHART_METRICS:
        bars = []
        for index, configuration in enumerate(configurations):
            value = (results.get(configuration) or {}).get(metric)
            if isinstance(value, (int, float)):
                bars.append({"configuration": configuration, "index": index, "value": float(value), "y": y,
                             "w": round(max(0.0, min(1.0, float(value))) * span, 2)})
                y += bar_h + 2
        if bars:
            groups.append({"metric": metric, "higher_is_better": higher, "bars": bars,
                           "label_y": bars[0]["y"] + bar_h - 2})
            y += 10
    if not groups:
        return None
    return {"width": width, "height": y + 4, "label_w": label_w, "bar_h": bar_h, "span": span, "groups": groups,
            "legend": [{"configuration": c, "index": i, "label": C(c).label} for i, c in enumerate(configurations)]}


def score_plot(row: dict, *, width: int = 160) -> dict:
    """Geometry of a 1–5 scale with the mean as a dot and its 95% interval as a whisker."""
    def x(value: float) -> float:
        return round((max(1.0, min(5.0, value)) - 1.0) / 4.0 * (width - 8) + 4, 1)

    plot = {"width": width, "mean_x": x(row["mean"]) if row.get("mean") is not None else None}
    if row.get("low") is not None:
        plot.update(low_x=x(row["low"]), high_x=x(row["high"]))
    plot["ticks"] = [x(float(t)) for t in range(1, 6)]
    return plot


def _start_context(access: gate.Access) -> dict:
    if not access.can_write:
        return {}
    return {
        "versions": ModelVersion.objects.for_domain(access.domain)
        .filter(kind__in=["sft", "cpt_sft", "grpo", "judge_sft"]).order_by("-number"),
        "dataset_versions": DatasetVersion.objects.for_domain(access.domain).select_related("dataset")
        .order_by("-created_at"),
        "all_configurations": [(c, C(c).label) for c in DEFAULT_CONFIGURATIONS],
        "judges": TeacherConfig.objects.for_domain(access.domain).exclude(provider=TeacherConfig.Provider.OFFLINE),
    }


def _list_context(access: gate.Access, policy, policy_form: PromotionPolicyForm | None = None) -> dict:
    return {"access": access, "domain": access.domain, "runs": list(_runs(access)[:100]), "policy": policy,
            "section": "training", "configurations": [c for c, _label in C.choices],
            "configuration_labels": C.choices,
            "version_scores": [{**row, "plot": score_plot(row)} for row in scoring.version_summary(access.domain)],
            "policy_form": (policy_form or PromotionPolicyForm(policy=policy)) if access.is_owner else None,
            **_start_context(access)}


@login_required
@require_GET
def evaluation_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The leaderboard: every evaluation of the domain, newest first, the gate's configuration first."""
    access = gate.for_request(request, slug)
    policy = policy_for(access.domain)
    if request.htmx and "run" in request.GET:
        run = _run_of(access, request.GET["run"])
        context = {"run": run, "domain": access.domain, "access": access, "policy": policy,
                   "configurations": [c for c, _label in C.choices]}
        if run.job is None:
            return _respond(request, "training/evaluation_list.html#eval-row", context)
        return _job_fragment(request, "training/evaluation_list.html#eval-row", context, run.job)
    return _respond(request, "training/evaluation_list.html", _list_context(access, policy))


@login_required
@require_POST
def promotion_policy(request: HttpRequest, slug: str) -> HttpResponse:
    """Owners set the promotion gate: configuration, the drop allowed per metric, the probe's tolerance."""
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    policy = policy_for(access.domain)
    form = PromotionPolicyForm(request.POST, policy=policy)
    if form.is_valid():
        policy.configuration = form.cleaned_data["configuration"]
        policy.metrics = form.cleaned_data["metrics"]
        policy.probe_max_drop = form.cleaned_data["probe_max_drop"]
        policy.save()
        messages.success(request, _("Promotion gate saved."))
        return redirect(reverse("evaluation-list", args=[access.domain.slug]) + "#gate-policy")
    return _respond(request, "training/evaluation_list.html", _list_context(access, policy, form), status=400)


@login_required
@require_POST
def evaluation_start(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    version = ModelVersion.objects.for_domain(access.domain).filter(pk=_pk(request.POST.get("model_version"),
                                                                              "model version")).first()
    dataset_version = None
    if request.POST.get("dataset_version"):
        dataset_version = DatasetVersion.objects.for_domain(access.domain).filter(
            pk=_pk(request.POST["dataset_version"], "dataset version")).first()
    if version is None:
        messages.error(request, _("Choose a model version of this domain."))
        return redirect(reverse("evaluation-list", args=[access.domain.slug]))
    try:
        run = start_evaluation(domain=access.domain, model_version=version, dataset_version=dataset_version,
                               by=request.user, configurations=request.POST.getlist("configurations") or None,
                               options={"k": request.POST.get("k") or 3,
                                        "threshold": request.POST.get("threshold") or 0.0,
                                        "max_new_tokens": request.POST.get("max_new_tokens") or 128,
                                        "probe": "probe" in request.POST,
                                        "judge_teacher": request.POST.get("judge_teacher") or None})
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect(reverse("evaluation-list", args=[access.domain.slug]))
    messages.success(request, _("Evaluation #%(id)s queued.") % {"id": run.pk})
    return redirect(reverse("evaluation-detail", args=[access.domain.slug, run.pk]))


def report_rows(run: EvaluationRun) -> list[dict]:
    """One row per answer, for the CSV/JSON downloads."""
    rows = []
    for item in EvalItem.objects.filter(run=run).order_by("position", "configuration"):
        m = item.metrics or {}
        rows.append({"position": item.position, "configuration": item.configuration, "question": item.question,
                     "gold": item.gold, "answer": item.answer, "answerable": item.answerable,
                     "correct": m.get("correct"), "key_fact_recall": m.get("key_fact_recall"),
                     "exact_match": m.get("exact_match"), "rouge_l": m.get("rouge_l"),
                     "hallucinated": ", ".join(m.get("hallucinated") or []), "refusal": m.get("refusal"),
                     "context_recall": m.get("context_recall"), "seconds": item.seconds,
                     "citations": [c.get("passage_id") for c in item.citations or []]})
    return rows


def _download(run: EvaluationRun, fmt: str) -> HttpResponse:
    name = f"{run.domain.slug}-evaluation-{run.pk}"
    if fmt == "json":
        body = {"id": run.pk, "model_version": run.model_version.number if run.model_version else None,
                "dataset_version": run.dataset_version_id, "configurations": run.configurations,
                "options": run.options, "results": run.results, "probe": run.probe, "items": report_rows(run)}
        response = HttpResponse(json.dumps(body, ensure_ascii=False, indent=2), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}.json"'
        return response
    buffer = io.StringIO()
    rows = report_rows(run)
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["position"])
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "citations": " ".join(str(c) for c in row["citations"])})
    response = HttpResponse("\ufeff" + buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


@login_required
@require_GET
def evaluation_detail(request: HttpRequest, slug: str, pk) -> HttpResponse:
    """One run's report; ``?format=csv|json`` downloads its answers. With htmx: the live header (poll, 286)."""
    access = gate.for_request(request, slug)
    run = _run_of(access, pk)
    fmt = request.GET.get("format")
    if fmt in ("csv", "json"):
        return _download(run, fmt)
    if fmt:
        raise Http404("Unknown format")
    configurations = run.configurations
    context = {"access": access, "domain": access.domain, "run": run, "section": "training",
               "configurations": configurations,
               "labels": {c: C(c).label for c in configurations}, "table_metrics": TABLE_METRICS}
    if request.htmx and "live" in request.GET and run.job is not None:
        return _job_fragment(request, "training/evaluation_detail.html#eval-live", context, run.job)
    by_position: dict[int, dict] = {}
    for item in EvalItem.objects.filter(run=run).order_by("position"):
        by_position.setdefault(item.position, {"question": item.question, "gold": item.gold,
                                               "answerable": item.answerable, "answers": {}})
        by_position[item.position]["answers"][item.configuration] = item
    context.update({
        "chart": bar_chart(run.results or {}, configurations),
        "entity_rows": [(label, row) for label, row in ((run.results or {}).get("entities") or {}).items()
                        if isinstance(row, dict) and label not in ("micro", "macro")],
        "questions": [{**q, "row": [q["answers"].get(c) for c in configurations]}
                      for _p, q in sorted(by_position.items())],
        "experts": scoring.expert_summary(run),
        "disagreements": scoring.disagreements(run),
        "pair": scoring.default_pair(run),
    })
    return _respond(request, "training/evaluation_detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def evaluation_score(request: HttpRequest, slug: str, pk) -> HttpResponse:
    """Blind side-by-side scoring: two answers to one question, order drawn per expert, no names shown.

    ``a`` is a configuration of this run; ``b`` one of run ``vs`` (another version's evaluation on the
    same held-out questions) or, without ``vs``, of this run.
    """
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    run = _run_of(access, pk)
    data = request.POST if request.method == "POST" else request.GET
    other = _run_of(access, data["vs"]) if data.get("vs") else run
    pair = scoring.default_pair(run)
    a = data.get("a") or (pair[0] if pair else "")
    b = data.get("b") or (a if other.pk != run.pk else (pair[1] if pair else ""))
    query = {"a": a, "b": b, **({"vs": other.pk} if other.pk != run.pk else {})}
    url = reverse("evaluation-score", args=[access.domain.slug, run.pk]) + "?" + urlencode(query)
    if request.method == "POST":
        try:
            scoring.record_scores(run=run, other=other, expert=request.user, a=a, b=b,
                                  position=int(request.POST["position"]),
                                  scores=[int(request.POST.get("score1", 0)), int(request.POST.get("score2", 0))],
                                  comments=[request.POST.get("comment1", ""), request.POST.get("comment2", "")])
        except (KeyError, ValueError):
            messages.error(request, _("Give each answer a score from 1 to 5."))
        except ValidationError as exc:
            for message in exc.messages:
                messages.error(request, message)
        return redirect(url)
    blind, pair_error = None, ""
    try:
        blind = scoring.next_pair(run, request.user, a, b, other=other) if a and b else None
    except ValidationError as exc:
        pair_error = exc.messages[0]
    context = {"access": access, "domain": access.domain, "run": run, "other": other, "blind": blind, "a": a,
               "pair_error": pair_error,
               "b": b, "section": "training", "scale": range(1, 6),
               "labels": C.choices, "comparable": list(scoring.comparable_runs(run))}
    return _respond(request, "training/evaluation_score.html", context)
