"""A small general-knowledge probe: does a model fine-tuned on one narrow domain still know the basics?

Fine-tuning a small model on a few hundred domain pairs can make it forget general ability.
The promotion gate asks the base model and the fine-tuned one these questions (no retrieval,
greedy) and refuses a version whose share of right answers falls too far below its base's.
The questions are written for VSM, in both languages, each with the short fact a right answer
must contain.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeQuestion:
    question: str
    accept: tuple[str, ...]  # a right answer contains one of these (after normalisation)


PROBE: tuple[ProbeQuestion, ...] = (
    ProbeQuestion("中国的首都是哪个城市？", ("北京",)),
    ProbeQuestion("一年有几个月？", ("12", "十二")),
    ProbeQuestion("一天有多少个小时？", ("24", "二十四")),
    ProbeQuestion("一小时有多少分钟？", ("60", "六十")),
    ProbeQuestion("水的化学式是什么？", ("h2o",)),
    ProbeQuestion("太阳从哪个方向升起？", ("东",)),
    ProbeQuestion("长城在哪个国家？", ("中国",)),
    ProbeQuestion("3加4等于几？", ("7", "七")),
    ProbeQuestion("What is the capital of France?", ("paris",)),
    ProbeQuestion("How many days are there in a week?", ("7", "seven")),
    ProbeQuestion("What is 12 plus 30?", ("42", "forty-two", "forty two")),
    ProbeQuestion("Which planet is known as the Red Planet?", ("mars",)),
    ProbeQuestion("What gas do plants take in from the air to make food?", ("carbon dioxide", "co2")),
    ProbeQuestion("At how many degrees Celsius does water boil at sea level?", ("100", "hundred")),
    ProbeQuestion("What is the largest ocean on Earth?", ("pacific",)),
    ProbeQuestion("How many legs does a spider have?", ("8", "eight")),
)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text or "").lower()).strip()


def is_right(answer: str, question: ProbeQuestion) -> bool:
    text = _norm(answer)
    return any(_norm(a) in text for a in question.accept)


def probe_score(answers: Sequence[str], questions: Sequence[ProbeQuestion] = PROBE) -> dict:
    """{"accuracy", "right", "questions", "wrong": [question, …]} for answers given in the probe's order."""
    if len(answers) != len(questions):
        raise ValueError(f"expected {len(questions)} answers, got {len(answers)}")
    right = [is_right(a, q) for a, q in zip(answers, questions)]
    return {"accuracy": sum(right) / len(questions) if questions else None, "right": sum(right),
            "questions": len(questions), "wrong": [q.question for q, ok in zip(questions, right) if not ok]}
