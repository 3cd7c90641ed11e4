"""Answering a question from a domain's documents, with citations.

Three modes:

- ``grounded`` (the default): retrieve the ``k`` best passages (hybrid; BM25 when no encoder),
  and when retrieval is confident enough, ask the model to answer *only* from those numbered
  passages and to cite them as ``[1]``, ``[2]``. When retrieval finds nothing or its
  confidence is below the threshold, the answer is ``NOT_COVERED`` without calling the model:
  a small model asked about something its documents do not hold would make something up.
- ``model_only``: the fine-tuned model alone, asked exactly as SFT trained it (no retrieval,
  no citations): what evaluation compares with grounded answers.
- ``extractive``: no model at all: the most relevant sentence(s) of the best passage, with
  the query terms highlighted. Works on a machine that has only the index.

A citation's ``rank`` is the passage's number in the prompt (its retrieval rank), so an
answer's ``[n]`` marker points at the citation with rank n.

No Django; torch/transformers come in only through a Generator (``generation.py``), so
importing this module is cheap.
"""
from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference_app.engine.generation import (
    BACKENDS,
    GenerationError,
    GenerationSettings,
    Generator,
    LlamaCppGenerator,
    TransformersGenerator,
    load_generator,
    unload_generators,
)
from inference_app.engine.index import Hit, Passage, encode_queries, rerank
from inference_app.engine.textproc import has_cjk, tokenize
from training_app.engine.data import question_messages

MODES = ("grounded", "model_only", "extractive")
LANGUAGES = ("auto", "zh", "en")
NOT_COVERED = {"zh": "文档中没有涉及这个问题。", "en": "The documents do not cover this question."}

SYSTEM_PROMPTS = {
    "en": ("You answer questions using only the numbered passages below. Cite every passage you use by its "
           "number in square brackets, like [1] or [2]. Do not use anything you know from elsewhere. If the "
           "passages do not contain the answer, reply exactly: {not_covered}"),
    "zh": ("请只根据下面编号的资料回答问题，不要使用资料以外的知识。回答时用方括号标出所依据资料的编号，"
           "例如 [1]、[2]。如果资料中没有答案，请只回答：{not_covered}"),
}
USER_LABELS = {"en": ("Passages:", "Question:"), "zh": ("资料：", "问题：")}

# Function words that carry no evidence: left out of highlights, sentence scoring and the BM25
# confidence (a question is "covered" by its content words, not by "what is the").
STOPWORDS = frozenset("""
a an the is are was were be been being am do does did of to in on at for by with from as and or not no
what which who whom whose when where why how can could should would will shall may might must i you he
she it we they me my your our their this that these those there here if then than so any some about
please tell
的 了 是 在 和 与 及 或 吗 呢 吧 啊 呀 么 什么 怎么 怎样 怎么样 如何 哪 哪些 哪个 哪里 多少 几 为什么 请问
请 我 你 他 她 它 我们 你们 他们 这 那 这个 那个 这些 那些 有 没有 要 会 能 可以 就 都 也 还 又 被 把 对
""".split())

_MARKER = re.compile(r"[\[【]\s*(\d{1,3}(?:\s*[,，、;；]\s*\d{1,3})*)\s*[\]】]")
# A sentence ends at Chinese 。！？； (and a closing quote/bracket after it), at ASCII . ! ?
# followed by whitespace, the end or a CJK character (so E100.1 and 3.5 stay whole), or a line break.
_SENTENCE_END = re.compile(
    r"[。！？；]+[」』”’）)\]]*"
    r"|[.!?]+[\"'”’)\]]*(?=\s|$|[\u3400-\u9fff])"
    r"|\n+"
)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Citation:
    """One passage an answer rests on. ``quote``: the passage text (grounded) or the sentence(s)
    quoted (extractive); ``highlights``: (start, end) character spans in ``quote`` of the
    evidence (query terms, and the answer's words for a generated answer)."""

    passage_id: str
    rank: int  # the passage's number in the prompt = its retrieval rank (1-based)
    score: float  # the retrieval method's score
    document: str
    page: int | None
    quote: str
    highlights: tuple[tuple[int, int], ...] = ()
    document_id: str = ""
    heading_path: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"passage_id": self.passage_id, "rank": self.rank, "score": self.score, "document": self.document,
                "page": self.page, "quote": self.quote, "highlights": [list(h) for h in self.highlights],
                "document_id": self.document_id, "heading_path": list(self.heading_path)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Citation:
        page = d.get("page")
        return cls(str(d["passage_id"]), int(d.get("rank", 0)), float(d.get("score", 0.0)),
                   str(d.get("document", "") or ""), None if page is None else int(page), str(d.get("quote", "")),
                   tuple((int(s), int(e)) for s, e in d.get("highlights") or ()), str(d.get("document_id", "") or ""),
                   tuple(str(h) for h in d.get("heading_path") or ()))


