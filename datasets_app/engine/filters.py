"""Quality filters over candidate QA pairs, from any teacher.

Weak teachers (offline rules, small local models) and strong ones (API LLMs) all make
pairs that should not reach training: refusals, answers with numbers the source never
says, questions that lean on "这个/上述" context the reader lacks, duplicates. Each
rejection carries a reason code so a reviewer and a benchmark can see which filter bites.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .textnorm import (
    char_bigrams,
    looks_like_injection,
    normalize_numbers,
    normalize_question,
    numbers_in,
    terms,
)

# Reason codes, stable strings stored with rejected pairs.
ANSWER_TOO_SHORT = "answer_too_short"
ANSWER_TOO_LONG = "answer_too_long"
QUESTION_LENGTH = "question_length"
PASSAGE_LENGTH = "passage_length"
REFUSAL = "refusal"
MEANINGLESS = "meaningless"
UNGROUNDED_NUMBER = "ungrounded_number"
UNGROUNDED_TERMS = "ungrounded_terms"
CONTEXT_DEPENDENT = "context_dependent"
INSTRUCTION = "instruction_in_question"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
EMBEDDING_DUPLICATE = "embedding_duplicate"

REASONS: tuple[str, ...] = (
    ANSWER_TOO_SHORT, ANSWER_TOO_LONG, QUESTION_LENGTH, PASSAGE_LENGTH, REFUSAL, MEANINGLESS,
    UNGROUNDED_NUMBER, UNGROUNDED_TERMS, CONTEXT_DEPENDENT, INSTRUCTION, DUPLICATE,
    NEAR_DUPLICATE, EMBEDDING_DUPLICATE,
)


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the quality filters; stored as JSON beside a dataset version."""

    min_answer_chars: int = 1  # "是"/"否" style one-char answers are rare but real
    max_answer_chars: int = 500  # longer answers are passages, not answers
    min_question_chars: int = 5
    max_question_chars: int = 750
    min_passage_chars: int = 5  # the evidence the pair carries (its span, else the chunk)
    max_passage_chars: int = 750
    min_term_coverage: float = 0.6  # share of the answer's key terms found in the chunk
    near_duplicate_jaccard: float = 0.9  # char-bigram Jaccard between two questions
    embedding_duplicate_cosine: float = 0.95  # used only when an embed hook is given
    check_context: bool = True  # reject "这个/该/上述/this …" questions without antecedent


@dataclass(frozen=True)
class Rejected:
    """A candidate that did not pass, with the first filter that stopped it."""

    candidate: Any
    reason: str
    detail: str = ""


EmbedFn = Callable[[Sequence[str]], Sequence[Sequence[float]]]

_REFUSAL = re.compile(
    r"不知道|无法确定|无法回答|不清楚|不确定|没有提及|未提及|未提供|没有相关信息|无法从.{0,10}(得知|判断)|抱歉"
    r"|\bi\s+(?:do\s*n[o']?t|cannot|can't)\s+(?:know|say|tell|answer|determine)\b|\bnot\s+(?:mentioned|provided|specified)\b"
    r"|\bunknown\b|\bno information\b|\bas an ai\b|\bsorry\b",
    re.IGNORECASE,
)
# Context words that need an antecedent. Compounds that merely contain them (应该, 其他,
# 因此, 此外 …) are excluded by the lookarounds.
_ZH_DEICTIC = re.compile(
    r"这个|这些|这种|这项|这条|这里|这张|这部|这次|这场|这位|这座|这家|这首|这本|这名|这首|这款|这段|那个|那些|上述|前述|上文|下文|本文|本条|前款|本款|以上(?=内容|规定|情况|所述|的)|二人|两人|双方"
    r"|(?<![应活])该(?![怎如])|(?<![因如彼从至由据为借与对])此(?![外后前时])"
)
_ZH_SCOPED_DOC = re.compile(r"本(?:办法|规定|制度|细则|条例|章程|手册|指南|标准|文件)")
_EN_DEICTIC = re.compile(
    r"\b(?:this|that|these|those|above|aforementioned|said|former|latter)\b(?!\s+(?:is|are|was)\b)"
    r"|^\s*(?:what|how|why|when|where|who)\s+(?:does|did|is|was|can|should)\s+(?:it|he|she|they)\b"
    r"|\b(?:the\s+(?:passage|text|document|article|paragraph|section))\b",
    re.IGNORECASE,
)


def _field(c: Any, name: str, default: Any = None) -> Any:
    """Read a field from a dataclass-like object or a dict."""
    return c.get(name, default) if isinstance(c, Mapping) else getattr(c, name, default)


def _meaningless(question: str, answer: str) -> str:
    """Why an answer says nothing ("" when it says something)."""
    na, nq = normalize_question(answer), normalize_question(question)
    if not na:
        return "answer has no letters or digits"
    if na == nq:
        return "answer repeats the question"
    if re.fullmatch(r"(?:是|否|对|错|yes|no|ok|n/?a|none|null|无|略|同上|见上)", na):
        return "answer is a bare yes/no/placeholder"
    if len(set(na)) == 1 and len(na) > 3:
        return "answer repeats one character"
    return ""


