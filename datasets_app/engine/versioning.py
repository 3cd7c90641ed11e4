"""Freezing a QA dataset: canonical serialisation, content hash, seeded split, stats.

A training run points at a frozen snapshot by hash, so the hash must depend only on the
content (not on row order or dict key order), and the split must be reproducible from the
content and the seed alone. Held-out pairs are the evaluation set: they go to ``test`` and
never to train/validation, and paraphrases of one source question (same ``group``) never
straddle splits, so the model is never tested on a rewording of what it trained on.
No Django.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets_app.engine.formats import QARecord

SPLITS = ("train", "validation", "test")
HASH_SCHEME = "vsm-dataset-v1"  # bump if canonical_json or the hashed layout changes


@dataclass(frozen=True)
class SplitConfig:
    """How ordinary (not held-out) pairs are divided; stored beside the frozen version."""

    seed: int = 0  # same content + same seed → same split
    validation_fraction: float = 0.05  # 95/5 train/validation by default
    test_fraction: float = 0.0  # ordinary pairs sent to test too (held-out pairs always are)
    min_validation: int = 1  # at least this many validation groups when there are ≥2 groups


@dataclass(frozen=True)
class LengthStats:
    """Character-length summary; percentiles by linear interpolation (numpy's default)."""

    count: int
    min: int
    p50: float
    p90: float
    p99: float
    max: int
    mean: float


@dataclass(frozen=True)
class DatasetStats:
    """What a reviewer looks at before training on a version."""

    split_counts: dict[str, int]  # pairs per split
    held_out: int  # pairs flagged held_out (all in test)
    groups: int  # distinct question groups
    question_length: LengthStats
    answer_length: LengthStats
    chunks_covered: int  # distinct source chunks with at least one pair
    chunks_total: int | None  # chunks in the domain, when the caller knows
    chunk_coverage: float | None  # chunks_covered / chunks_total
    per_document: dict[str, int]  # pairs per document ("" = unknown)


@dataclass(frozen=True)
class FrozenDataset:
    """An immutable dataset version: records per split, its hash, and its stats."""

    content_hash: str  # sha256 of the canonical records, order-independent
    version_hash: str  # sha256 of content_hash + split config + split assignment
    config: SplitConfig
    splits: dict[str, tuple[QARecord, ...]]  # train / validation / test, canonically sorted
    stats: DatasetStats

    def manifest(self) -> dict[str, Any]:
        """JSON-ready summary stored on the DatasetVersion row and beside the artifacts."""
        return {
            "scheme": HASH_SCHEME,
            "content_hash": self.content_hash,
            "version_hash": self.version_hash,
            "config": dataclasses.asdict(self.config),
            "stats": dataclasses.asdict(self.stats),
        }


# --------------------------------------------------------------------------------------
# Canonical JSON and hashes
# --------------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Dataclasses → dicts, tuples → lists, so equal content serialises identically."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text kept as is; NaN/Infinity refused (not JSON)."""
    return json.dumps(_plain(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def record_hash(record: Any) -> str:
    """sha256 of one record's canonical JSON."""
    return hashlib.sha256(canonical_json(record).encode("utf-8")).hexdigest()


def content_hash(records: Iterable[Any]) -> str:
    """sha256 over the sorted per-record hashes: a multiset hash, blind to input order."""
    h = hashlib.sha256(HASH_SCHEME.encode())
    for rh in sorted(record_hash(r) for r in records):
        h.update(rh.encode())
        h.update(b"\n")
    return h.hexdigest()


def records_to_jsonl(records: Iterable[Any]) -> str:
    """Canonical JSONL of records in canonical order: the bytes a version file holds."""
    lines = sorted(canonical_json(r) for r in records)
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------


def group_key(record: QARecord) -> str:
    """Paraphrases share ``group``; an ungrouped pair is its own group (keyed by content)."""
    if record.group:
        return "g:" + record.group
    return "r:" + record_hash(record)


def _rank(seed: int, key: str) -> str:
    # Ranking groups by a seeded hash of their key (instead of shuffling a list) makes the
    # split independent of input order as well as reproducible.
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def assign_splits(records: Sequence[QARecord], config: SplitConfig = SplitConfig()) -> dict[str, str]:
    """group key → split name.

    A group with any held-out member goes wholly to test (held-out pairs must be in test and
    groups must not straddle). Other groups, in seeded-hash order, fill test then validation
    up to their fractions of the ordinary pairs; the rest is train.
    """
    if not 0 <= config.validation_fraction < 1 or not 0 <= config.test_fraction < 1:
        raise ValueError("split fractions must be in [0, 1)")
    if config.validation_fraction + config.test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave some training data")
    sizes: Counter[str] = Counter()
    held: set[str] = set()
    for r in records:
        k = group_key(r)
        sizes[k] += 1
        if r.held_out:
            held.add(k)
    out = {k: "test" for k in held}
    ordinary = sorted((k for k in sizes if k not in held), key=lambda k: _rank(config.seed, k))
    n = sum(sizes[k] for k in ordinary)
    targets = [("test", round(n * config.test_fraction)), ("validation", round(n * config.validation_fraction))]
    if config.validation_fraction > 0 and len(ordinary) >= 2:
        targets[1] = ("validation", max(targets[1][1], config.min_validation))
    i = 0
    for name, target in targets:
        got = 0
        while i < len(ordinary) - 1 and got < target:  # always leave ≥1 group for train
            out[ordinary[i]] = name
            got += sizes[ordinary[i]]
            i += 1
    for k in ordinary[i:]:
        out[k] = "train"
    return out


# --------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]; 0.0 when empty."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def length_stats(texts: Iterable[str]) -> LengthStats:
    """Length summary in characters (Chinese has no word boundaries to count)."""
    lens = [len(t) for t in texts]
    if not lens:
        return LengthStats(0, 0, 0.0, 0.0, 0.0, 0, 0.0)
    return LengthStats(
        count=len(lens),
        min=min(lens),
        p50=percentile(lens, 50),
        p90=percentile(lens, 90),
        p99=percentile(lens, 99),
        max=max(lens),
        mean=sum(lens) / len(lens),
    )


def dataset_stats(
    splits: dict[str, Sequence[QARecord]], *, chunks_total: int | None = None
) -> DatasetStats:
    """Counts, lengths, chunk coverage and per-document counts over all splits."""
    allr = [r for name in SPLITS for r in splits.get(name, ())]
    covered = len({r.source_chunk_id for r in allr if r.source_chunk_id})
    return DatasetStats(
        split_counts={name: len(splits.get(name, ())) for name in SPLITS},
        held_out=sum(1 for r in allr if r.held_out),
        groups=len({group_key(r) for r in allr}),
        question_length=length_stats(r.question for r in allr),
        answer_length=length_stats(r.answer for r in allr),
        chunks_covered=covered,
        chunks_total=chunks_total,
        chunk_coverage=(covered / chunks_total) if chunks_total else None,
        per_document=dict(sorted(Counter(r.document for r in allr).items())),
    )


# --------------------------------------------------------------------------------------
# Freeze
# --------------------------------------------------------------------------------------


def freeze(
    records: Iterable[QARecord], config: SplitConfig = SplitConfig(), *, chunks_total: int | None = None
) -> FrozenDataset:
    """Split, sort and hash a dataset; same records (any order) + same config → same result."""
    recs = list(records)
    assignment = assign_splits(recs, config)
    buckets: dict[str, list[tuple[str, QARecord]]] = {name: [] for name in SPLITS}
    for r in recs:
        buckets[assignment[group_key(r)]].append((canonical_json(r), r))
    splits = {name: tuple(r for _, r in sorted(b, key=lambda x: x[0])) for name, b in buckets.items()}
    chash = content_hash(recs)
    vh = hashlib.sha256()
    vh.update(f"{HASH_SCHEME}\n{chash}\n{canonical_json(config)}\n".encode())
    for name in SPLITS:
        vh.update(f"{name}:{content_hash(splits[name])}\n".encode())
    return FrozenDataset(
        content_hash=chash,
        version_hash=vh.hexdigest(),
        config=config,
        splits=splits,
        stats=dataset_stats(splits, chunks_total=chunks_total),
    )


__all__ = [
    "SPLITS",
    "DatasetStats",
    "FrozenDataset",
    "LengthStats",
    "SplitConfig",
    "assign_splits",
    "canonical_json",
    "content_hash",
    "dataset_stats",
    "freeze",
    "group_key",
    "length_stats",
    "percentile",
    "record_hash",
    "records_to_jsonl",
]