@dataclass(frozen=True)
class Answer:
    """An answer and what it rests on. ``covered`` False: the documents do not answer the
    question (``text`` is ``NOT_COVERED``; ``citations`` show what retrieval found instead).
    ``retrieved_ids``: every passage retrieved, best first (for evaluation's recall)."""

    text: str
    mode: str
    covered: bool
    citations: tuple[Citation, ...]
    retrieval_ms: float = 0.0
    generation_ms: float = 0.0
    retrieved_ids: tuple[str, ...] = ()
    confidence: float | None = None  # retrieval_confidence; None when nothing was retrieved or measured
    model_id: str = ""  # the generator that wrote the text ("" for extractive / not covered)
    language: str = ""  # "zh" or "en": the language the answer was asked for

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "mode": self.mode, "covered": self.covered,
                "citations": [c.to_dict() for c in self.citations], "retrieval_ms": round(self.retrieval_ms, 3),
                "generation_ms": round(self.generation_ms, 3), "retrieved_ids": list(self.retrieved_ids),
                "confidence": self.confidence, "model_id": self.model_id, "language": self.language}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Answer:
        conf = d.get("confidence")
        return cls(str(d.get("text", "")), str(d.get("mode", "")), bool(d.get("covered", False)),
                   tuple(Citation.from_dict(c) for c in d.get("citations") or ()),
                   float(d.get("retrieval_ms", 0.0)), float(d.get("generation_ms", 0.0)),
                   tuple(str(i) for i in d.get("retrieved_ids") or ()), None if conf is None else float(conf),
                   str(d.get("model_id", "") or ""), str(d.get("language", "") or ""))


# --------------------------------------------------------------------------- text helpers


def detect_language(text: str, language: str = "auto") -> str:
    """"zh" when ``language`` says so or (auto) the text holds Chinese characters, else "en"."""
    if language not in LANGUAGES:
        raise ValueError(f"language: unknown language {language!r}; use one of {', '.join(LANGUAGES)}")
    if language != "auto":
        return language
    return "zh" if has_cjk(text or "") else "en"


def _index_language(index: Any) -> str:
    lang = str(getattr(index, "manifest", {}).get("language", "auto") or "auto")
    return lang if lang in LANGUAGES else "auto"


def content_terms(text: str, language: str = "auto") -> list[str]:
    """The distinct evidence-carrying tokens of ``text`` (textproc tokens, in order) without
    function words and single ASCII characters."""
    seen: dict[str, None] = {}
    for t in tokenize(text, language):
        if not t or t in STOPWORDS or (len(t) == 1 and t.isascii()):
            continue
        seen.setdefault(t, None)
    return list(seen)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of ``text`` (end punctuation included, surrounding
    whitespace excluded): Chinese ends at 。！？；, English at . ! ? before a space or the end."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((pos, m.end()))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def _normalised_with_map(text: str) -> tuple[str, list[int]]:
    """NFKC + lower-case ``text`` char by char, with the original index of every output char
    (so a term found in the normalised text maps back to a span of the original)."""
    chars: list[str] = []
    owner: list[int] = []
    for i, ch in enumerate(text):
        n = unicodedata.normalize("NFKC", ch).lower()
        chars.extend(n)
        owner.extend([i] * len(n))
    return "".join(chars), owner