def _context_dependent(question: str, chunk_title_hint: str = "") -> str:
    """Heuristic: deictic words with no antecedent inside the question itself."""
    q = normalize_numbers(question)
    m = _ZH_DEICTIC.search(q)
    if m:
        return f"deictic '{m.group(0)}'"
    m = _ZH_SCOPED_DOC.search(q)
    if m and "《" not in q:
        return f"'{m.group(0)}' without a document name"
    m = _EN_DEICTIC.search(q)
    if m:
        return f"deictic '{m.group(0).strip()}'"
    return ""


def _grounding(answer: str, chunk_text: str, min_cov: float) -> tuple[str, str]:
    """(reason, detail) when the answer says things the chunk does not, else ("", "")."""
    src = normalize_numbers(chunk_text)
    src_nums = set(numbers_in(chunk_text))
    for n in numbers_in(answer):
        if n not in src_nums:
            return UNGROUNDED_NUMBER, n
    ts = terms(answer)
    if ts:
        src_l = src.lower()
        hit = sum(t in src_l for t in ts)
        if hit / len(ts) < min_cov:
            return UNGROUNDED_TERMS, f"{hit}/{len(ts)} key terms in chunk"
    return "", ""


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity without numpy (few pairs per chunk)."""
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def check_candidate(candidate: Any, chunk_text: str, config: FilterConfig = FilterConfig()) -> tuple[str, str]:
    """Per-pair checks (everything except duplicates): (reason, detail) or ("", "")."""
    q = str(_field(candidate, "question", "") or "").strip()
    a = str(_field(candidate, "answer", "") or "").strip()
    start, end = _field(candidate, "start"), _field(candidate, "end")
    passage = chunk_text[start:end] if isinstance(start, int) and isinstance(end, int) and end > start else chunk_text
    if not (config.min_question_chars <= len(q) <= config.max_question_chars):
        return QUESTION_LENGTH, f"{len(q)} chars"
    if not (config.min_passage_chars <= len(passage) <= config.max_passage_chars):
        return PASSAGE_LENGTH, f"{len(passage)} chars"
    if looks_like_injection(q):
        return INSTRUCTION, "question carries an instruction to a model"
    if _REFUSAL.search(a):
        return REFUSAL, _REFUSAL.search(a).group(0)
    why = _meaningless(q, a)
    if why:
        return MEANINGLESS, why
    if len(a) < config.min_answer_chars:
        return ANSWER_TOO_SHORT, f"{len(a)} chars"
    if len(a) > config.max_answer_chars:
        return ANSWER_TOO_LONG, f"{len(a)} chars"
    reason, detail = _grounding(a, chunk_text, config.min_term_coverage)
    if reason:
        return reason, detail
    if config.check_context:
        why = _context_dependent(q)
        if why:
            return CONTEXT_DEPENDENT, why
    return "", ""


def apply_filters(
    candidates: Iterable[Any],
    chunk_text: str,
    config: FilterConfig = FilterConfig(),
    *,
    seen_questions: Iterable[str] = (),
    embed: EmbedFn | None = None,
) -> tuple[list[Any], list[Rejected], dict[str, int]]:
    """Split candidates into kept and rejected (with reasons); count rejections per filter.

    Candidates are objects or dicts with ``question``, ``answer`` and optionally the
    evidence span ``start``/``end``. ``seen_questions`` carries questions kept from
    earlier chunks so duplicates across a document are caught too. ``embed`` (texts →
    vectors) adds a semantic near-duplicate check on top of the text one.
    """
    kept: list[Any] = []
    rejected: list[Rejected] = []
    counts: Counter[str] = Counter({r: 0 for r in REASONS})
    seen_norm: set[str] = set()
    seen_grams: list[set[str]] = []
    for s in seen_questions:
        seen_norm.add(normalize_question(s))
        seen_grams.append(char_bigrams(s))
    kept_vecs: list[Sequence[float]] = []
    for c in candidates:
        reason, detail = check_candidate(c, chunk_text, config)
        q = str(_field(c, "question", "") or "")
        if not reason:
            nq = normalize_question(q)
            if nq in seen_norm:
                reason, detail = DUPLICATE, nq
            else:
                grams = char_bigrams(q)
                for g in seen_grams:
                    union = len(grams | g)
                    if union and len(grams & g) / union >= config.near_duplicate_jaccard:
                        reason, detail = NEAR_DUPLICATE, f"jaccard {len(grams & g) / union:.2f}"
                        break
        vec = None
        if not reason and embed is not None:
            vec = list(embed([q])[0])
            for v in kept_vecs:
                sim = _cosine(vec, v)
                if sim >= config.embedding_duplicate_cosine:
                    reason, detail = EMBEDDING_DUPLICATE, f"cosine {sim:.3f}"
                    break
        if reason:
            rejected.append(Rejected(c, reason, detail))
            counts[reason] += 1
            continue
        kept.append(c)
        seen_norm.add(normalize_question(q))
        seen_grams.append(char_bigrams(q))
        if vec is not None:
            kept_vecs.append(vec)
    return kept, rejected, dict(counts)
