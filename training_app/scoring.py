"""Expert scoring of evaluation answers: blind side-by-side pairs, aggregates with intervals, disagreements.

The scorer sees two configurations' answers to one question as "Answer 1" and "Answer 2" in an
order drawn per (expert, run, question) from a seeded generator, and the page carries no
configuration name or item id; the server draws the same order again when the scores come
back. Scores are 1–5 with a comment; one per expert and answer (scoring again replaces it).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

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


def shown_order(expert_id: int, run_id: int, position: int) -> bool:
    """True when the second configuration is shown first; the same for the same expert and question."""
    seed = hashlib.sha256(f"{settings.SECRET_KEY}:{expert_id}:{run_id}:{position}".encode()).hexdigest()
    return random.Random(seed).random() < 0.5


def _pair_items(run: EvaluationRun, a: str, b: str, position: int) -> tuple[EvalItem, EvalItem] | None:
    items = {i.configuration: i for i in EvalItem.objects.filter(run=run, position=position, configuration__in=[a, b])}
    if a not in items or b not in items:
        return None
    return items[a], items[b]


def next_pair(run: EvaluationRun, expert, a: str, b: str, position: int | None = None) -> BlindPair | None:
    """The question to score next (the first one this expert has not scored in both), or ``position``'s."""
    if a == b or a not in run.configurations or b not in run.configurations:
        raise ValidationError({"pair": "Choose two different configurations of this evaluation."})
    positions = sorted(set(EvalItem.objects.filter(run=run, configuration=a).values_list("position", flat=True))
                       & set(EvalItem.objects.filter(run=run, configuration=b).values_list("position", flat=True)))
    if position is None:
        scored = set(ExpertScore.objects.filter(item__run=run, expert=expert, item__configuration__in=[a, b])
                     .values_list("item__position", "item__configuration"))
        position = next((p for p in positions if (p, a) not in scored or (p, b) not in scored), None)
        if position is None:
            return None
    items = _pair_items(run, a, b, position)
    if items is None:
        return None
    first, second = items
    if shown_order(expert.pk, run.pk, position):
        first, second = second, first
    return BlindPair(position, first.question, first.gold, (first, second), (a, b))


def record_scores(*, run: EvaluationRun, expert, a: str, b: str, position: int, scores: list[int],
                  comments: list[str]) -> list[ExpertScore]:
    """Scores for "Answer 1" and "Answer 2" of a blind pair, mapped back to their items."""
    pair = next_pair(run, expert, a, b, position)
    if pair is None:
        raise ValidationError({"pair": "That question has no answers of both configurations."})
    if len(scores) != 2 or any(not isinstance(s, int) or not 1 <= s <= 5 for s in scores):
        raise ValidationError({"score": "Give each answer a score from 1 to 5."})
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


def disagreements(run: EvaluationRun) -> list[dict]:
    """Answers where experts disagree with each other, or with the automatic verdict."""
    rows = []
    items = EvalItem.objects.filter(run=run, scores__isnull=False).distinct().prefetch_related("scores")
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