def term_spans(text: str, terms: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Sorted (start, end) spans of ``terms`` (lower-case tokens) in ``text``, matched case- and
    width-insensitively; ASCII terms only as whole words (``in`` does not light up ``inverter``).
    Overlapping spans are merged; touching ones stay separate (one span per term)."""
    if not text or not terms:
        return ()
    norm, owner = _normalised_with_map(text)
    found: list[tuple[int, int]] = []
    for term in set(terms):
        if not term:
            continue
        if term.isascii():
            pattern = re.compile(r"(?<![a-z0-9])" + re.escape(term) + r"(?![a-z0-9])")
        else:
            pattern = re.compile(re.escape(term))
        for m in pattern.finditer(norm):
            found.append((owner[m.start()], owner[m.end() - 1] + 1))
    found.sort()
    merged: list[list[int]] = []
    for s, e in found:
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return tuple((s, e) for s, e in merged)


def cited_numbers(text: str) -> list[int]:
    """The passage numbers an answer cites, in order of first appearance: ``[1]``, ``[1, 3]``,
    ``[2][3]``, ``【2】``."""
    out: dict[int, None] = {}
    for m in _MARKER.finditer(text or ""):
        for n in re.split(r"\s*[,，、;；]\s*", m.group(1)):
            out.setdefault(int(n), None)
    return list(out)


def _comparable(text: str) -> str:
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text or "").lower())


def is_not_covered(text: str) -> bool:
    """True when the answer is (or starts with) the NOT_COVERED sentence of either language."""
    t = _comparable(text)
    return bool(t) and any(t.startswith(_comparable(s)) for s in NOT_COVERED.values())


def _strip_markers(text: str) -> str:
    return _MARKER.sub(" ", text or "")


# --------------------------------------------------------------------------- prompts


def _source(p: Passage, lang: str) -> str:
    parts = [p.document] if p.document else []
    if p.page is not None:
        parts.append(f"第{p.page}页" if lang == "zh" else f"p. {p.page}")
    if not parts:
        return " "
    return f"（{'，'.join(parts)}）" if lang == "zh" else f" ({', '.join(parts)}) "


def grounded_messages(question: str, passages: Sequence[Passage], *, language: str = "auto",
                      history: Sequence[Mapping[str, str]] | None = None,
                      max_passage_chars: int | None = None) -> list[dict[str, str]]:
    """The RAG prompt: a system message (answer only from the numbered passages, cite them as
    [n], else reply exactly NOT_COVERED) and a user message with the passages
    ("[1] (document, p. N) text"; Chinese: "[1]（document，第N页）text") and the question.
    Instructions are Chinese when the question is (``language`` "auto"). ``history``: earlier
    turns of the conversation, placed between the two. ``max_passage_chars`` cuts long passages."""
    lang = detect_language(question, language)
    system = SYSTEM_PROMPTS[lang].format(not_covered=NOT_COVERED[lang])
    blocks = []
    for n, p in enumerate(passages, start=1):
        text = " ".join((p.text or "").split())
        if max_passage_chars is not None and len(text) > max_passage_chars:
            text = text[:max_passage_chars].rstrip() + "…"
        blocks.append(f"[{n}]{_source(p, lang)}{text}")
    head, ask = USER_LABELS[lang]
    user = f"{head}\n" + "\n\n".join(blocks) + f"\n\n{ask}{'' if lang == 'zh' else ' '}{question.strip()}"
    msgs = [{"role": "system", "content": system}]
    msgs.extend(dict(m) for m in question_messages("", history=history)[:-1])
    msgs.append({"role": "user", "content": user})
    return msgs


def model_only_messages(question: str, *, history: Sequence[Any] | None = None,
                        system: str | None = None) -> list[dict[str, str]]:
    """Exactly what SFT trained on (``training_app.engine.data.question_messages``)."""
    return question_messages(question, system=system, history=history)


# --------------------------------------------------------------------------- retrieval


def retrieval_confidence(hits: Sequence[Hit], index: Any, query: str, *, encoder: Any = None,
                         query_vec: Any = None) -> float:
    """How well the retrieved passages match the query, in [0, 1] and comparable across queries
    (unlike BM25 or RRF scores), for the "is this covered at all" threshold.

    - With an encoder (or a ``query_vec``) on an index that has embeddings: the cosine of the
      query embedding to the retrieved passages' embeddings, the best of them, clipped to [0, 1].
    - BM25 only: the share of the query's content tokens (``textproc.tokenize``, function words
      left out; all tokens when the query has only function words) that appear in a retrieved
      passage, the best of them.

    "The best of them" is the top passage in practice; taking the maximum keeps a dense hit
    ranked second by fusion from being ignored. 0 when there are no hits.
    """
    hits = list(hits)
    if not hits:
        return 0.0
    if getattr(index, "has_embeddings", False) and (encoder is not None or query_vec is not None):
        import numpy as np

        if query_vec is None:
            index.check_encoder(encoder)
            query_vec = encode_queries(encoder, [query])[0]
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1)
        rows = [index.row_of(h.id) for h in hits]
        sims = np.einsum("ij,j->i", np.asarray(index.embeddings[rows], dtype=np.float32), q)
        return float(min(1.0, max(0.0, float(sims.max()))))
    lang = _index_language(index)
    terms = set(content_terms(query, lang)) or {t for t in tokenize(query, lang) if t}
    if not terms:
        return 0.0
    best = 0.0
    for h in hits:
        ptoks = set(tokenize(index.passage(h.id).text, lang))
        best = max(best, len(terms & ptoks) / len(terms))
    return float(best)


def _retrieve(question: str, index: Any, *, encoder: Any, weights: Any, k: int, method: str,
              reranker: Any, rerank_top_n: int) -> tuple[list[Hit], float]:
    """(hits, confidence); the query is embedded once for both."""
    depth = max(k, rerank_top_n) if reranker is not None else k
    query_vec = None
    if method in ("hybrid", "dense") and encoder is not None and getattr(index, "has_embeddings", False):
        index.check_encoder(encoder)
        query_vec = encode_queries(encoder, [question])[0]
    if method == "hybrid" and query_vec is not None:
        from inference_app.engine.fusion import FusionWeights

        hits = index.hybrid(question, depth, encoder=None, weights=weights or FusionWeights(), query_vec=query_vec)
    elif method == "dense" and query_vec is not None:
        hits = index.dense_vec(query_vec, depth)
    else:
        hits = index.search(question, depth, method=method, encoder=encoder, weights=weights)
    if reranker is not None and hits:
        hits = rerank(question, hits, index, reranker, top_n=depth)
    hits = list(hits)[:k]
    return hits, retrieval_confidence(hits, index, question, encoder=encoder, query_vec=query_vec)


def _citation(hit: Hit, passage: Passage, quote: str, terms: Sequence[str]) -> Citation:
    return Citation(passage_id=passage.id, rank=hit.rank, score=float(hit.score), document=passage.document,
                    page=passage.page, quote=quote, highlights=term_spans(quote, terms),
                    document_id=passage.document_id, heading_path=passage.heading_path)


def passage_citations(hits: Sequence[Hit], index: Any, question: str, *, answer: str = "") -> tuple[Citation, ...]:
    """Citations quoting the whole passages, highlighting the question's content terms and those
    of ``answer`` (its words that come from the passage are the evidence)."""
    lang = _index_language(index)
    terms = content_terms(question, lang)
    if answer and not is_not_covered(answer):
        terms = list(dict.fromkeys(terms + content_terms(_strip_markers(answer), lang)))
    out = []
    for h in hits:
        p = index.passage(h.id)
        out.append(_citation(h, p, p.text, terms))
    return tuple(out)


# --------------------------------------------------------------------------- extractive


def best_sentences(text: str, terms: Sequence[str], max_sentences: int = 2) -> str:
    """The ``max_sentences`` sentences of ``text`` holding the most distinct ``terms`` (ties: more
    matched characters, then the earlier sentence), in text order; adjacent ones keep the text
    between them, others are joined with " … ". The first sentence(s) when none holds a term."""
    spans = split_sentences(text)
    if not spans:
        return text.strip()
    scored = []
    for i, (s, e) in enumerate(spans):
        found = term_spans(text[s:e], terms)
        distinct = len({text[s:e][a:b].lower() for a, b in found})
        scored.append((distinct, sum(b - a for a, b in found), -i, i))
    n = max(1, int(max_sentences))
    chosen = sorted(i for *_, i in sorted(scored, reverse=True)[:n] if scored[i][0] > 0)
    if not chosen:
        chosen = list(range(min(n, len(spans))))
    out = ""
    prev = None
    for i in chosen:
        s, e = spans[i]
        if prev is None:
            out = text[s:e]
        elif i == prev + 1:
            out += text[spans[prev][1]:e]
        else:
            out += " … " + text[s:e]
        prev = i
    return out


def extractive_answer(question: str, hits: Sequence[Hit], index: Any, *, max_sentences: int = 2,
                      language: str = "auto", retrieval_ms: float = 0.0, confidence: float | None = None) -> Answer:
    """No model: the best (first) hit's most relevant sentence(s) as the answer, cited with the
    query terms found there highlighted. Not covered (NOT_COVERED text) when there is no hit."""
    lang = detect_language(question, language)
    hits = list(hits)
    ids = tuple(h.id for h in hits)
    if not hits:
        return Answer(NOT_COVERED[lang], "extractive", False, (), retrieval_ms, 0.0, ids, confidence, "", lang)
    t0 = time.perf_counter()
    top = hits[0]
    passage = index.passage(top.id)
    terms = content_terms(question, _index_language(index))
    quote = best_sentences(passage.text, terms, max_sentences)
    citation = _citation(top, passage, quote, terms)
    ms = (time.perf_counter() - t0) * 1000
    return Answer(quote, "extractive", True, (citation,), retrieval_ms, ms, ids, confidence, "", lang)


# --------------------------------------------------------------------------- answering


def _check(mode: str, index: Any, generator: Any, k: int, threshold: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: unknown answering mode {mode!r}; use one of {', '.join(MODES)}")
    if mode in ("grounded", "extractive") and index is None:
        raise ValueError(f"index: the {mode} mode answers from the domain's retrieval index; build it first "
                         "(or use mode 'model_only')")
    if mode in ("grounded", "model_only") and generator is None:
        raise ValueError(f"generator: the {mode} mode needs a model; activate a model version "
                         "(or use mode 'extractive', which needs none)")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: must be a whole number of at least 1, got {k!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold: must be between 0 and 1, got {threshold!r}")


@dataclass
class _Plan:
    """One question's state between retrieval and generation."""

    question: str
    lang: str
    hits: list[Hit] = field(default_factory=list)
    confidence: float | None = None
    retrieval_ms: float = 0.0
    messages: list[dict] | None = None  # set when the generator must be asked
    done: Answer | None = None  # set when no generation is needed


