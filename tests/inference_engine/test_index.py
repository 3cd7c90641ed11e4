"""The retrieval index: build → load round trip, BM25 / dense / hybrid, the embedding cache,
cancellation and damaged folders. A fake encoder stands in for the embedding model."""
from __future__ import annotations

import json
import threading
from dataclasses import replace

import numpy as np
import pytest

from inference_app.engine.fusion import BM25_ONLY, FusionWeights, rrf_fuse
from inference_app.engine.index import (
    Hit,
    IndexCancelled,
    Passage,
    RetrievalIndex,
    RetrievalIndexError,
    build_index,
    passages_hash,
    rerank,
)

from .conftest import HashingEncoder

SYNONYMS = {"refund": "报销", "trip": "差旅费", "cooler": "fan", "swap": "replace"}


@pytest.fixture
def encoder():
    return HashingEncoder(SYNONYMS)


@pytest.fixture
def index(tmp_path, corpus, encoder):
    build_index(corpus, tmp_path / "idx", encoder=encoder)
    return RetrievalIndex.load(tmp_path / "idx")


def test_round_trip(tmp_path, corpus, encoder):
    info = build_index(corpus, tmp_path / "idx", encoder=encoder, batch_size=3)
    assert (info.passages, info.dim, info.encoder_id, info.embedded, info.reused) == (7, 256, "fake:hashing", 7, 0)
    ix = RetrievalIndex.load(tmp_path / "idx")
    assert ix.passages == corpus
    assert ix.passage("e100.1") == corpus[4] and ix.passage("e100.1").heading_path == ("故障代码",)
    m = ix.manifest
    assert (m["passages"], m["dim"], m["encoder_id"], m["language"]) == (7, 256, "fake:hashing", "auto")
    assert m["passages_hash"] == passages_hash(corpus) and m["created"] and m["build_id"]
    assert ix.embeddings.shape == (7, 256) and isinstance(ix.embeddings, np.memmap)
    assert np.allclose(np.linalg.norm(ix.embeddings, axis=1), 1.0, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp folder left behind
    with pytest.raises(KeyError, match="nope"):
        ix.passage("nope")


@pytest.mark.parametrize(
    "query, expected",
    [
        ("差旅费报销要提供什么", "zh-travel"),
        ("会议费 签到表", "zh-meeting"),
        ("劳务费需要身份证吗", "zh-labour"),
        ("E100.1", "e100.1"),
        ("E100", "e100"),
        ("grid over-voltage fault", "en-grid"),
        ("how to replace the cooling fan", "en-fan"),
    ],
)
def test_bm25_finds_the_passage(index, query, expected):
    hits = index.bm25(query, k=3)
    assert hits[0].id == expected, hits
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_bm25_returns_only_matching_passages(index):
    assert index.bm25("completely unrelated words", k=5) == []
    assert index.bm25("", k=5) == []


@pytest.mark.parametrize("query, expected", [("refund trip", "zh-travel"), ("swap cooler", "en-fan")])
def test_dense_finds_what_bm25_cannot(index, encoder, query, expected):
    assert index.bm25(query) == []  # no shared token
    hits = index.dense(query, k=3, encoder=encoder)
    assert hits[0].id == expected and hits[0].score > 0.3
    assert len(index.dense(query, k=100, encoder=encoder)) == len(index)
    by_vec = index.dense_vec(encoder.encode([query])[0], k=3)
    assert [h.id for h in by_vec] == [h.id for h in hits]
    assert [h.score for h in by_vec] == pytest.approx([h.score for h in hits])


def test_dense_with_another_model_is_refused(index):
    with pytest.raises(RetrievalIndexError, match="fake:hashing.*other:model|other:model.*fake:hashing"):
        index.dense("refund", encoder=HashingEncoder(model_id="other:model"))
    with pytest.raises(RetrievalIndexError, match="dimensions"):
        index.dense_vec(np.ones(3, np.float32))


@pytest.mark.parametrize("query", ["差旅费报销", "E100.1 过流", "grid voltage", "refund trip", "fan"])
def test_hybrid_without_dense_is_exactly_bm25(index, encoder, query):
    assert index.hybrid(query, k=5, encoder=encoder, weights=BM25_ONLY) == index.bm25(query, k=5)
    assert index.hybrid(query, k=5, encoder=None) == index.bm25(query, k=5)
    assert index.search(query, 5, method="hybrid", encoder=encoder, weights=FusionWeights(2.0, 0.0)) == \
        index.bm25(query, k=5)


def test_hybrid_is_rrf_of_both_lists(index, encoder):
    w = FusionWeights(bm25=1.0, dense=0.5, rrf_k=10)
    q = "refund 差旅费 E100"
    bm = [h.id for h in index.bm25(q, 100)]
    dn = [h.id for h in index.dense(q, 100, encoder=encoder)]
    expected = rrf_fuse({"bm25": bm, "dense": dn}, {"bm25": 1.0, "dense": 0.5}, 10)[:4]
    got = index.hybrid(q, k=4, encoder=encoder, weights=w)
    assert [(h.id, h.score) for h in got] == [(d, pytest.approx(s)) for d, s in expected]
    assert index.hybrid("refund trip", k=1, encoder=encoder)[0].id == "zh-travel"  # dense rescues it


def test_search_dispatch(index, encoder):
    assert index.search("fan", 2, method="bm25") == index.bm25("fan", 2)
    assert index.search("fan", 2, method="dense", encoder=encoder) == index.dense("fan", 2, encoder=encoder)
    with pytest.raises(ValueError, match="method"):
        index.search("fan", 2, method="magic")


def test_bm25_only_index(tmp_path, corpus):
    info = build_index(corpus, tmp_path / "idx", encoder=None)
    assert (info.dim, info.encoder_id, info.embedded) == (None, "", 0)
    ix = RetrievalIndex.load(tmp_path / "idx")
    assert not ix.has_embeddings and not (tmp_path / "idx" / "embeddings.npy").exists()
    assert ix.bm25("劳务费")[0].id == "zh-labour"
    assert ix.hybrid("劳务费", encoder=HashingEncoder()) == ix.bm25("劳务费")  # falls back to BM25
    with pytest.raises(RetrievalIndexError, match="without an embedding model"):
        ix.dense("劳务费", encoder=HashingEncoder())


def test_empty_corpus(tmp_path, encoder):
    build_index([], tmp_path / "idx", encoder=encoder)
    ix = RetrievalIndex.load(tmp_path / "idx")
    assert len(ix) == 0
    assert ix.bm25("x") == [] and ix.dense("x", encoder=encoder) == [] and ix.hybrid("x", encoder=encoder) == []


def test_duplicate_ids_are_refused(tmp_path, corpus):
    with pytest.raises(ValueError, match="unique"):
        build_index(corpus + [corpus[0]], tmp_path / "idx", encoder=None)
    assert not (tmp_path / "idx").exists()


def test_embedding_cache_reuses_unchanged_passages(tmp_path, corpus):
    cache = tmp_path / "cache"
    enc = HashingEncoder(SYNONYMS)
    first = build_index(corpus, tmp_path / "idx", encoder=enc, embedding_cache=cache, batch_size=2)
    assert (first.embedded, first.reused, enc.texts) == (7, 0, 7)
    before = np.array(RetrievalIndex.load(tmp_path / "idx").embeddings)

    changed = list(corpus)
    changed[2] = replace(changed[2], text=changed[2].text + "另需提供劳务合同。")
    changed.append(Passage("new", "新增条款：报销单据需在每月二十五日前提交。"))
    enc.texts = 0
    second = build_index(changed, tmp_path / "idx", encoder=enc, embedding_cache=cache, batch_size=2)
    assert (second.embedded, second.reused, enc.texts) == (2, 6, 2)  # only the changed and the new text
    after = RetrievalIndex.load(tmp_path / "idx")
    unchanged = [i for i in range(7) if i != 2]
    assert np.array_equal(np.asarray(after.embeddings)[unchanged], before[unchanged])
    assert np.allclose(after.embeddings[7], enc.encode([changed[7].text])[0])

    other = HashingEncoder(model_id="fake:other")  # another model never reuses these vectors
    assert build_index(corpus, tmp_path / "idx2", encoder=other, embedding_cache=cache).reused == 0


def test_identical_texts_are_embedded_once(tmp_path):
    enc = HashingEncoder()
    same = [Passage("a", "same text"), Passage("b", "same text"), Passage("c", "other text")]
    info = build_index(same, tmp_path / "idx", encoder=enc)
    assert enc.texts == 2 and info.embedded == 2
    ix = RetrievalIndex.load(tmp_path / "idx")
    assert np.array_equal(ix.embeddings[0], ix.embeddings[1])


def test_progress(tmp_path, corpus, encoder):
    seen = []
    build_index(corpus, tmp_path / "idx", encoder=encoder, batch_size=3, on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 7), (3, 7), (6, 7), (7, 7)]


