"""Small text helpers shared by the offline teacher and the quality filters.

Kept dependency-free (stdlib only) so filters can run anywhere the engine runs.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Sentence ends: Chinese and ASCII terminators, newlines. Semicolons end a clause
# that regulations treat as a separate rule, so they split too.
_SENT_END = re.compile(r"[。！？!?；;\n]+|(?<=[a-z0-9)\]])\.(?=\s|$)")
_NUM = re.compile(r"\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PUNCT_WS = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Span:
    """A piece of text with its character offsets in the original string."""

    text: str
    start: int
    end: int


def nfkc(text: str) -> str:
    """Full-width digits/letters/punctuation to half-width, so 3000 == ３０００."""
    return unicodedata.normalize("NFKC", text)


def normalize_numbers(text: str) -> str:
    """NFKC plus thousands separators removed: 3,000 / ３，０００ / 3000 compare equal."""
    return _THOUSANDS.sub("", nfkc(text))


def numbers_in(text: str) -> list[str]:
    """Every number in the text, normalised (``3,000.50`` -> ``3000.50``)."""
    return _NUM.findall(normalize_numbers(text))


def normalize_question(text: str) -> str:
    """Key for duplicate detection: NFKC, lower case, punctuation and spaces dropped."""
    return _PUNCT_WS.sub("", nfkc(text).lower())


def is_cjk(ch: str) -> bool:
    """True for a CJK unified ideograph (the common and extension-A blocks)."""
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among non-space characters (language sniffing)."""
    chars = [c for c in text if not c.isspace()]
    return sum(is_cjk(c) for c in chars) / len(chars) if chars else 0.0


def char_bigrams(text: str) -> set[str]:
    """Character bigrams of the normalised text: a language-neutral fingerprint."""
    t = normalize_question(text)
    return {t[i : i + 2] for i in range(len(t) - 1)} if len(t) > 1 else {t} if t else set()


def terms(text: str) -> list[str]:
    """Key terms for grounding: Latin words of 3+ letters and CJK character bigrams."""
    t = normalize_numbers(text).lower()
    out = re.findall(r"[a-z][a-z\-]{2,}", t)
    for run in re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]+", t):
        out.extend(run[i : i + 2] for i in range(len(run) - 1)) if len(run) > 1 else out.append(run)
    return out


def split_sentences(text: str) -> list[Span]:
    """Sentences (with the terminator kept) and their offsets, blank ones dropped."""
    spans: list[Span] = []
    start = 0
    for m in _SENT_END.finditer(text):
        end = m.end()
        piece = text[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            trail = len(piece.rstrip())
            spans.append(Span(piece[lead:trail], start + lead, start + trail))
        start = end
    piece = text[start:]
    if piece.strip():
        lead = len(piece) - len(piece.lstrip())
        spans.append(Span(piece.strip(), start + lead, start + lead + len(piece.strip())))
    return spans


# Text addressed to a model rather than to a reader ("ignore the above instructions").
# Chunks are data: the teacher never builds a question from such a sentence and the
# filters drop any pair whose question carries one.
INJECTION = re.compile(
    r"忽略(?:以上|上述|之前|前面|先前|所有|全部)*的?(?:所有|全部)?(?:指令|指示|提示|规则|要求)"
    r"|(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|above|prior|earlier)\s+"
    r"(?:instructions?|prompts?|rules)"
    r"|system\s+prompt|系统提示词?|你现在是|you\s+are\s+now\b",
    re.IGNORECASE,
)


def looks_like_injection(text: str) -> bool:
    """True when the text reads as an instruction to a model (prompt injection)."""
    return bool(INJECTION.search(nfkc(text)))