def _plan(question: str, *, mode: str, index: Any, encoder: Any, weights: Any, k: int, threshold: float,
          language: str, method: str, reranker: Any, rerank_top_n: int, max_sentences: int,
          history: Sequence[Any] | None, max_passage_chars: int | None) -> _Plan:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question: empty question")
    question = question.strip()
    plan = _Plan(question, detect_language(question, language))
    if mode == "model_only":
        plan.messages = model_only_messages(question, history=history)
        return plan
    t0 = time.perf_counter()
    plan.hits, plan.confidence = _retrieve(question, index, encoder=encoder, weights=weights, k=k, method=method,
                                           reranker=reranker, rerank_top_n=rerank_top_n)
    plan.retrieval_ms = (time.perf_counter() - t0) * 1000
    ids = tuple(h.id for h in plan.hits)
    if not plan.hits or plan.confidence < threshold:
        plan.done = Answer(NOT_COVERED[plan.lang], mode, False, passage_citations(plan.hits, index, question),
                           plan.retrieval_ms, 0.0, ids, plan.confidence if plan.hits else None, "", plan.lang)
    elif mode == "extractive":
        plan.done = extractive_answer(question, plan.hits, index, max_sentences=max_sentences, language=plan.lang,
                                      retrieval_ms=plan.retrieval_ms, confidence=plan.confidence)
    else:
        passages = [index.passage(h.id) for h in plan.hits]
        plan.messages = grounded_messages(question, passages, language=plan.lang, history=history,
                                          max_passage_chars=max_passage_chars)
    return plan


