"""The think-format judge at inference: ask a judge_sft model, read its label outside ``<think>``.

The judge was trained on rows built by ``datasets_app.engine.judge_data`` (system prompt,
question and passage as delimited data, then ``<think>…</think>`` and one label); asking it
with any other prompt would grade it on text it never saw, so the messages come from the
same module. The label is parsed only after the last ``</think>``: a label word inside the
reasoning (or inside the passage) never counts, and an unfinished think block is no answer.
No Django here.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from datasets_app.engine.judge_data import LABELS, judge_language, judge_messages, parse_judge_label

_THINK = re.compile(r"<\s*think\s*>(.*?)(?:<\s*/\s*think\s*>|$)", re.I | re.S)


@dataclass
class Verdict:
    label: str | None      # "aligned", "not_aligned", or None when the output holds no final label
    reasoning: str         # the text inside the think block ("" when there was none)
    raw: str               # the whole generated text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_verdict(text: str) -> Verdict:
    """Split a judge output into its reasoning and its final label."""
    m = _THINK.search(text or "")
    return Verdict(label=parse_judge_label(text), reasoning=m.group(1).strip() if m else "", raw=text or "")


def judge(model_dir: str | os.PathLike, base_model: str | os.PathLike | None,
          items: Sequence[dict[str, str]], *, lang: str = "", max_new_tokens: int = 256,
          model=None, tokenizer=None) -> list[Verdict]:
    """Greedy verdicts for ``{"question", "passage"}`` items.

    ``lang`` ("en"/"zh") picks the prompt language; empty means per item, from its text.
    Pass a loaded ``model``/``tokenizer`` to reuse them across calls.
    """
    from .sft import generate_answers

    asked = []
    for i, item in enumerate(items):
        question, passage = item.get("question"), item.get("passage")
        if not isinstance(question, str) or not isinstance(passage, str):
            raise ValueError(f"item {i}: a judge item needs 'question' and 'passage' strings")
        system, user = judge_messages(question, passage, lang or judge_language(question + passage))
        asked.append({"question": user["content"], "system": system["content"]})
    outputs = generate_answers(model_dir, base_model, asked, max_new_tokens, model=model, tokenizer=tokenizer)
    return [read_verdict(text) for text in outputs]


def judge_scores(verdicts: Iterable[Verdict], gold: Iterable[str]) -> dict[str, Any]:
    """Accuracy against gold labels; an unparsed verdict counts as wrong and is counted apart."""
    pairs = list(zip(verdicts, gold, strict=True))
    for g in (g for _v, g in pairs):
        if g not in LABELS:
            raise ValueError(f"unknown gold label {g!r}; use one of {LABELS}")
    n = len(pairs)
    correct = sum(1 for v, g in pairs if v.label == g)
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
            "unparsed": sum(1 for v, _g in pairs if v.label is None)}
