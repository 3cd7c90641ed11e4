"""Chunking: whole sentences, target size with overlap, the article's address kept, spans exact."""
from __future__ import annotations

import hashlib

import pytest

from domains.engine.chunker import (
    Chunk,
    ChunkConfig,
    chunk,
    document_text,
    split_sentences,
)
from domains.engine.loaders import Block

from .docs import MANUAL_SECTIONS, REGULATION


def regulation_blocks(styled: bool) -> list[Block]:
    """The regulation as a text file gives it (markers only) or as Word gives it (heading styles)."""
    blocks: list[Block] = []
    for page, (chapter, articles) in enumerate(REGULATION, start=1):
        if styled:
            blocks.append(Block(chapter, "heading", page, (chapter,), level=1))
            blocks.extend(Block(a, "paragraph", page, (chapter,)) for a in articles)
        else:
            blocks.append(Block("\n".join([chapter, *articles]), "paragraph", page))
    return blocks


def manual_blocks() -> list[Block]:
    blocks = []
    for page, (heading, paragraphs) in enumerate(MANUAL_SECTIONS, start=1):
        blocks.append(Block(heading, "heading", page, (heading,), level=1))
        blocks.extend(Block(p, "paragraph", page, (heading,)) for p in paragraphs)
    return blocks


def long_prose_blocks() -> list[Block]:
    sentences = [f"Sentence number {i} explains one more detail of the maintenance procedure." for i in range(60)]
    return [Block(" ".join(sentences[i : i + 6]), "paragraph", 1 + i // 12) for i in range(0, 60, 6)]


def sentence_bounds(text: str, blocks: list[Block]) -> tuple[set[int], set[int]]:
    """Every offset where a sentence (or heading line) starts or ends, found independently."""
    starts, ends = set(), set()
    offset = 0
    for line in text.split("\n"):
        for s, e in split_sentences(line):
            starts.add(offset + s)
            ends.add(offset + e)
        offset += len(line) + 1
    return starts, ends


def assert_invariants(blocks: list[Block], chunks: list[Chunk], config: ChunkConfig) -> None:
    text = document_text(blocks)
    starts, ends = sentence_bounds(text, blocks)
    assert chunks, "a document with text yields chunks"
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert text[: chunks[0].char_start].strip() == ""
    assert text[chunks[-1].char_end :].strip() == ""
    prev = None
    for c in chunks:
        # The span reproduces the chunk exactly.
        assert text[c.char_start : c.char_end] == c.text
        assert c.length == len(c.text) <= config.target_chars
        assert c.sha256 == hashlib.sha256(c.text.encode()).hexdigest()
        # Never cut inside a sentence.
        assert c.char_start in starts, f"chunk {c.ordinal} starts mid-sentence: {c.text[:30]!r}"
        assert c.char_end in ends, f"chunk {c.ordinal} ends mid-sentence: {c.text[-30:]!r}"
        if prev is not None:
            new_start = c.char_start + c.overlap
            # The new part follows the previous chunk with nothing but whitespace between.
            assert new_start >= prev.char_end
            assert text[prev.char_end : new_start].strip() == ""
            if c.overlap:
                # The overlap is the tail of the previous chunk, whole sentences of it.
                assert prev.char_start < c.char_start < prev.char_end
                assert c.overlap <= config.overlap_chars
        else:
            assert c.overlap == 0
        prev = c


CASES = [
    ("regulation-markers-small", lambda: regulation_blocks(False), ChunkConfig(120, 40, 30)),
    ("regulation-styled-small", lambda: regulation_blocks(True), ChunkConfig(150, 60, 50)),
    ("regulation-default", lambda: regulation_blocks(False), ChunkConfig()),
    ("manual", manual_blocks, ChunkConfig(260, 80, 60)),
    ("prose-overlap", long_prose_blocks, ChunkConfig(500, 160, 100)),
    ("prose-no-overlap", long_prose_blocks, ChunkConfig(500, 0, 100)),
]


@pytest.mark.parametrize("name, make, config", CASES, ids=[c[0] for c in CASES])
def test_invariants(name, make, config):
    blocks = make()
    assert_invariants(blocks, chunk(blocks, config), config)


def test_overlap_repeats_whole_sentences():
    blocks = long_prose_blocks()
    chunks = chunk(blocks, ChunkConfig(500, 160, 100))
    assert len(chunks) >= 5
    lapped = [c for c in chunks[1:] if c.overlap]
    assert len(lapped) == len(chunks) - 1  # one section: every continuation overlaps
    for prev, c in zip(chunks, chunks[1:]):
        repeated = c.text[: c.overlap].strip()
        assert repeated and prev.text.endswith(repeated)
        assert repeated.startswith("Sentence number") and repeated.endswith(".")


@pytest.mark.parametrize("styled", [False, True], ids=["markers", "heading-styles"])
def test_article_keeps_its_chapter(styled):
    blocks = regulation_blocks(styled)
    # Small enough that every article gets a chunk of its own.
    chunks = chunk(blocks, ChunkConfig(target_chars=60, overlap_chars=0, min_chars=10))
    third = next(c for c in chunks if c.text.startswith("第三条"))
    assert third.heading_path == ("第一章 总则", "第三条")
    assert "3000元及以上的需签订协议" in third.text
    seventh = next(c for c in chunks if c.text.startswith("第七条"))
    assert seventh.heading_path == ("第二章 差旅费", "第七条")


@pytest.mark.parametrize("styled", [False, True], ids=["markers", "heading-styles"])
def test_default_size_chunk_with_article_three_is_under_chapter_one(styled):
    chunks = chunk(regulation_blocks(styled))
    holder = next(c for c in chunks if "第三条" in c.text)
    assert holder.heading_path == ("第一章 总则",)
    assert holder.text.startswith("第一章 总则") and "第五条" not in holder.text


def test_small_sibling_sections_are_packed_chapters_are_not():
    blocks = []
    for chapter in ("Chapter 1 Install", "Chapter 2 Operate"):
        blocks.append(Block(chapter, "heading", 1, (chapter,), level=1))
        for n in (1, 2, 3):
            sub = f"{chapter[8]}.{n} Step"
            blocks.append(Block(sub, "heading", 1, (chapter, sub), level=2))
            blocks.append(Block(f"Do step {n} carefully.", "paragraph", 1, (chapter, sub)))
    chunks = chunk(blocks, ChunkConfig(target_chars=2000, overlap_chars=0, min_chars=300))
    assert [c.heading_path for c in chunks] == [("Chapter 1 Install",), ("Chapter 2 Operate",)]
    assert chunks[0].text.count("Step") == 3


def test_new_chapter_starts_a_new_chunk():
    blocks = regulation_blocks(False)
    chunks = chunk(blocks, ChunkConfig(target_chars=2000, overlap_chars=200, min_chars=100))
    assert [c.text.split("\n")[0] for c in chunks] == ["第一章 总则", "第二章 差旅费", "第三章 附则"]
    assert all(c.overlap == 0 for c in chunks)  # no overlap across a chapter break
    assert [c.heading_path for c in chunks] == [("第一章 总则",), ("第二章 差旅费",), ("第三章 附则",)]


def test_page_ranges():
    prose = long_prose_blocks()  # 10 paragraphs on pages 1-5
    whole = chunk(prose, ChunkConfig(target_chars=10_000, overlap_chars=0))
    assert [(c.page_start, c.page_end) for c in whole] == [(1, 5)]
    parts = chunk(prose, ChunkConfig(target_chars=1000, overlap_chars=0))
    text = document_text(prose)
    spans, at = [], 0
    for b in prose:  # each block's span in the document text
        at = text.index(b.text, at)
        spans.append((at, at + len(b.text), b.page))
        at += len(b.text)
    assert len(parts) >= 5
    for c in parts:
        pages = {page for s, e, page in spans if s < c.char_end and e > c.char_start}
        assert (c.page_start, c.page_end) == (min(pages), max(pages))
    blocks = regulation_blocks(False)
    per_chapter = chunk(blocks, ChunkConfig(target_chars=2000, overlap_chars=0, min_chars=100))
    assert [(c.page_start, c.page_end) for c in per_chapter] == [(1, 1), (2, 2), (3, 3)]
    merged = [Block("前页未完的句子，", "paragraph", 4, page_end=5)]
    assert (chunk(merged)[0].page_start, chunk(merged)[0].page_end) == (4, 5)


def test_over_long_sentence_is_hard_split_as_last_resort():
    run_on = "这是一个没有句号的超长句子，" * 300  # 4,200 characters, commas only
    blocks = [Block(run_on.rstrip("，") + "。", "paragraph", 1)]
    config = ChunkConfig(target_chars=1000, overlap_chars=100, min_chars=100)
    chunks = chunk(blocks, config)
    assert len(chunks) >= 5
    assert all(c.length <= 1000 for c in chunks)
    assert all(c.text.endswith(("，", "。")) for c in chunks)  # cut after a comma, not mid-word
    text = document_text(blocks)
    covered = "".join(text[c.char_start + c.overlap : c.char_end] for c in chunks)
    assert covered == text


def test_hashes_are_stable_and_local():
    blocks = regulation_blocks(False)
    config = ChunkConfig(target_chars=150, overlap_chars=0, min_chars=30)
    first = chunk(blocks, config)
    again = chunk(regulation_blocks(False), config)
    assert [c.sha256 for c in first] == [c.sha256 for c in again]
    assert len({c.sha256 for c in first}) == len(first)
    edited = regulation_blocks(False)
    edited[2] = Block(edited[2].text.replace("第九条 本办法自发布之日起施行", "第九条 本办法自2025年1月1日起施行"), "paragraph", 3)
    changed = chunk(edited, config)
    assert [c.sha256 for c in changed][:-1] == [c.sha256 for c in first][:-1]
    assert changed[-1].sha256 != first[-1].sha256


def test_table_rows_stay_whole():
    rows = [Block(f"E{100 + i} | fault number {i} | check item {i}", "table_row", 1, ("Fault codes",)) for i in range(40)]
    blocks = [Block("Fault codes", "heading", 1, ("Fault codes",), level=1), *rows]
    config = ChunkConfig(target_chars=400, overlap_chars=0, min_chars=50)
    chunks = chunk(blocks, config)
    assert len(chunks) > 3
    for c in chunks:
        for line in filter(None, c.text.split("\n")):
            assert line == "Fault codes" or line.count("|") == 2


def test_heading_not_left_dangling_at_chunk_end():
    blocks = []
    for n in range(1, 6):
        title = f"Section {n} heading"
        blocks.append(Block(title, "heading", 1, (title,), level=2))
        blocks.append(Block("This paragraph has words. " * 8, "paragraph", 1, (title,)))
    chunks = chunk(blocks, ChunkConfig(target_chars=300, overlap_chars=50, min_chars=400))
    for c in chunks:
        assert not c.text.rstrip().endswith("heading")


@pytest.mark.parametrize(
    "line, sentences",
    [
        ("E100 means over-current. Check the wiring.", ["E100 means over-current.", "Check the wiring."]),
        ("1. Check the wiring. Then restart.", ["1. Check the wiring.", "Then restart."]),
        ("See Fig. 3 and e.g. the table.", ["See Fig. 3 and e.g. the table."]),
        ("版本3.5已发布。请升级！", ["版本3.5已发布。", "请升级！"]),
        ("第三条 报销金额3000元及以上的需签订协议；协议应当载明金额。", ["第三条 报销金额3000元及以上的需签订协议；", "协议应当载明金额。"]),
        ("他说：“好。”然后离开", ["他说：“好。”", "然后离开"]),
    ],
)
def test_split_sentences(line, sentences):
    assert [line[s:e] for s, e in split_sentences(line)] == sentences
