"""The general-ability probe: the right fact in either language, case and width folded; counts exact."""
from __future__ import annotations

import pytest

from training_app.engine.probe import PROBE, ProbeQuestion, is_right, probe_score


@pytest.mark.parametrize("answer, accept, right", [
    ("北京是中国的首都。", ("北京",), True),
    ("上海", ("北京",), False),
    ("The capital of France is PARIS.", ("paris",), True),
    ("Ｈ２Ｏ", ("h2o",), True),  # full-width folds to ASCII
    ("It has eight legs.", ("8", "eight"), True),
    ("", ("mars",), False),
])
def test_an_answer_is_right_when_it_states_an_accepted_fact(answer, accept, right):
    assert is_right(answer, ProbeQuestion("q", accept)) is right


def test_the_score_counts_right_answers_and_names_the_wrong_questions():
    answers = [q.accept[0] for q in PROBE]
    answers[0] = "我不知道"
    score = probe_score(answers)
    assert score["right"] == len(PROBE) - 1 and score["accuracy"] == pytest.approx((len(PROBE) - 1) / len(PROBE))
    assert score["wrong"] == [PROBE[0].question]
    with pytest.raises(ValueError, match="expected"):
        probe_score(answers[:-1])
    assert {any("\u4e00" <= ch <= "\u9fff" for ch in q.question) for q in PROBE} == {True, False}  # both languages
