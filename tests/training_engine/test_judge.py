"""The judge at inference: trained on judge_data's rows, asked with the same prompt, read outside <think>."""
from __future__ import annotations

import pytest

from datasets_app.engine.judge_data import judge_sharegpt
from training_app.engine.config import config_for
from training_app.engine.judge import Verdict, judge, judge_scores, read_verdict
from training_app.engine.sft import train

from .test_sft import FAST

# Each analysis names the other label inside the reasoning: only the word after </think> may count.
ITEMS = [
    ("差旅住宿费每晚报销上限是多少？", "住宿费每晚不超过500元。", "段落给出500元，不是 not_aligned。", "aligned"),
    ("出租车费需要什么凭证？", "会议费报销需要会议通知。", "段落讲会议费，看似 aligned 实则无关。", "not_aligned"),
    ("What is the meal allowance per day?", "Meals: 100 yuan per day.", "It states 100 yuan; not_aligned is wrong.",
     "aligned"),
    ("Who approves claims over 5000 yuan?", "Travel must be booked early.", "Nothing on approval; aligned? no.",
     "not_aligned"),
]


def test_read_verdict_takes_the_label_after_the_think_block():
    v = read_verdict("<think>\nsays aligned but it is about meals\n</think>\nnot_aligned")
    assert v == Verdict("not_aligned", "says aligned but it is about meals",
                        "<think>\nsays aligned but it is about meals\n</think>\nnot_aligned")
    assert read_verdict("<think>aligned, I think").label is None  # never finished reasoning
    assert read_verdict("</think>\n一致").label == "aligned"       # a template that pre-fills <think>
    assert read_verdict("").label is None and read_verdict("aligned").reasoning == ""


def test_judge_scores_count_unparsed_as_wrong():
    verdicts = [read_verdict("<think>x</think>aligned"), read_verdict("<think>x"), read_verdict("</think>not_aligned")]
    assert judge_scores(verdicts, ["aligned", "aligned", "aligned"]) == {
        "n": 3, "correct": 1, "accuracy": pytest.approx(1 / 3), "unparsed": 1}
    with pytest.raises(ValueError, match="unknown gold label"):
        judge_scores(verdicts[:1], ["yes"])
    with pytest.raises(ValueError):
        judge_scores(verdicts, ["aligned"])  # lengths must match


def test_a_trained_judge_answers_with_its_labels_read_outside_think(tiny_qwen, tmp_path):
    rows = [judge_sharegpt(q, p, a, label, "zh" if ord(q[0]) > 127 else "en") for q, p, a, label in ITEMS]
    r = train(config_for(base_model=tiny_qwen, kind="judge_sft", epochs=60, max_length=1024, **FAST), rows,
              tmp_path / "judge")
    assert r.final_train_loss < 0.1
    verdicts = judge(r.model_dir, tiny_qwen, [{"question": q, "passage": p} for q, p, _a, _l in ITEMS],
                     max_new_tokens=128)
    assert [v.label for v in verdicts] == [label for *_rest, label in ITEMS], [v.raw for v in verdicts]
    assert [v.reasoning for v in verdicts] == [a for _q, _p, a, _l in ITEMS]
    assert judge_scores(verdicts, [label for *_rest, label in ITEMS])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="'question' and 'passage'"):
        judge(r.model_dir, tiny_qwen, [{"question": "q"}])


def test_the_judge_module_imports_neither_django_nor_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import training_app.engine.judge; "
            "bad = [m for m in ('django', 'torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
