"""Choosing fusion weights on a domain's own questions, and evaluating retrievers."""
from __future__ import annotations

import pytest

from inference_app.engine.fusion import FusionChoice, FusionWeights, choose_fusion
from inference_app.engine.index import RetrievalIndex, RetrievalIndexError, build_index
from inference_app.engine.metrics import compare_encoders, evaluate_retriever, score_distributions

from .conftest import HashingEncoder, RandomEncoder, synthetic_topics


def _index(tmp_path, passages, encoder):
    build_index(passages, tmp_path / "idx", encoder=encoder)
    return RetrievalIndex.load(tmp_path / "idx")


def _row(choice, name):
    return next(r for r in choice.table if r["name"] == name)


def _never_below_bm25(choice, metric="mrr@10"):
    chosen = next(r for r in choice.table if r["chosen"])
    assert chosen["name"] == choice.chosen
    assert chosen[metric] >= _row(choice, "bm25")[metric]


def test_useless_dense_keeps_bm25_only(tmp_path):
    passages, lexical, _, _ = synthetic_topics()
    enc = RandomEncoder()
    ix = _index(tmp_path, passages, enc)
    choice = choose_fusion(ix, lexical, encoder=enc)
    assert choice.weights.dense == 0 and choice.chosen == "bm25" and choice.queries == len(lexical)
    assert _row(choice, "bm25")["mrr@10"] == 1.0
    assert _row(choice, "dense")["mrr@10"] < 0.5  # random vectors
    assert len(choice.table) == 2 + 10  # bm25, dense, the default 5 × 2 grid
    _never_below_bm25(choice)


def test_dense_as_the_only_signal_gets_weight(tmp_path):
    passages, _, synonym, synonyms = synthetic_topics()
    enc = HashingEncoder(synonyms)
    ix = _index(tmp_path, passages, enc)
    choice = choose_fusion(ix, synonym, encoder=enc)
    assert _row(choice, "bm25")["mrr@10"] == 0.0  # the queries share no token with the passages
    assert choice.weights.dense > 0 and choice.chosen != "bm25"
    assert next(r for r in choice.table if r["chosen"])["mrr@10"] == 1.0
    _never_below_bm25(choice)


def test_mixed_questions_move_off_bm25(tmp_path):
    passages, lexical, synonym, synonyms = synthetic_topics()
    # half the questions are lexical, half need the synonyms
    enc = HashingEncoder(synonyms)
    queries = lexical[::2] + synonym[1::2]
    ix = _index(tmp_path, passages, enc)
    choice = choose_fusion(ix, queries, encoder=enc, metric="hit@1")
    best = next(r for r in choice.table if r["chosen"])
    assert best["hit@1"] >= max(_row(choice, "bm25")["hit@1"], _row(choice, "dense")["hit@1"])
    assert best["hit@1"] > _row(choice, "bm25")["hit@1"]
    _never_below_bm25(choice, "hit@1")


@pytest.mark.parametrize("metric", ["mrr@10", "hit@1", "ndcg@10"])
def test_never_below_bm25_on_any_metric(tmp_path, metric):
    passages, lexical, synonym, synonyms = synthetic_topics(12)
    enc = HashingEncoder({k: v for i, (k, v) in enumerate(synonyms.items()) if i % 3})  # partly useful
    ix = _index(tmp_path, passages, enc)
    choice = choose_fusion(ix, lexical + synonym, encoder=enc, metric=metric)
    _never_below_bm25(choice, metric)


def test_without_encoder_or_queries_it_is_bm25(tmp_path):
    passages, lexical, _, _ = synthetic_topics(6)
    ix = _index(tmp_path, passages, None)
    choice = choose_fusion(ix, lexical, encoder=HashingEncoder())
    assert choice.weights == FusionWeights(1.0, 0.0) and [r["name"] for r in choice.table] == ["bm25"]
    ix2 = _index(tmp_path / "b", passages, HashingEncoder())
    empty = choose_fusion(ix2, [], encoder=HashingEncoder())
    assert empty.chosen == "bm25" and empty.queries == 0
    with pytest.raises(ValueError, match="metric"):
        choose_fusion(ix2, lexical, encoder=HashingEncoder(), metric="accuracy")


def test_custom_grid_and_serialisation(tmp_path):
    passages, _, synonym, synonyms = synthetic_topics(8)
    enc = HashingEncoder(synonyms)
    ix = _index(tmp_path, passages, enc)
    grid = [FusionWeights(1, 0.5, 60), FusionWeights(1, 2, 10)]
    choice = choose_fusion(ix, synonym, encoder=enc, grid=grid)
    assert [r["name"] for r in choice.table] == ["bm25", "dense", grid[0].name, grid[1].name]
    assert FusionChoice.from_dict(choice.to_dict()) == choice
    # the table's hybrid rows are what RetrievalIndex.hybrid returns
    q_rows = evaluate_retriever(ix, synonym, method="hybrid", encoder=enc, weights=grid[1])
    assert q_rows["mrr@10"] == pytest.approx(choice.table[3]["mrr@10"])


def test_evaluate_retriever(tmp_path):
    passages, lexical, synonym, synonyms = synthetic_topics(10)
    enc = HashingEncoder(synonyms)
    ix = _index(tmp_path, passages, enc)
    assert evaluate_retriever(ix, lexical, method="bm25")["hit@1"] == 1.0
    assert evaluate_retriever(ix, synonym, method="bm25")["hit@10"] == 0.0
    dense = evaluate_retriever(ix, synonym, method="dense", encoder=enc)
    assert dense["queries"] == 10 and dense["mrr@10"] == 1.0
    with pytest.raises(ValueError):
        evaluate_retriever(ix, lexical, method="nope")
    with pytest.raises(RetrievalIndexError, match="needs the embedding model"):
        evaluate_retriever(ix, synonym, method="dense")
    # hybrid without an encoder is BM25
    assert evaluate_retriever(ix, lexical, method="hybrid") == evaluate_retriever(ix, lexical, method="bm25")


def test_score_distributions(tmp_path):
    passages, _, synonym, synonyms = synthetic_topics(10)
    good = HashingEncoder(synonyms)
    dist = score_distributions(_index(tmp_path, passages, good), synonym, encoder=good, negatives_per_query=3)
    assert len(dist["positive"]) == 10 and len(dist["negative"]) == 30
    assert dist["separation"] == 1.0 and dist["balanced_accuracy"] == 1.0
    assert min(dist["positive"]) >= dist["threshold"] > max(dist["negative"])
    bad = RandomEncoder()
    rnd = score_distributions(_index(tmp_path / "r", passages, bad), synonym, encoder=bad)
    assert rnd["separation"] < 0.9


def test_compare_encoders(tmp_path):
    passages, _, synonym, synonyms = synthetic_topics(10)
    rows = compare_encoders(passages, synonym, {"hashing": HashingEncoder(synonyms), "random": RandomEncoder()})
    assert [r["name"] for r in rows][0] == "hashing"
    assert {r["name"] for r in rows} == {"hashing", "random", "bm25"}
    by = {r["name"]: r for r in rows}
    assert by["hashing"]["mrr@10"] == 1.0 and by["bm25"]["mrr@10"] == 0.0 and by["hashing"]["dim"] == 256
    assert [r["mrr@10"] for r in rows] == sorted((r["mrr@10"] for r in rows), reverse=True)
    assert all(r["seconds"] >= 0 for r in rows)