def _finish(plan: _Plan, text: str, *, mode: str, index: Any, generator: Any, generation_ms: float) -> Answer:
    text = (text or "").strip()
    ids = tuple(h.id for h in plan.hits)
    model_id = str(getattr(generator, "model_id", "") or "")
    if mode == "model_only":
        covered = bool(text) and not is_not_covered(text)
        return Answer(text, mode, covered, (), 0.0, generation_ms, (), None, model_id, plan.lang)
    if not text or is_not_covered(text):  # the model found no answer in the passages
        return Answer(NOT_COVERED[plan.lang], mode, False, passage_citations(plan.hits, index, plan.question),
                      plan.retrieval_ms, generation_ms, ids, plan.confidence, model_id, plan.lang)
    by_number = {n: h for n, h in enumerate(plan.hits, start=1)}
    cited = [by_number[n] for n in cited_numbers(text) if n in by_number]
    citations = passage_citations(cited or plan.hits, index, plan.question, answer=text)
    return Answer(text, mode, True, citations, plan.retrieval_ms, generation_ms, ids, plan.confidence, model_id,
                  plan.lang)


_DEFAULT_SETTINGS = GenerationSettings()


def answer_question(question: str, *, mode: str = "grounded", index: Any = None, encoder: Any = None,
                    weights: Any = None, generator: Generator | None = None, k: int = 3, threshold: float = 0.0,
                    settings: GenerationSettings = _DEFAULT_SETTINGS, language: str = "auto",
                    method: str = "hybrid", reranker: Any = None, rerank_top_n: int = 20, max_sentences: int = 2,
                    history: Sequence[Any] | None = None, max_passage_chars: int | None = None) -> Answer:
    """Answer one question (see the module docstring for the modes).

    grounded: retrieve ``k`` passages (``method`` hybrid = BM25 when ``encoder`` is None;
    ``reranker`` reorders the top ``rerank_top_n`` first); no hit or
    ``retrieval_confidence < threshold`` → not covered, NOT_COVERED text, citations of what was
    found, and the generator is not called. Else the generator answers from
    ``grounded_messages``; citations are the passages its ``[n]`` markers name, or all ``k`` when
    it names none; a reply of NOT_COVERED (or nothing) makes the answer not covered.
    ``language``: "auto" (the question's), "zh" or "en" for the instructions and NOT_COVERED.
    """
    _check(mode, index, generator, k, threshold)
    plan = _plan(question, mode=mode, index=index, encoder=encoder, weights=weights, k=k, threshold=threshold,
                 language=language, method=method, reranker=reranker, rerank_top_n=rerank_top_n,
                 max_sentences=max_sentences, history=history, max_passage_chars=max_passage_chars)
    if plan.done is not None:
        return plan.done
    t0 = time.perf_counter()
    text = generator.generate([plan.messages], settings)[0]
    return _finish(plan, text, mode=mode, index=index, generator=generator,
                   generation_ms=(time.perf_counter() - t0) * 1000)


