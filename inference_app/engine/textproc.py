"""Tokenisation for BM25, shared by retrieval (this package) and hard-negative mining.

One tokenizer for the whole platform, so a mined negative and a served search see the same
terms. Chinese goes through jieba (BM25 over jieba words finds the right CMRC passage first
93% of the time, where an English MiniLM finds it 14%, FACTS.md); everything else is
``\\w+`` runs. On top of that, *codes* — fault codes, clause and version numbers such as
``E100.1``, ``SUN-5K``, ``3.5`` — are kept whole as one extra token beside their parts, the
way search engines "preserve the original" when splitting on punctuation: a query for
``E100.1`` then matches the E100.1 chunk on the rare whole code (not only on ``e100`` and
``1``, which the E100 chunk shares), while a query for ``E100`` still finds both.

Text is NFKC-normalised first, so full-width ``Ｅ１００．１`` (common in Chinese documents)
is the same code as ``E100.1``. No Django, no heavy import at module level (jieba loads its
dictionary, ~0.7 s, on the first Chinese text).
"""
from __future__ import annotations

import logging
import re
import threading
import unicodedata

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+", re.UNICODE)
# ASCII letter/digit runs joined by . - / (E100.1, SUN-5K, GB/T-2020, 3.5, v2.0.1). A code must
# hold a digit, so prose like "over-voltage" or "e.g" stays plain words.
_CODE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]+(?:[./\-][A-Za-z0-9]+)+(?![A-Za-z0-9])")
_DIGIT = re.compile(r"[0-9]")
_jieba_lock = threading.Lock()
_jieba_ready = False


def has_cjk(text: str) -> bool:
    """True when ``text`` holds a CJK ideograph (then jieba segments it)."""
    return bool(_CJK.search(text))


def _jieba():
    """jieba, initialised once (its lazy dictionary load is not thread-safe)."""
    global _jieba_ready
    import jieba  # imported here: its dictionary load costs ~0.7 s

    if not _jieba_ready:
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_ready = True
    return jieba


def codes(text: str) -> list[str]:
    """The whole codes in ``text`` (lower-cased), e.g. ``["e100.1"]`` for "E100.1 过流故障"."""
    return [m.group(0).lower() for m in _CODE.finditer(text) if _DIGIT.search(m.group(0))]


def tokenize(text: str, language: str = "auto") -> list[str]:
    """Lower-cased word tokens: jieba words for Chinese, ``\\w+`` runs for everything else,
    then each whole code (``E100.1``) once more as one token.

    ``language`` is ``"auto"`` (jieba when the text holds CJK), ``"zh"`` (always jieba) or
    ``"en"`` (never jieba: a CJK run stays one token). Punctuation-only pieces are dropped.
    The code tokens come after the word tokens (BM25 is a bag of words; order is irrelevant).
    """
    text = unicodedata.normalize("NFKC", text or "")
    if language == "zh" or (language == "auto" and has_cjk(text)):
        # Each jieba word is split into \w+ runs again, so "E100.1" yields the same parts
        # ("e100", "1") whichever way the text was segmented.
        words = [w.lower() for t in _jieba().lcut(text) for w in _WORD.findall(t)]
    else:
        words = [t.lower() for t in _WORD.findall(text)]
    return words + codes(text)


def tokenize_many(texts, language: str = "auto") -> list[list[str]]:
    """``tokenize`` over a sequence (what an index build calls)."""
    return [tokenize(t, language) for t in texts]


__all__ = ["codes", "has_cjk", "tokenize", "tokenize_many"]
