"""Recognise the numbering that structures Chinese regulations and technical manuals.

Regulations are cited by article ("第三条"), manuals by clause ("4.2"); the chunker keeps
that address with every chunk and prefers to split where a new article or clause begins.
Shared with ``clean`` so a line that starts an article is never glued to the line before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .textutil import SENTENCE_END

_CN_NUM = "零〇一二三四五六七八九十百千两"


@dataclass(frozen=True)
class Marker:
    """A structural marker at the start of a line.

    ``rank``: nesting depth (编 1 > 章 2 > 节 3 > 条 4 > 一、 5 > （一） 6 > 1. 7 > 1.1 8 …);
    ``label``: what the heading path shows (the whole line for a heading, "第三条" for an
    article with its text on the same line); ``heading``: the line is only a heading;
    ``hard``: a chunk should start here (a new chapter or section), not just may.
    """

    label: str
    rank: int
    heading: bool
    hard: bool


_ZH = re.compile(rf"^第\s*([{_CN_NUM}]+|\d{{1,3}})\s*(编|章|节|条)")
_ZH_RANK = {"编": 1, "章": 2, "节": 3, "条": 4}
_EN = re.compile(r"^(part|chapter|section|article)\s+(\d+(?:\.\d+)*|[ivxlc]+)\b", re.IGNORECASE)
_EN_RANK = {"part": 1, "chapter": 2, "section": 3, "article": 4}
_CN_ITEM = re.compile(rf"^([{_CN_NUM}]{{1,3}})[、．]")
_CN_PAREN = re.compile(rf"^[（(]([{_CN_NUM}]{{1,3}})[)）]")
_MULTI = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){1,3})\.?\s+\S")
_SINGLE = re.compile(r"^(\d{1,2})[.．、](?!\d)\s*\S")
_BARE = re.compile(r"^(\d{1,2})\s+[A-Za-z\u4e00-\u9fff]")
_PAREN = re.compile(r"^[（(](\d{1,2})[)）]")
_CIRCLED = re.compile(r"^[\u2460-\u2473]")


def heading_like(line: str, limit: int = 40) -> bool:
    """Short, and not ending like a sentence: a title, not a clause."""
    text = line.strip()
    return (
        0 < len(text) <= limit
        and text[-1] not in SENTENCE_END + ".，,;；:：、"
        and any(ch.isalpha() for ch in text)
    )


def match_marker(line: str) -> Marker | None:
    """The structural marker a line starts with, if any."""
    text = line.strip()
    if not text:
        return None
    m = _ZH.match(text)
    if m:
        rank = _ZH_RANK[m.group(2)]
        whole = heading_like(text)
        return Marker(text if whole else f"第{m.group(1)}{m.group(2)}", rank, whole, hard=rank <= 3)
    m = _EN.match(text)
    if m:
        rank = _EN_RANK[m.group(1).lower()]
        whole = heading_like(text, 80)
        return Marker(text if whole else m.group(0), rank, whole, hard=rank <= 3)
    m = _CN_ITEM.match(text)
    if m:
        whole = heading_like(text)
        return Marker(text if whole else m.group(0), 5, whole, hard=whole)
    m = _CN_PAREN.match(text)
    if m:
        whole = heading_like(text)
        return Marker(text if whole else m.group(0), 6, whole, hard=False)
    m = _MULTI.match(text)
    if m:
        whole = heading_like(text, 80)
        return Marker(text if whole else m.group(1), 7 + m.group(1).count("."), whole, hard=whole)
    m = _SINGLE.match(text)
    if m:
        whole = heading_like(text, 60)
        return Marker(text if whole else m.group(0).rstrip(), 7, whole, hard=False)
    m = _BARE.match(text)
    if m and heading_like(text, 60):
        return Marker(text, 7, True, hard=True)
    m = _PAREN.match(text)
    if m:
        whole = heading_like(text)
        return Marker(text if whole else m.group(0), 10, whole, hard=False)
    if _CIRCLED.match(text):
        return Marker(text[0], 11, heading_like(text), hard=False)
    return None


def starts_structure(line: str) -> bool:
    """Whether a line begins an article, item or numbered clause (and so a new unit)."""
    return match_marker(line) is not None
