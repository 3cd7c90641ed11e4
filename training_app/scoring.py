"""Expert scoring of evaluation answers: blind side-by-side pairs, aggregates with intervals, disagreements.

The scorer sees two answers to one held-out question as "Answer 1" and "Answer 2": two
configurations of one evaluation, or one configuration each of two evaluations on the same
dataset version (two model versions, paired by the question's position). The order is drawn per
(expert, runs, question) from a seeded generator and the page carries no configuration name,
version or item id; the server draws the same order again when the scores come back. Scores
are 1–5 with a comment; one per expert and answer (scoring again replaces it). Scores roll up
per run and configuration and, on the leaderboard, per model version.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.utils.translation import gettext as _

from training_app.models import EvalItem, EvaluationRun, ExpertScore

DISAGREEMENT_SPREAD = 2  # experts whose scores of one answer differ this much disagree


@dataclass(frozen=True)
class BlindPair:
    position: int
    question: str
    gold: str
    answers: tuple[EvalItem, EvalItem]  # in the order shown
    configurations: tuple[str, str]     # (a, b) as asked, not as shown


def answered_configurations(run: EvaluationRun) -> list[str]:
    return [c for c in run.configurations if EvalItem.objects.filter(run=run, configuration=c).exists()]


def default_pair(run: EvaluationRun) -> tuple[str, str] | None:
    done = answered_configurations(run)
    for a, b in (("model_rag", "base_rag"), ("model", "base"), ("model_rag", "model")):
        if a in done and b in done:
            return a, b
    return (done[0], done[1]) if len(done) >= 2 else None


def comparable_runs(run: EvaluationRun):
    """Other evaluations of the domain on the same held-out questions: their answers can be paired by position."""
    return (EvaluationRun.objects.filter(domain_id=run.domain_id, dataset_version_id=run.dataset_version_id)
            .exclude(pk=run.pk).select_related("model_version").order_by("-created_at", "-id"))


def shown_order(expert_id: int, run_id: int, position: int, other_id: int | None = None) -> bool:
    """True when the second answer is shown first; the same for the same expert, pair of runs and question."""
    runs = f"{run_id}" if other_id in (None, run_id) else f"{run_id}/{other_id}"
    seed = hashlib.sha256(f"{settings.SECRET_KEY}:{expert_id}:{runs}:{position}".encode()).hexdigest()
    return random.Random(seed).random() < 0.5


def _check_sides(run: EvaluationRun, a: str, other: EvaluationRun, b: str) -> None:
    if other.domain_id != run.domain_id:
        raise ValidationError({"pair": _("Both evaluations must belong to this domain.")})
    if other.dataset_version_id != run.dataset_version_id:
        raise ValidationError({"pair": _("Compare evaluations of the same held-out questions (one dataset version).")})
    if a not in run.configurations or b not in other.configurations or (other.pk == run.pk and a == b):
        raise ValidationError({"pair": _("Choose two different answers to compare: a configuration of each evaluation.")})


def _items_at(run: EvaluationRun, configuration: str) -> dict[int, EvalItem]:
    return {i.position: i for i in EvalItem.objects.filter(run=run, configuration=configuration)}


def next_pair(run: EvaluationRun, expert, a: str, b: str, position: int | None = None, *,
              other: EvaluationRun | None = None) -> BlindPair | None:
    """The question to score next (the first one this expert has not scored on both sides), or ``position``'s.

    Side one is configuration ``a`` of ``run``; side two is configuration ``b`` of ``other`` (another
    version's evaluation on the same held-out questions) or of ``run`` itself.
    """
    other = other or run
    _check_sides(run, a, other, b)
    first_side, second_side = _items_at(run, a), _items_at(other, b)
    positions = sorted(p for p in set(first_side) & set(second_side)
                       if first_side[p].question == second_side[p].question)
    if position is None:
        scored = set(ExpertScore.objects.filter(expert=expert, item__in=[*first_side.values(), *second_side.values()])
                     .values_list("item_id", flat=True))
        position = next((p for p in positions
                         if first_side[p].pk not in scored or second_side[p].pk not in scored), None)
        if position is None:
            return None
    if position not in positions:
        return None
    first, second = first_side[position], second_side[position]
    if shown_order(expert.pk, run.pk, position, other.pk):
        first, second = second, first
    return BlindPair(position, first.question, first.gold, (first, second), (a, b))


def record_scores(*, run: EvaluationRun, expert, a: str, b: str, position: int, scores: list[int],
                  comments: list[str], other: EvaluationRun | None = None) -> list[ExpertScore]:
    """Scores for "Answer 1" and "Answer 2" of a blind pair, mapped back to their items."""
    pair = next_pair(run, expert, a, b, position, other=other)
    if pair is None:
        raise ValidationError({"pair": _("That question has no answers on both sides.")})
    if len(scores) != 2 or any(not isinstance(s, int) or not 1 <= s <= 5 for s in scores):
        raise ValidationError({"score": _("Give each answer a score from 1 to 5.")})
    saved = []
    with transaction.atomic():
        for item, score, comment in zip(pair.answers, scores, comments):
            row, _created = ExpertScore.objects.update_or_create(
                item=item, expert=expert, defaults={"domain": run.domain, "score": score,
                                                    "comment": (comment or "").strip()[:2000]})
            saved.append(row)
    return saved


def expert_summary(run: EvaluationRun) -> list[dict]:
    """Per configuration: the experts' mean score with a 95% interval, and how many answers were scored."""
    from training_app.engine.evaluation import mean_ci

    out = []
    for configuration in run.configurations:
        values = list(ExpertScore.objects.filter(item__run=run, item__configuration=configuration)
                      .values_list("score", flat=True))
        if values:
            out.append({"configuration": configuration, "label": EvaluationRun.Configuration(configuration).label,
                        **mean_ci([float(v) for v in values])})
    return out


def version_summary(domain) -> list[dict]:
    """Expert scores rolled up per model version and configuration, over all its evaluations, best mean first.

    Each row: version number and id, configuration and label, n, mean, low, high (95% t interval),
    and how many experts scored.
    """
    from training_app.engine.evaluation import mean_ci

    groups: dict[tuple, dict] = {}
    rows = ExpertScore.objects.filter(domain=domain, item__run__domain=domain).values_list(
        "item__run__model_version_id", "item__run__model_version__number", "item__configuration", "expert_id",
        "score")
    for version_id, number, configuration, expert_id, score in rows:
        group = groups.setdefault((version_id, configuration), {"number": number, "scores": [], "experts": set()})
        group["scores"].append(float(score))
        group["experts"].add(expert_id)
    out = []
    for (version_id, configuration), group in groups.items():
        out.append({"version_id": version_id, "number": group["number"], "configuration": configuration,
                    "label": EvaluationRun.Configuration(configuration).label, "experts": len(group["experts"]),
                    **mean_ci(group["scores"])})
    out.sort(key=lambda r: (-(r["mean"] or 0.0), -(r["number"] or 0), r["configuration"]))
    return out


def disagreements(run: EvaluationRun) -> list[dict]:
    """Answers where experts disagree with each other, or with the automatic verdict."""
    rows = []
    items = (EvalItem.objects.filter(run=run, scores__isnull=False).distinct().order_by("position", "configuration")
             .prefetch_related(Prefetch("scores", queryset=ExpertScore.objects.order_by("id"))))
    for item in items:
        scores = [s.score for s in item.scores.all()]
        auto = bool((item.metrics or {}).get("correct"))
        reasons = []
        if len(scores) >= 2 and max(scores) - min(scores) >= DISAGREEMENT_SPREAD:
            reasons.append("experts")
        mean = sum(scores) / len(scores)
        if (auto and mean <= 2) or (not auto and mean >= 4):
            reasons.append("automatic")
        if reasons:
            rows.append({"item": item, "scores": scores, "mean": mean, "automatic_correct": auto, "reasons": reasons})
    return rows
