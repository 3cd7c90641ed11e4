"""Repair extracted text before chunking: what a PDF page adds around and inside the prose.

Running headers, footers and page numbers would otherwise land in every chunk (and in every
generated question); lines broken at the page margin would split sentences; full-width
letters and digits (Ａ１２３) would defeat search. The repairs are deliberately conservative:
Chinese punctuation (，。；：) stays full-width, and a line is only joined to the next when
it is clearly broken mid-sentence.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import replace

from .loaders import Block, LoadResult
from .structure import starts_structure
from .textutil import CN_CONTINUE, SENTENCE_END, collapse_spaces, display_width, is_cjk

PAGED_KINDS = ("pdf", "image")  # hard-wrapped lines from a page layout
WRAPPED_KINDS = ("pdf", "image", "text")  # formats whose line breaks may be mere wrapping

_PAGE_NUMBER = re.compile(
    r"""^(?:
        [-–—~·\s]*\d{1,4}[-–—~·\s]*                                  # 3, - 3 -, — 3 —
      | 第\s*\d{1,4}\s*页(?:\s*[/，,、]?\s*共\s*\d{1,4}\s*页)?          # 第 3 页, 第3页 共10页
      | 共\s*\d{1,4}\s*页\s*[，,]?\s*第\s*\d{1,4}\s*页                  # 共10页 第3页
      | (?:page|p\.?)\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?             # Page 3, Page 3 of 10, p. 3
      | \d{1,4}\s*/\s*\d{1,4}                                         # 3 / 10
    )$""",
    re.IGNORECASE | re.VERBOSE,
)

# Characters NFKC may fold. Everything else (Chinese punctuation, circled numbers ①,
# units ㎡, superscripts) is kept exactly as written.
_FOLD_RANGES = (
    (0xFF10, 0xFF19),  # full-width digits
    (0xFF21, 0xFF3A),  # full-width A–Z
    (0xFF41, 0xFF5A),  # full-width a–z
    (0xFB00, 0xFB06),  # Latin ligatures ﬁ ﬂ (common in PDFs)
    (0x2F00, 0x2FD5),  # Kangxi radicals that PDFs emit instead of ideographs (⽇ → 日)
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
)
_SPACES = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
_DROP = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_TRANSLATE: dict[int, str] = {ord(ch): " " for ch in _SPACES}
_TRANSLATE.update({ord(ch): "" for ch in _DROP})
for _lo, _hi in _FOLD_RANGES:
    for _cp in range(_lo, _hi + 1):
        _TRANSLATE[_cp] = unicodedata.normalize("NFKC", chr(_cp))
# Full-width symbols that are only safe to fold between ASCII letters/digits (３．５％ → 3.5%).
_ASCII_CONTEXT = {"．": ".", "％": "%", "＋": "+", "－": "-", "／": "/", "＝": "=", "＠": "@", "＆": "&", "＃": "#"}
_ASCII_CONTEXT_RE = re.compile(r"(?<=[0-9A-Za-z])([．％＋－／＝＠＆＃])|([．％＋－／＝＠＆＃])(?=[0-9A-Za-z])")
_SPACED_CJK = re.compile(r"(?<=[\u4e00-\u9fff，。；：、！？]) (?=[\u4e00-\u9fff，。；：、！？])")
_BULLET = re.compile(r"^[•·●○■□◆◇▪▫►▶\-–*]\s")


def normalize_chars(text: str) -> str:
    """Fold full-width letters/digits, ligatures and odd spaces; keep Chinese punctuation."""
    text = text.translate(_TRANSLATE)
    if any(ch in text for ch in _ASCII_CONTEXT):
        text = _ASCII_CONTEXT_RE.sub(lambda m: _ASCII_CONTEXT[m.group(1) or m.group(2)], text)
    return text


def _despace_cjk(line: str) -> str:
    """Drop the spaces of letter-spaced CJK ("第 一 章 总 则") when most CJK pairs are spaced."""
    spaced = len(_SPACED_CJK.findall(line))
    if spaced < 3:
        return line
    tight = sum(1 for a, b in zip(line, line[1:]) if is_cjk(a) and is_cjk(b))
    if spaced > tight:
        return _SPACED_CJK.sub("", line)
    return line


_OCR_GAP = re.compile(r"(?<=[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef0-9]) (?=[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef0-9])")


def _ocr_despace(line: str) -> str:
    """OCR puts stray spaces into Chinese lines ("金额30 00 元"); drop those between CJK/digits."""
    cjk = sum(1 for ch in line if is_cjk(ch))
    if cjk * 2 < len(line.replace(" ", "")):
        return line
    return _OCR_GAP.sub("", line)


def is_page_number(line: str) -> bool:
    """A line that is nothing but a page number ("3", "- 3 -", "第 3 页", "Page 3 of 10")."""
    return bool(_PAGE_NUMBER.match(line.strip()))


def _key(line: str) -> str:
    return re.sub(r"\d+", "#", re.sub(r"\s+", "", line))


def remove_page_furniture(blocks: list[Block], zone: int = 2) -> tuple[list[Block], int]:
    """Drop page numbers and running headers/footers; returns (blocks, lines removed).

    Only the first and last ``zone`` lines of each page are candidates. A candidate goes
    when it is a page number, or when the same line sits in the margin zone of at least
    half the pages (and at least 2), or the same line but for this page's own number does.
    A running header that a loader took for a heading also leaves the heading paths.
    """
    pages = sorted({b.page for b in blocks if b.page is not None})
    if not pages:
        return blocks, 0
    # (block index, line index) of the lines in each page's margin zones.
    by_page: dict[int, list[tuple[int, int]]] = {}
    split: list[list[str]] = [b.text.split("\n") for b in blocks]
    for i, b in enumerate(blocks):
        if b.page is None or b.kind == "table_row":
            continue
        by_page.setdefault(b.page, []).extend((i, j) for j in range(len(split[i])))
    candidates: dict[int, list[tuple[int, int]]] = {}
    for page, refs in by_page.items():
        refs = [r for r in refs if split[r[0]][r[1]].strip()]
        zone_refs = refs[:zone] + [r for r in refs[-zone:] if r not in refs[:zone]]
        candidates[page] = zone_refs
    exact: Counter[str] = Counter()
    loose: Counter[str] = Counter()
    for page, refs in candidates.items():
        lines = {split[i][j] for i, j in refs}
        for key in {re.sub(r"\s+", "", ln) for ln in lines}:
            exact[key] += 1
        for key in {_key(ln) for ln in lines}:
            loose[key] += 1
    threshold = max(2, (len(pages) + 1) // 2)
    drop: set[tuple[int, int]] = set()
    for page, refs in candidates.items():
        for i, j in refs:
            line = split[i][j]
            if len(pages) < 2 or len(line) > 120:
                repeated = False
            elif exact[re.sub(r"\s+", "", line)] >= threshold:
                repeated = True  # the same running header on many pages
            else:
                # "Annual report 2023 · 3": the same line but for this page's own number, as
                # the very first or last line of the page.
                edge = (i, j) in (refs[0], refs[-1])
                repeated = edge and loose[_key(line)] >= threshold and str(page) in re.findall(r"\d+", line)
            if repeated or is_page_number(line):
                drop.add((i, j))
    if not drop:
        return blocks, 0
    out: list[Block] = []
    dropped_headings: set[str] = set()
    for i, b in enumerate(blocks):
        lines = [ln for j, ln in enumerate(split[i]) if (i, j) not in drop]
        if any(ln.strip() for ln in lines):
            out.append(b if len(lines) == len(split[i]) else replace(b, text="\n".join(lines)))
        elif b.kind == "heading":
            dropped_headings.add(b.text)
    if dropped_headings:
        out = [
            replace(b, heading_path=tuple(h for h in b.heading_path if h not in dropped_headings))
            if any(h in dropped_headings for h in b.heading_path)
            else b
            for b in out
        ]
    return out, len(drop)


def _ends_sentence(text: str) -> bool:
    text = text.rstrip().rstrip("”’\"'）)」』】》")
    return bool(text) and text[-1] in SENTENCE_END + "：:"


def join_lines(lines: list[str], full_width: int) -> str:
    """Join lines that were broken by page layout, keep the ones that really end.

    A line is continued by the next when it runs (nearly) to the margin, or ends mid-sentence
    (a Chinese comma, a hyphenated word, a lowercase continuation), unless the next line
    starts a structure of its own (第三条, 1.1, a bullet).
    """
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if not out:
            out = line
            continue
        prev = out.rsplit("\n", 1)[-1]
        if starts_structure(line) or _BULLET.match(line):
            out += "\n" + line
            continue
        full = display_width(prev) >= 0.8 * full_width
        last, first = prev[-1], line[0]
        if last == "-" and len(prev) >= 2 and prev[-2].isalpha() and first.islower():
            out = out[:-1] + line  # hyphen-\nation → hyphenation
        elif is_cjk(last) or is_cjk(first):
            if last in CN_CONTINUE or (full and not _ends_sentence(prev)):
                out += line
            else:
                out += "\n" + line
        elif full or (first.islower() and not _ends_sentence(prev)):
            out += " " + line  # prose wrapped at the margin
        else:
            out += "\n" + line
    return out


def _full_width(blocks: list[Block]) -> int:
    """The width of a full line in this document: the 90th percentile of wrapped lines."""
    widths = sorted(
        display_width(ln.strip())
        for b in blocks
        if b.kind == "paragraph" and "\n" in b.text
        for ln in b.text.split("\n")
        if ln.strip()
    )
    if not widths:
        return 10**9
    return max(20, widths[int(0.9 * (len(widths) - 1))])


def _merge_across_pages(blocks: list[Block]) -> list[Block]:
    """A paragraph cut by a page break continues on the next page: make it one block again."""
    out: list[Block] = []
    for b in blocks:
        if out:
            prev = out[-1]
            if (
                prev.kind == b.kind == "paragraph"
                and prev.page is not None
                and b.page is not None
                and b.page == (prev.page_end or prev.page) + 1
                and prev.heading_path == b.heading_path
                and prev.ocr == b.ocr
                and not _ends_sentence(prev.text)
                and not starts_structure(b.text)
                and not _BULLET.match(b.text)
            ):
                last, first = prev.text.rstrip()[-1:], b.text.lstrip()[:1]
                sep = "" if (is_cjk(last) or is_cjk(first)) else " "
                if last == "-" and first.islower():
                    out[-1] = replace(prev, text=prev.text.rstrip()[:-1] + b.text.lstrip(), page_end=b.page)
                else:
                    out[-1] = replace(prev, text=prev.text.rstrip() + sep + b.text.lstrip(), page_end=b.page)
                continue
        out.append(b)
    return out


def clean(result: LoadResult) -> list[Block]:
    """Cleaned blocks of a loaded document, ready for the chunker."""
    blocks = [replace(b, text=normalize_chars(b.text)) for b in result.blocks]
    if result.kind in PAGED_KINDS or any(b.page is not None for b in blocks):
        blocks, _removed = remove_page_furniture(blocks)
    wrapped = result.kind in WRAPPED_KINDS
    full_width = _full_width(blocks) if wrapped else 0
    out: list[Block] = []
    for b in blocks:
        lines = [_despace_cjk(collapse_spaces(ln)) for ln in b.text.split("\n")]
        if b.ocr:
            lines = [_ocr_despace(ln) for ln in lines]
        lines = [ln for ln in lines if ln]
        if not lines:
            continue
        if b.kind in ("paragraph",) and wrapped:
            text = join_lines(lines, full_width)
        elif b.kind == "code":
            text = "\n".join(ln.rstrip() for ln in b.text.split("\n") if ln.strip())
        else:
            text = "\n".join(lines)
        heading_path = tuple(collapse_spaces(normalize_chars(h)) for h in b.heading_path)
        out.append(replace(b, text=text, heading_path=heading_path))
    if result.kind in PAGED_KINDS:
        out = _merge_across_pages(out)
    return out
