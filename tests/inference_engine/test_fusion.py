"""Weighted reciprocal rank fusion and its weights."""
from __future__ import annotations

import pytest

from inference_app.engine.fusion import FusionWeights, rrf_fuse


def test_rrf_hand_example():
    # k=60: a 1/61; b 1/62 + 1/61; c 1/63 + 1/62; d 1/63
    fused = rrf_fuse({"bm25": ["a", "b", "c"], "dense": ["b", "c", "d"]}, {"bm25": 1, "dense": 1}, k=60)
    assert [d for d, _ in fused] == ["b", "c", "a", "d"]
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 62)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["d"] == pytest.approx(1 / 63)


def test_rrf_weights_hand_example():
    # k=1, bm25 weight 2, dense 0.5: a 2/2 = 1; b 2/3 + 0.5/2 = 0.9167; c 0.5/3 = 0.1667
    fused = rrf_fuse({"bm25": ["a", "b"], "dense": ["b", "c"]}, {"bm25": 2.0, "dense": 0.5}, k=1)
    assert fused == [("a", pytest.approx(1.0)), ("b", pytest.approx(2 / 3 + 0.25)), ("c", pytest.approx(0.5 / 3))]
    # a heavier dense weight turns it round: b 1/3 + 4/2 = 2.33; c 4/3; a 1/2
    fused = rrf_fuse({"bm25": ["a", "b"], "dense": ["b", "c"]}, {"bm25": 1.0, "dense": 4.0}, k=1)
    assert [d for d, _ in fused] == ["b", "c", "a"]


@pytest.mark.parametrize("weights", [{"bm25": 1.0, "dense": 0.0}, {"bm25": 1.0}])
def test_zero_weight_drops_a_method(weights):
    fused = rrf_fuse({"bm25": ["a", "b", "c"], "dense": ["d", "c", "b"]}, weights)
    assert [d for d, _ in fused] == ["a", "b", "c"]  # "d" only came from dense


def test_deterministic_tie_break():
    # equal scores and equal best rank → by id
    fused = rrf_fuse({"bm25": ["b", "a"], "dense": ["a", "b"]}, {"bm25": 1, "dense": 1})
    assert [d for d, _ in fused] == ["a", "b"]
    assert fused[0][1] == fused[1][1]
    # k=0: x, y, z and b all score 1.0; b's best single rank is 2, so it comes last
    # although its id sorts first
    fused = rrf_fuse({"A": ["x", "b"], "B": ["y", "b"], "C": ["z"]}, {"A": 1, "B": 1, "C": 1}, k=0)
    assert [d for d, _ in fused] == ["x", "y", "z", "b"]
    assert {s for _, s in fused} == {1.0}
    # the same input in another dict order gives the same output
    again = rrf_fuse({"C": ["z"], "B": ["y", "b"], "A": ["x", "b"]}, {"A": 1, "B": 1, "C": 1}, k=0)
    assert again == fused


def test_repeated_id_counts_once():
    assert rrf_fuse({"m": ["a", "a", "b"]}, {"m": 1}, k=0) == [("a", 1.0), ("b", 1 / 3)]


def test_weights_round_trip_and_validation():
    w = FusionWeights(bm25=1.0, dense=0.5, rrf_k=10)
    assert FusionWeights.from_dict(w.to_dict()) == w
    assert FusionWeights.from_dict({}) == FusionWeights()
    assert FusionWeights.from_dict({"dense": 0}).name == "bm25"
    assert FusionWeights(0, 1).name == "dense"
    assert w.name == "hybrid(bm25=1, dense=0.5, k=10)"
    for bad in ({"bm25": -1}, {"bm25": 0, "dense": 0}, {"rrf_k": 2.5}):
        with pytest.raises(ValueError):
            FusionWeights(**bad)