def answer_batch(questions: Sequence[str], *, mode: str = "grounded", index: Any = None, encoder: Any = None,
                 weights: Any = None, generator: Generator | None = None, k: int = 3, threshold: float = 0.0,
                 settings: GenerationSettings = _DEFAULT_SETTINGS, language: str = "auto", method: str = "hybrid",
                 reranker: Any = None, rerank_top_n: int = 20, max_sentences: int = 2,
                 max_passage_chars: int | None = None) -> list[Answer]:
    """``answer_question`` for many questions (evaluation): retrieval per question, then one
    ``generator.generate`` call for all that need the model (the backend batches them; greedy
    when ``settings.temperature == 0``). Each answer's ``generation_ms`` is its share of that
    call's time."""
    _check(mode, index, generator, k, threshold)
    plans = [_plan(q, mode=mode, index=index, encoder=encoder, weights=weights, k=k, threshold=threshold,
                   language=language, method=method, reranker=reranker, rerank_top_n=rerank_top_n,
                   max_sentences=max_sentences, history=None, max_passage_chars=max_passage_chars)
             for q in questions]
    todo = [p for p in plans if p.done is None]
    texts: list[str] = []
    per_ms = 0.0
    if todo:
        t0 = time.perf_counter()
        texts = list(generator.generate([p.messages for p in todo], settings))
        if len(texts) != len(todo):
            raise GenerationError(f"{getattr(generator, 'model_id', 'the generator')} returned {len(texts)} answers "
                                  f"for {len(todo)} prompts")
        per_ms = (time.perf_counter() - t0) * 1000 / len(todo)
    generated = iter(texts)
    return [p.done if p.done is not None
            else _finish(p, next(generated), mode=mode, index=index, generator=generator, generation_ms=per_ms)
            for p in plans]


