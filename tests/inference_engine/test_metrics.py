"""Retrieval metrics against values computed by hand."""
from __future__ import annotations

import math

import pytest

from inference_app.engine.metrics import (
    auc,
    best_threshold,
    evaluate_rankings,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    spearman,
)

L2_3 = math.log2(3)


@pytest.mark.parametrize(
    "ranked, relevant, k, hit, mrr",
    [
        (["a", "b", "c"], {"a"}, 1, 1.0, 1.0),
        (["a", "b", "c"], {"b"}, 1, 0.0, 0.0),
        (["a", "b", "c"], {"b"}, 3, 1.0, 0.5),
        (["a", "b", "c"], {"c", "b"}, 10, 1.0, 0.5),  # the first relevant counts
        (["a", "b", "c"], {"z"}, 10, 0.0, 0.0),
        ([], {"a"}, 5, 0.0, 0.0),
        (["a", "b"], set(), 5, 0.0, 0.0),
    ],
)
def test_hit_and_mrr(ranked, relevant, k, hit, mrr):
    assert hit_at_k(ranked, relevant, k) == hit
    assert mrr_at_k(ranked, relevant, k) == pytest.approx(mrr)


@pytest.mark.parametrize(
    "ranked, relevant, k, expected",
    [
        (["a", "b", "c"], {"a"}, 10, 1.0),
        (["a", "b", "c"], {"b"}, 10, 1 / L2_3),  # 0.6309
        (["a", "b", "c"], {"a", "c"}, 10, (1 + 1 / 2) / (1 + 1 / L2_3)),  # 0.9197
        (["a", "b", "c"], {"c"}, 2, 0.0),  # cut off
        (["a", "b", "c"], set(), 10, 0.0),
        (["a", "a", "b"], {"a"}, 10, 1.0),  # a repeated id earns once
        # graded: gains a=1, b=2 → DCG 1 + 2/log2(3); ideal (2, 1) → 2 + 1/log2(3)
        (["a", "b", "c"], {"a": 1, "b": 2, "c": 0}, 10, (1 + 2 / L2_3) / (2 + 1 / L2_3)),  # 0.8597
        (["b", "a"], {"a": 1, "b": 2}, 10, 1.0),
        (["x", "a"], {"a": 3.0, "b": 1.0}, 2, (3 / L2_3) / (3 + 1 / L2_3)),
    ],
)
def test_ndcg(ranked, relevant, k, expected):
    assert ndcg_at_k(ranked, relevant, k) == pytest.approx(expected)


def test_ndcg_hand_values():
    assert ndcg_at_k(["a", "b", "c"], {"b"}) == pytest.approx(0.630930, abs=1e-6)
    assert ndcg_at_k(["a", "b", "c"], {"a": 1, "b": 2}) == pytest.approx(0.859719, abs=1e-6)


def test_evaluate_rankings_means():
    out = evaluate_rankings([["a", "b"], ["x", "y", "q"], ["m"]], [{"a"}, {"q"}, {"zz"}], ks=(1, 3))
    assert out["queries"] == 3
    assert out["hit@1"] == pytest.approx(1 / 3)
    assert out["hit@3"] == pytest.approx(2 / 3)
    assert out["mrr@10"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # q at rank 3: 1/log2(4)
    assert set(evaluate_rankings([], [])) >= {"queries", "hit@1", "hit@10", "mrr@10", "ndcg@10"}
    with pytest.raises(ValueError):
        evaluate_rankings([["a"]], [])


@pytest.mark.parametrize(
    "xs, ys, expected",
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        # ties: x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4): cov 4.5, var 4.5 and 5
        ([1, 2, 2, 3], [1, 3, 2, 4], 4.5 / math.sqrt(4.5 * 5)),  # 0.948683
        # ties on both sides: x ranks (1.5, 1.5, 3), y ranks (1, 2.5, 2.5): cov 0.75, both vars 1.5
        ([5, 5, 9], [0, 7, 7], 0.75 / 1.5),
        ([1], [2], None),
        ([], [], None),
        ([3, 3, 3], [1, 2, 3], None),  # constant: undefined
    ],
)
def test_spearman(xs, ys, expected):
    got = spearman(xs, ys)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_spearman_matches_scipy_on_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    xs, ys = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]
    assert spearman(xs, ys) == pytest.approx(scipy_stats.spearmanr(xs, ys).statistic)


def test_threshold_and_auc():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.5], [0.5]) == 0.5
    assert auc([0.9, 0.3], [0.5]) == 0.5
    assert auc([], [0.1]) is None
    t, acc = best_threshold([0.9, 0.8, 0.7], [0.1, 0.2, 0.75])
    assert t == pytest.approx(0.7) and acc == pytest.approx((1 + 2 / 3) / 2)
    t, acc = best_threshold([0.9, 0.8], [0.1, 0.2])
    assert 0.2 < t <= 0.8 and acc == 1.0
    assert best_threshold([], [0.2]) == (None, 0.0)


@pytest.mark.parametrize("clusters,labels,expected", [
    ([0, 0, 1, 1], ["a", "a", "b", "b"], 1.0),
    ([0, 0, 0, 0], ["a", "a", "b", "b"], 0.5),
    ([0, 1, 0, 1], ["a", "a", "b", "b"], 0.5),
    ([0, 0, 1, 1, 1], ["a", "b", "b", "b", "c"], 0.6),
    ([5, 5, 7], ["x", "x", "x"], 1.0),
    ([], [], None),
    ([0, 1], ["a"], None),
])
def test_purity(clusters, labels, expected):
    from inference_app.engine.metrics import purity

    got = purity(clusters, labels)
    assert got == (None if expected is None else pytest.approx(expected))


def test_cluster_report_finds_separated_groups_and_not_random_labels():
    import numpy as np

    from inference_app.engine.metrics import cluster_report

    rng = np.random.default_rng(0)
    centers = np.eye(3) * 10
    vectors = np.concatenate([c + rng.normal(0, 0.1, (20, 3)) for c in centers])
    labels = [d for d in ("doc-a", "doc-b", "doc-c") for _ in range(20)]
    good = cluster_report(vectors, labels)
    assert good == {"purity": 1.0, "nmi": 1.0, "labels": 3, "items": 60}
    shuffled = list(rng.permutation(labels))
    bad = cluster_report(vectors, shuffled)
    assert bad["purity"] < 0.6 and bad["nmi"] < 0.2
    assert cluster_report(vectors[:3], ["a", "b", "c"]) is None  # no more items than labels
    assert cluster_report(vectors, ["same"] * 60) is None         # one label: nothing to measure
