"""Freezing: order-independent hash, deterministic seeded split, held-out and group rules, stats."""
from __future__ import annotations

import random

import pytest

from datasets_app.engine.formats import QARecord
from datasets_app.engine.versioning import (
    SplitConfig,
    assign_splits,
    canonical_json,
    content_hash,
    freeze,
    group_key,
    length_stats,
    percentile,
    records_to_jsonl,
)


def _records(n: int = 200) -> list[QARecord]:
    recs = []
    for i in range(n):
        recs.append(
            QARecord(
                question=f"问题 {i}?",
                answer=f"答案 {i}",
                source_chunk_id=f"c{i % 40}",
                document=f"doc{i % 3}",
                heading_path=("章", str(i % 5)),
                held_out=(i % 25 == 0),
                group=f"grp{i // 4}" if i % 2 == 0 else None,
            )
        )
    return recs


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": [1, (2, 3)]}) == canonical_json({"a": [1, [2, 3]], "b": 1})
    assert canonical_json({"x": "中文"}) == '{"x":"中文"}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_hash_independent_of_order_and_sensitive_to_content():
    recs = _records()
    shuffled = recs[:]
    random.Random(7).shuffle(shuffled)
    assert content_hash(recs) == content_hash(shuffled)
    assert records_to_jsonl(recs) == records_to_jsonl(shuffled)
    changed = recs[:-1] + [QARecord(**{**recs[-1].__dict__, "answer": "答案 199!"})]
    assert content_hash(changed) != content_hash(recs)
    assert content_hash(recs + recs[:1]) != content_hash(recs)  # a duplicate row is content too


def test_freeze_deterministic_across_order_and_runs():
    recs = _records()
    shuffled = recs[::-1]
    a, b = freeze(recs, SplitConfig(seed=3)), freeze(shuffled, SplitConfig(seed=3))
    assert a.splits == b.splits
    assert a.content_hash == b.content_hash and a.version_hash == b.version_hash
    c = freeze(recs, SplitConfig(seed=4))
    assert c.content_hash == a.content_hash
    assert c.splits["validation"] != a.splits["validation"] and c.version_hash != a.version_hash


def test_held_out_only_in_test_and_default_95_5():
    recs = _records()
    fz = freeze(recs)
    train, val, test = fz.splits["train"], fz.splits["validation"], fz.splits["test"]
    assert len(train) + len(val) + len(test) == len(recs)
    assert not any(r.held_out for r in train + val)
    assert {r for r in recs if r.held_out} <= set(test)
    # Ordinary pairs: 95/5 by count (groups of up to 2 make it approximate).
    ordinary = len(train) + len(val)
    assert abs(len(val) - 0.05 * ordinary) <= 2


def test_groups_never_straddle_splits():
    recs = _records(400)
    fz = freeze(recs, SplitConfig(seed=1, validation_fraction=0.2, test_fraction=0.1))
    where: dict[str, set[str]] = {}
    for name, rs in fz.splits.items():
        for r in rs:
            where.setdefault(group_key(r), set()).add(name)
    assert all(len(s) == 1 for s in where.values())
    # A group with one held-out member takes its paraphrases to test with it.
    held_groups = {group_key(r) for r in recs if r.held_out}
    assert all(where[g] == {"test"} for g in held_groups)
    assert fz.stats.split_counts["test"] > sum(r.held_out for r in recs)


def test_small_dataset_gets_one_validation_group_and_keeps_training():
    recs = [QARecord(f"q{i}", f"a{i}") for i in range(3)]
    assign = assign_splits(recs)
    assert sorted(assign.values()) == ["train", "train", "validation"]
    assert list(assign_splits(recs[:1]).values()) == ["train"]
    with pytest.raises(ValueError):
        assign_splits(recs, SplitConfig(validation_fraction=0.6, test_fraction=0.5))


def test_percentile_matches_numpy_linear():
    import numpy as np

    vals = [3, 1, 4, 1, 5, 9, 2, 6]
    for q in (0, 25, 50, 90, 99, 100):
        assert percentile(vals, q) == pytest.approx(float(np.percentile(vals, q)))


def test_stats_on_small_table():
    recs = [
        QARecord("ab", "xxxx", "c1", document="d1"),
        QARecord("abcd", "x", "c1", document="d1"),
        QARecord("abcdef", "xx", "c2", document="d2", held_out=True),
        QARecord("abcdefgh", "xxx", None, document=""),
    ]
    st = freeze(recs, SplitConfig(validation_fraction=0.25), chunks_total=4).stats
    assert st.split_counts == {"train": 2, "validation": 1, "test": 1}
    assert st.held_out == 1 and st.groups == 4
    assert st.question_length == length_stats(["ab", "abcd", "abcdef", "abcdefgh"])
    q = st.question_length
    assert (q.count, q.min, q.max, q.mean, q.p50) == (4, 2, 8, 5.0, 5.0)
    assert q.p90 == pytest.approx(7.4)
    assert (st.answer_length.min, st.answer_length.max, st.answer_length.p50) == (1, 4, 2.5)
    assert st.chunks_covered == 2 and st.chunks_total == 4 and st.chunk_coverage == 0.5
    assert st.per_document == {"": 1, "d1": 2, "d2": 1}
    manifest = freeze(recs, chunks_total=4).manifest()
    assert manifest["stats"]["split_counts"]["test"] == 1 and len(manifest["content_hash"]) == 64