def stream_answer(question: str, *, mode: str = "grounded", index: Any = None, encoder: Any = None,
                  weights: Any = None, generator: Generator | None = None, k: int = 3, threshold: float = 0.0,
                  settings: GenerationSettings = _DEFAULT_SETTINGS, language: str = "auto", method: str = "hybrid",
                  reranker: Any = None, rerank_top_n: int = 20, max_sentences: int = 2,
                  history: Sequence[Any] | None = None, max_passage_chars: int | None = None) -> Iterator[dict]:
    """Events for a chat page (e.g. server-sent events):

    1. ``{"type": "citations", "citations": [...], "covered": bool, "confidence": float|None,
       "retrieved_ids": [...]}`` — what retrieval found (grounded and extractive; model_only has
       no retrieval and skips it);
    2. ``{"type": "token", "text": "..."}`` — pieces of the answer as they come (one piece with
       the whole text when nothing is generated: not covered, extractive);
    3. ``{"type": "done", "answer": Answer.to_dict()}`` — the final answer. Its text can differ
       from the pieces' concatenation (a model reply of NOT_COVERED becomes the canonical
       sentence) and its citations narrow to the passages the answer cites: show it at the end.
    """
    _check(mode, index, generator, k, threshold)
    plan = _plan(question, mode=mode, index=index, encoder=encoder, weights=weights, k=k, threshold=threshold,
                 language=language, method=method, reranker=reranker, rerank_top_n=rerank_top_n,
                 max_sentences=max_sentences, history=history, max_passage_chars=max_passage_chars)
    if mode != "model_only":
        shown = plan.done.citations if plan.done is not None else passage_citations(plan.hits, index, plan.question)
        yield {"type": "citations", "citations": [c.to_dict() for c in shown],
               "covered": plan.done.covered if plan.done is not None else True, "confidence": plan.confidence,
               "retrieved_ids": [h.id for h in plan.hits]}
    if plan.done is not None:
        yield {"type": "token", "text": plan.done.text}
        yield {"type": "done", "answer": plan.done.to_dict()}
        return
    t0 = time.perf_counter()
    pieces = []
    for piece in generator.stream(plan.messages, settings):
        if piece:
            pieces.append(piece)
            yield {"type": "token", "text": piece}
    answer = _finish(plan, "".join(pieces), mode=mode, index=index, generator=generator,
                     generation_ms=(time.perf_counter() - t0) * 1000)
    yield {"type": "done", "answer": answer.to_dict()}


__all__ = [
    "BACKENDS",
    "LANGUAGES",
    "MODES",
    "NOT_COVERED",
    "Answer",
    "Citation",
    "GenerationError",
    "GenerationSettings",
    "Generator",
    "LlamaCppGenerator",
    "TransformersGenerator",
    "answer_batch",
    "answer_question",
    "best_sentences",
    "cited_numbers",
    "content_terms",
    "detect_language",
    "extractive_answer",
    "grounded_messages",
    "is_not_covered",
    "load_generator",
    "model_only_messages",
    "passage_citations",
    "retrieval_confidence",
    "split_sentences",
    "stream_answer",
    "term_spans",
    "unload_generators",
]