class StopAfter:
    """should_stop(): true from the n-th call on."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self):
        self.calls += 1
        return self.calls >= self.n


@pytest.mark.parametrize("stop_at", [1, 2, 3, 100])
def test_cancel_leaves_nothing_at_out_dir(tmp_path, corpus, encoder, stop_at):
    stop = StopAfter(stop_at)
    if stop_at == 100:  # never stops: the build completes
        build_index(corpus, tmp_path / "idx", encoder=encoder, batch_size=2, should_stop=stop)
        assert (tmp_path / "idx").is_dir()
        return
    with pytest.raises(IndexCancelled):
        build_index(corpus, tmp_path / "idx", encoder=encoder, batch_size=2, should_stop=stop)
    assert list(tmp_path.iterdir()) == []  # neither the index nor a temp folder


def test_cancel_keeps_the_existing_index_and_the_finished_embeddings(tmp_path, corpus, encoder):
    build_index(corpus[:3], tmp_path / "idx", encoder=encoder)
    old = RetrievalIndex.load(tmp_path / "idx").manifest["build_id"]
    cache = tmp_path / "cache"
    with pytest.raises(IndexCancelled):
        build_index(corpus, tmp_path / "idx", encoder=encoder, batch_size=2, embedding_cache=cache,
                    should_stop=StopAfter(4))  # checks: start, batch 1, batch 2, stop
    ix = RetrievalIndex.load(tmp_path / "idx")
    assert ix.manifest["build_id"] == old and len(ix) == 3 and ix.bm25("差旅费")[0].id == "zh-travel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "idx"]
    # the two finished batches were kept: resuming embeds only the rest
    encoder.texts = 0
    info = build_index(corpus, tmp_path / "idx", encoder=encoder, batch_size=2, embedding_cache=cache)
    assert (info.reused, info.embedded, encoder.texts) == (4, 3, 3)


def test_rebuild_replaces_the_index(tmp_path, corpus, encoder):
    build_index(corpus[:2], tmp_path / "idx", encoder=None)
    first = RetrievalIndex.load(tmp_path / "idx")
    build_index(corpus, tmp_path / "idx", encoder=encoder)
    second = RetrievalIndex.load(tmp_path / "idx")
    assert len(second) == 7 and second.has_embeddings and second.manifest["build_id"] != first.manifest["build_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    assert first.bm25("差旅费")[0].id == "zh-travel"  # an index loaded before the rebuild keeps working


def _damage(path, how):
    if how == "no manifest":
        (path / "manifest.json").unlink()
    elif how == "bad manifest":
        (path / "manifest.json").write_text("{not json", encoding="utf-8")
    elif how == "foreign manifest":
        (path / "manifest.json").write_text('{"hello": 1}', encoding="utf-8")
    elif how == "passages missing":
        (path / "passages.jsonl").unlink()
    elif how == "passages truncated":
        lines = (path / "passages.jsonl").read_text(encoding="utf-8").splitlines()
        (path / "passages.jsonl").write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")
    elif how == "passages garbage":
        (path / "passages.jsonl").write_text("\x00garbage\n" * 7, encoding="utf-8")
    elif how == "embeddings missing":
        (path / "embeddings.npy").unlink()
    elif how == "embeddings truncated":
        data = (path / "embeddings.npy").read_bytes()
        (path / "embeddings.npy").write_bytes(data[: len(data) // 2])
    elif how == "bm25 missing":
        import shutil

        shutil.rmtree(path / "bm25")
    elif how == "newer format":
        m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        m["format_version"] = 99
        (path / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


@pytest.mark.parametrize(
    "how, message",
    [
        ("no manifest", "manifest.json is missing"),
        ("bad manifest", "manifest.json is unreadable"),
        ("foreign manifest", "not a VSM retrieval index"),
        ("passages missing", "passages.jsonl is missing"),
        ("passages truncated", "counts 7 passages but passages.jsonl holds 5"),
        ("passages garbage", "passages.jsonl is corrupt"),
        ("embeddings missing", "embeddings.npy is missing"),
        ("embeddings truncated", "embeddings.npy is corrupt"),
        ("bm25 missing", "bm25 is missing or corrupt"),
        ("newer format", "newer VSM"),
    ],
)
def test_damaged_index_raises_a_clear_error(tmp_path, corpus, encoder, how, message):
    build_index(corpus, tmp_path / "idx", encoder=encoder)
    _damage(tmp_path / "idx", how)
    with pytest.raises(RetrievalIndexError, match=message) as err:
        RetrievalIndex.load(tmp_path / "idx")
    assert str(tmp_path / "idx") in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(RetrievalIndexError, match="does not exist.*[Bb]uild"):
        RetrievalIndex.load(tmp_path / "nowhere")


def test_concurrent_searches_agree(index, encoder):
    queries = ["差旅费报销", "E100.1", "grid voltage", "refund trip"] * 5
    expected = [index.hybrid(q, 5, encoder=encoder) for q in queries]
    results: dict[int, list] = {}

    def work(t):
        results[t] = [index.hybrid(q, 5, encoder=encoder) for q in queries]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


class LengthReranker:
    """Scores a pair by the passage's length: a stand-in whose order is easy to predict."""

    def predict(self, pairs, batch_size=32):
        return [float(len(p)) for _, p in pairs]


