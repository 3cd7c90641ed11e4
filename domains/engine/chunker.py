"""Structure-aware chunking: whole sentences, packed to a target size, with their address.

A chunk is a contiguous slice of the document's cleaned text (``document_text``): it
never starts or ends inside a sentence, it starts afresh at a new chapter or section (small
sibling sub-sections are packed together, chapters never are), it
repeats the last sentences of the previous chunk when it continues one (overlap), and it
carries the heading path — "第一章 总则" › "第三条" — that a question generated from it, or a
retrieval hit, needs to cite its source.

Invariants (tested): ``text == document_text(blocks)[char_start:char_end]``;
``text[:overlap]`` is the repeated part; the non-overlap parts of all chunks cover the
document's text, in order, each character once; ``length <= target_chars``.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .structure import match_marker

if TYPE_CHECKING:
    from .loaders import Block


@dataclass(frozen=True)
class ChunkConfig:
    """How big chunks are and how much they overlap (characters, CJK and Latin alike)."""

    target_chars: int = 2000  # a chunk, overlap included, never exceeds this
    overlap_chars: int = 200  # whole sentences of the previous chunk repeated (0 = no overlap)
    min_chars: int = 300  # a sub-section shorter than this is packed with its next sibling


@dataclass(frozen=True)
class Chunk:
    """One retrievable piece of a document."""

    ordinal: int  # 0-based position in the document
    text: str
    heading_path: tuple[str, ...]  # headings shared by everything new in this chunk
    page_start: int | None
    page_end: int | None
    char_start: int  # span in the document's cleaned text (``document_text``)
    char_end: int
    overlap: int  # leading characters repeated from the previous chunk
    length: int
    sha256: str  # of ``text`` (UTF-8): stable across runs, for dedupe and re-ingest


@dataclass(slots=True)
class _Sentence:
    start: int
    end: int
    path: tuple[str, ...]
    page: int | None
    page_end: int | None
    unit: int  # sentences of one article/paragraph/table share a unit
    hard: bool = False  # begins a chapter/section: start a new chunk here
    heading: bool = False  # a heading line: never the last thing in a chunk


def _separator(prev: Block | None, block: Block) -> str:
    if prev is None:
        return ""
    if prev.kind == block.kind == "table_row":
        return "\n"
    return "\n\n"


def document_text(blocks: Sequence[Block]) -> str:
    """The cleaned full text that chunk offsets refer to: blocks joined by blank lines."""
    parts = []
    prev = None
    for block in blocks:
        parts.append(_separator(prev, block) + block.text)
        prev = block
    return "".join(parts)


# A sentence ends after 。！？；!? (and any closing quotes), or after a period followed by
# whitespace, unless the period closes an enumerator or a common abbreviation ("1.", "e.g.").
_END = re.compile(r"(?:[。！？；!?…]+|\.(?=\s|$))[”’\"'）)」』】》]*")
_NOT_END = re.compile(
    r"(?:^|\s)(?:\d{1,3}(?:\.\d{1,3})*|[A-Za-z]|[ivxIVX]{1,4}|No|Nos|Fig|Figs|Eq|e\.g|i\.e|etc|vs|cf|Mr|Mrs|Ms|Dr|St|Inc|Ltd|Co)\.$"
)
_SOFT_BREAK = re.compile(r"[，,、；;：:\s]")


def split_sentences(line: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the sentences of one line (no leading/trailing spaces)."""
    spans = []
    start = 0
    for m in _END.finditer(line):
        end = m.end()
        if line[m.start()] == "." and _NOT_END.search(line[start:m.start() + 1]):
            continue
        spans.append((start, end))
        start = end
    spans.append((start, len(line)))
    out = []
    for s, e in spans:
        while s < e and line[s].isspace():
            s += 1
        while e > s and line[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def _hard_split(start: int, end: int, text: str, limit: int) -> list[tuple[int, int]]:
    """Cut an over-long sentence into pieces of at most ``limit``, at a comma or space if possible."""
    pieces = []
    while end - start > limit:
        window = text[start : start + limit]
        cut = max((m.end() for m in _SOFT_BREAK.finditer(window, limit // 2)), default=0)
        cut = start + (cut or limit)
        piece_end = cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        pieces.append((start, piece_end))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        pieces.append((start, end))
    return pieces


def _sentences(blocks: Sequence[Block], text: str, max_len: int) -> list[_Sentence]:
    """Sentences with their heading path, page and unit, in document order."""
    out: list[_Sentence] = []
    offset = 0
    prev: Block | None = None
    styled: tuple[str, ...] = ()
    markers: list[tuple[int, str]] = []
    unit = -1

    def add(s: int, e: int, path: tuple[str, ...], block: Block, hard: bool, heading: bool) -> None:
        for k, (ps, pe) in enumerate(_hard_split(s, e, text, max_len)):
            out.append(_Sentence(ps, pe, path, block.page, block.page_end or block.page, unit, hard and k == 0, heading))

    for block in blocks:
        offset += len(_separator(prev, block))
        base = offset
        offset += len(block.text)
        if block.kind == "heading" or block.heading_path != styled:
            styled = tuple(block.heading_path)
            markers = []
        if block.kind == "heading":
            unit += 1
            add(base, base + len(block.text), styled, block, hard=True, heading=True)
        elif block.kind == "table_row":
            if prev is None or prev.kind != "table_row":
                unit += 1
            add(base, base + len(block.text), styled + tuple(m[1] for m in markers), block, False, False)
        else:
            line_start = base
            for i, line in enumerate(block.text.split("\n")):
                marker = match_marker(line) if block.kind != "code" else None
                hard = heading = False
                if marker is not None:
                    unit += 1
                    if marker.rank <= 4 or marker.heading:
                        while markers and markers[-1][0] >= marker.rank:
                            markers.pop()
                        markers.append((marker.rank, marker.label))
                    hard, heading = marker.hard, marker.heading
                elif i == 0:
                    unit += 1
                path = styled + tuple(m[1] for m in markers)
                for k, (s, e) in enumerate(split_sentences(line)):
                    add(line_start + s, line_start + e, path, block, hard and k == 0, heading)
                line_start += len(line) + 1
        prev = block
    return out


def _common_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    if not paths:
        return ()
    prefix = paths[0]
    for path in paths[1:]:
        n = 0
        while n < len(prefix) and n < len(path) and prefix[n] == path[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def chunk(blocks: Sequence[Block], config: ChunkConfig | None = None) -> list[Chunk]:
    """Pack the cleaned blocks into chunks (see the module docstring for the guarantees)."""
    config = config or ChunkConfig()
    target = max(1, config.target_chars)
    overlap_budget = max(0, min(config.overlap_chars, target // 2))
    text = document_text(blocks)
    # A sentence plus a full overlap must fit in one chunk: longer ones are cut (last resort).
    sents = _sentences(blocks, text, max(1, target - overlap_budget))
    chunks: list[Chunk] = []

    def span(items: list[_Sentence]) -> int:
        return items[-1].end - items[0].start if items else 0

    def emit(items: list[_Sentence], n_overlap: int) -> None:
        start, end = items[0].start, items[-1].end
        new = items[n_overlap:]
        pages = [p for s in items for p in (s.page, s.page_end) if p is not None]
        body = text[start:end]
        chunks.append(
            Chunk(
                ordinal=len(chunks),
                text=body,
                # Headings are labels, not content: a title opening the chunk does not widen it.
                heading_path=_common_prefix([s.path for s in new if not s.heading] or [s.path for s in new]),
                page_start=min(pages) if pages else None,
                page_end=max(pages) if pages else None,
                char_start=start,
                char_end=end,
                overlap=new[0].start - start if n_overlap else 0,
                length=end - start,
                sha256=hashlib.sha256(body.encode("utf-8")).hexdigest(),
            )
        )

    def tail_overlap(items: list[_Sentence], n_overlap: int) -> list[_Sentence]:
        """Last whole sentences of a closed chunk that fit the overlap budget (not all of it)."""
        if not overlap_budget:
            return []
        picked: list[_Sentence] = []
        for k in range(len(items) - 1, n_overlap, -1):  # keep at least one new sentence out
            if items[-1].end - items[k].start > overlap_budget:
                break
            picked.insert(0, items[k])
        while picked and picked[0].heading:  # do not open a chunk with a stale heading
            picked.pop(0)
        return picked

    unit_end: dict[int, int] = {}
    for s in sents:
        unit_end[s.unit] = s.end
    # Headings every section sits under (a document title) do not make sections siblings.
    root_depth = len(_common_prefix([s.path for s in sents if s.path]))

    def starts_new(new: list[_Sentence], s: _Sentence) -> bool:
        """Whether a chapter/section heading ``s`` closes the chunk in progress.

        It does unless the chunk holds only headings, or it is a small section (under
        ``min_chars``) and ``s`` is its sibling under the same real parent section: small
        sub-sections are packed together, chapters never are.
        """
        if not s.hard or all(x.heading for x in new):
            return False
        if span(new) >= config.min_chars:
            return True
        parent = s.path[:-1]
        shared = _common_prefix([x.path for x in new])
        return not (len(parent) > root_depth and shared[: len(parent)] == parent)

    cur: list[_Sentence] = []
    n_overlap = 0
    for s in sents:
        new = cur[n_overlap:]
        if new and starts_new(new, s):
            cut = len(cur)
            while cut > n_overlap + 1 and cur[cut - 1].heading:  # "第一章" right before "第一节"
                cut -= 1
            emit(cur[:cut], n_overlap)
            cur, n_overlap = cur[cut:], 0
        elif new and s.end - cur[0].start > target:
            cut = len(cur)
            # Prefer to move the unit in progress (an article, a paragraph) whole into the
            # next chunk, when it fits there and enough is left behind.
            if cur[-1].unit == s.unit:
                first = next(i for i in range(len(cur)) if cur[i].unit == s.unit)
                if (
                    n_overlap < first
                    and span(cur[n_overlap:first]) >= config.min_chars
                    and unit_end[s.unit] - cur[first].start <= target - overlap_budget
                ):
                    cut = first
            # A heading at the end belongs with what follows it.
            while cut > n_overlap + 1 and cur[cut - 1].heading:
                cut -= 1
            carry = cur[cut:]
            if carry and s.end - carry[0].start > target:
                carry, cut = [], len(cur)
            emit(cur[:cut], n_overlap)
            lap = tail_overlap(cur[:cut], n_overlap)
            while lap and s.end - lap[0].start > target:
                lap.pop(0)
            cur, n_overlap = lap + carry, len(lap)
        cur.append(s)
    if cur[n_overlap:]:
        emit(cur, n_overlap)
    return chunks
