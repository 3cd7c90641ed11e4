"""Hard-negative mining for retrieval examples from a BM25 rank window.

Users of embedding fine-tuning tools complain that mined "hard negatives" are often really
positives, and training on them makes retrieval worse. So negatives are taken from a rank
window (not the very top), never from the positive's own section (same document + heading
path), never identical to the positive, and never scoring close to the positive (relative
margin, as in sentence-transformers' ``mine_hard_negatives``). BM25 over jieba tokens is
what works offline on Chinese (measured in FACTS.md). Deterministic: ties break on chunk id.
No Django.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from datasets_app.engine.formats import QARecord, RetrievalRecord
# One tokenizer for mining and for the served retrieval index (jieba for Chinese, \w+ runs
# otherwise, whole fault/clause codes such as "E100.1" kept as extra tokens): it lives with
# the index and is re-exported here.
from inference_app.engine.textproc import tokenize


@dataclass(frozen=True)
class CorpusChunk:
    """A candidate passage: the chunk id, its text, and where it sits in its document."""

    id: str
    text: str
    document: str = ""  # document id/name; with heading_path, defines the section
    heading_path: tuple[str, ...] = ()  # section path inside the document


@dataclass(frozen=True)
class MiningConfig:
    """Where in the BM25 ranking negatives come from, and what counts as too close."""

    rank_start: int = 30  # 1-based first rank of the window (top ranks are likely positives)
    rank_end: int = 100  # last rank of the window, inclusive
    num_negatives: int = 7  # negatives kept per example, hardest first
    relative_margin: float = 0.95  # drop candidates scoring > margin × the positive's score
    min_score: float = 0.0  # drop candidates scoring ≤ this (no shared term: not "hard")
    exclude_same_section: bool = True  # never take a chunk from the positive's own section
    language: str = "auto"  # "auto" (jieba when the text has CJK), "zh" or "en"


@dataclass(frozen=True)
class MiningResult:
    """Examples with negatives filled, and examples that could not be mined (with why)."""

    records: tuple[RetrievalRecord, ...]
    skipped: tuple[tuple[int, str], ...] = ()  # (index in the input, reason)
    window: tuple[int, int] = (0, 0)  # the rank window actually used (after shrinking)


def effective_window(corpus_size: int, config: MiningConfig) -> tuple[int, int]:
    """Shrink the window proportionally when the corpus is smaller than ``rank_end``.

    With 10 chunks and the default 30–100 window, ranks 4–10 are used: the top few stay
    excluded (likely positives) and the rest is still a window, not nothing.
    """
    start, end = max(1, config.rank_start), max(config.rank_start, config.rank_end)
    if corpus_size >= end:
        return start, end
    scale = corpus_size / end
    return max(1, min(corpus_size, max(2, int(start * scale) + 1))), max(corpus_size, 1)


def section_key(chunk: CorpusChunk) -> tuple[str, tuple[str, ...]]:
    """Chunks in the same document under the same heading path share a section."""
    return chunk.document, tuple(chunk.heading_path)


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def records_from_qa(qa: Iterable[QARecord], *, include_held_out: bool = False) -> tuple[RetrievalRecord, ...]:
    """Retrieval examples from reviewed QA pairs: the question is the query, its source
    chunk the positive. Held-out pairs are left out by default: they are the frozen test
    set, and an embedding model trained on them would inflate its own evaluation."""
    out = []
    for r in qa:
        if not r.source_chunk_id or (r.held_out and not include_held_out):
            continue
        out.append(RetrievalRecord(r.question, r.source_chunk_id, r.chunk_text))
    return tuple(out)


def mine_hard_negatives(
    records: Sequence[RetrievalRecord], corpus: Iterable[CorpusChunk], config: MiningConfig = MiningConfig()
) -> MiningResult:
    """Fill each record's ``negatives`` with (chunk id, text) from the BM25 rank window.

    The positive must be in the corpus so its own BM25 score can set the margin: found by
    ``positive_id``, or else by its text (records imported from FlagEmbedding or
    sentence-transformers files carry no ids). Records whose positive is missing are
    returned untouched and listed in ``skipped``. Existing negatives are replaced.
    """
    import bm25s  # heavy imports only where needed
    import numpy as np

    chunks = sorted(corpus, key=lambda c: c.id)
    by_id = {c.id: i for i, c in enumerate(chunks)}
    if len(by_id) != len(chunks):
        raise ValueError("corpus chunk ids must be unique")
    window = effective_window(len(chunks), config)
    if not chunks:
        return MiningResult(tuple(records), tuple((i, "empty corpus") for i in range(len(records))), window)

    retriever = bm25s.BM25()
    retriever.index([tokenize(c.text, config.language) for c in chunks], show_progress=False)
    sections = [section_key(c) for c in chunks]
    norms = [_norm(c.text) for c in chunks]
    by_text: dict[str, int] = {}
    for i, n in enumerate(norms):
        by_text.setdefault(n, i)

    out: list[RetrievalRecord] = []
    skipped: list[tuple[int, str]] = []
    for idx, rec in enumerate(records):
        pos = by_id.get(rec.positive_id) if rec.positive_id else None
        if pos is None:
            pos = by_text.get(_norm(rec.positive_text)) if rec.positive_text.strip() else None
        if pos is None:
            out.append(rec)
            skipped.append((idx, f"positive {rec.positive_id!r} is not in the corpus"))
            continue
        q = tokenize(rec.query, config.language)
        arr = np.asarray(retriever.get_scores(q), dtype=np.float64) if q else np.zeros(len(chunks))
        # Chunks are sorted by id, so a stable sort on -score breaks ties by id.
        order = np.argsort(-arr, kind="stable")[window[0] - 1 : window[1]].tolist()
        scores = arr.tolist()
        pos_score = scores[pos]
        ceiling = config.relative_margin * pos_score if pos_score > 0 else None
        pos_norm = _norm(rec.positive_text) or norms[pos]
        negs: list[tuple[str, str]] = []
        for i in order:
            if len(negs) >= config.num_negatives:
                break
            if i == pos or norms[i] in (norms[pos], pos_norm):
                continue
            if config.exclude_same_section and sections[i] == sections[pos]:
                continue
            if scores[i] <= config.min_score:
                continue
            if ceiling is not None and scores[i] > ceiling:
                continue  # likely a false negative: almost as relevant as the positive
            negs.append((chunks[i].id, chunks[i].text))
        if not negs:
            skipped.append((idx, "no candidate in the rank window passed the filters"))
        out.append(replace(rec, negatives=tuple(negs)))
    return MiningResult(tuple(out), tuple(skipped), window)


__all__ = [
    "CorpusChunk",
    "MiningConfig",
    "MiningResult",
    "effective_window",
    "mine_hard_negatives",
    "records_from_qa",
    "section_key",
    "tokenize",
]