def test_rerank_reorders_the_top_hits(index):
    hits = index.bm25("报销 发票 故障", k=5)
    out = rerank("报销", hits, index, LengthReranker(), top_n=3)
    assert len(out) == 3 and {h.id for h in out} == {h.id for h in hits[:3]}
    lengths = [len(index.passage(h.id).text) for h in out]
    assert lengths == sorted(lengths, reverse=True) and [h.score for h in out] == [float(x) for x in lengths]
    assert [h.rank for h in out] == [1, 2, 3]
    assert rerank("x", [], index, LengthReranker()) == []
    tie = [Hit("en-fan", 1.0, 1), Hit("en-fan", 1.0, 2)]
    assert [h.rank for h in rerank("x", tie, index, LengthReranker())] == [1, 2]


@pytest.mark.parametrize(
    "scores, k, expected",
    [
        ([1, 3, 3, 2, 3], 2, [1, 2]),  # ties in row order, whatever argpartition did
        ([1, 3, 3, 2, 3], 4, [1, 2, 4, 3]),
        ([1, 3, 3, 2, 3], 10, [1, 2, 4, 3, 0]),
        ([0, 0, 0], 2, [0, 1]),
        ([], 3, []),
        ([5.0], 0, []),
    ],
)
def test_topk_indices_is_deterministic(scores, k, expected):
    from inference_app.engine.index import topk_indices

    assert topk_indices(np.asarray(scores, dtype=np.float32), k) == expected
