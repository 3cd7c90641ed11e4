"""Dataset records, exporters and importers for the training tools users bring.

Every exporter returns text (JSONL/CSV/JSON) and every importer takes text or bytes and
returns records plus per-row errors, so a task can write the file atomically where it likes
and a user uploading a broken file sees *which line* is wrong instead of a stack trace.
Round trips are exact for the fields each format carries (documented per format).
No Django, no network.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QARecord:
    """One question/answer pair with where it came from (the unit SFT and eval use)."""

    question: str
    answer: str
    source_chunk_id: str | None = None  # the chunk the answer is grounded in, if known
    chunk_text: str = ""  # that chunk's text (exported as context on request)
    document: str = ""  # document name/id the chunk belongs to
    heading_path: tuple[str, ...] = ()  # section path inside the document
    held_out: bool = False  # frozen test pair: never trained on
    tags: tuple[str, ...] = ()  # free labels (difficulty, recipe, reviewer notes)
    group: str | None = None  # paraphrases of one source question share this key
    system: str = ""  # system prompt for chat formats
    history: tuple[tuple[str, str], ...] = ()  # earlier (user, assistant) turns


@dataclass(frozen=True)
class RetrievalRecord:
    """A query with its positive passage and mined negatives (embedding training unit)."""

    query: str
    positive_id: str
    positive_text: str
    negatives: tuple[tuple[str, str], ...] = ()  # (chunk id, text), hardest first
    score: float | None = None  # relevance of the positive (teacher/label score)


@dataclass(frozen=True)
class EntitySpan:
    """One entity mention; ``end`` is inclusive, as in CLUENER."""

    label: str
    start: int
    end: int
    mention: str


@dataclass(frozen=True)
class EntityRecord:
    """A sentence and its entity spans (entity-extraction training unit)."""

    text: str
    spans: tuple[EntitySpan, ...] = ()  # in source order (label, then mention, then span)

    @property
    def entities(self) -> dict[str, list[list[int]]]:
        """``{type: [[start, end_inclusive], ...]}`` view used by metrics."""
        out: dict[str, list[list[int]]] = {}
        for s in self.spans:
            out.setdefault(s.label, []).append([s.start, s.end])
        return out


@dataclass(frozen=True)
class RowError:
    """Why one row of an uploaded file was skipped; ``line`` is 1-based as editors show."""

    line: int
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """Records that parsed, rows that did not, and a whole-file error if nothing could."""

    records: tuple[Any, ...] = ()  # QARecord / RetrievalRecord / EntityRecord
    errors: tuple[RowError, ...] = ()  # per-row problems; good rows still import
    file_error: str | None = None  # unsupported or garbled file: no rows were read

    @property
    def ok(self) -> bool:
        return self.file_error is None and not self.errors


@dataclass(frozen=True)
class ImportConfig:
    """Limits that keep an upload from exhausting memory or smuggling in junk."""

    max_file_bytes: int = 100 * 1024 * 1024  # refuse bigger uploads outright
    max_rows: int = 200_000  # rows beyond this are reported, not read
    max_question_chars: int = 4_000  # a longer "question" is almost surely a paste error
    max_answer_chars: int = 20_000  # answers may quote whole clauses, but not books
    max_field_chars: int = 50_000  # any other field (context, document)
    max_xlsx_uncompressed: int = 500 * 1024 * 1024  # zip-bomb guard, sum of declared sizes
    max_xlsx_entries: int = 10_000  # zip-bomb guard, entry count
    max_xlsx_ratio: int = 200  # zip-bomb guard, per-entry compression ratio


class FormatError(ValueError):
    """A record cannot be written in the asked format (e.g. bad entity span)."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text to a temp name beside ``path`` and rename, so readers never see half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _iter_jsonl(text: str) -> Iterable[tuple[int, Any, str | None]]:
    """Yield (line number, parsed object, error) for each non-blank line.

    Splits on "\n" only: ``str.splitlines`` would also split inside strings holding U+2028
    or U+0085, which ``json.dumps(ensure_ascii=False)`` leaves unescaped.
    """
    for no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield no, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield no, None, f"bad JSON: {exc.msg} (column {exc.colno})"


def _iter_json_array(text: str) -> Iterable[tuple[int, Any, str | None]]:
    """Yield (line number, item, error) for a top-level JSON array (a ``.json`` export).

    Items are decoded one by one so each error names the line its item starts on; after a
    syntax error nothing further can be trusted, so it is the last thing yielded.
    """
    dec = json.JSONDecoder()
    ws = re.compile(r"[\s,]*")
    pos = ws.match(text, text.index("[") + 1).end()
    while pos < len(text) and text[pos] != "]":
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield line, None, f"bad JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            return
        yield line, obj, None
        pos = ws.match(text, pos).end()


def _text_of(data: str | bytes) -> str:
    """Exporters' output comes back as str; uploads may come as UTF-8 bytes."""
    if isinstance(data, bytes):
        return data.decode("utf-8-sig")
    return data.removeprefix("\ufeff")


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# --------------------------------------------------------------------------------------
# Alpaca JSONL (LLaMA-Factory "alpaca" formatting)
# Carries: question, answer, system, history, and chunk_text when exported with context.
# --------------------------------------------------------------------------------------


def export_alpaca(records: Iterable[QARecord], *, with_context: bool = False) -> str:
    """Alpaca JSONL; ``system``/``history`` keys appear on every row when any row has them,
    because datasets-based loaders infer one schema from all rows."""
    recs = list(records)
    any_system = any(r.system for r in recs)
    any_history = any(r.history for r in recs)
    rows = []
    for r in recs:
        row: dict[str, Any] = {
            "instruction": r.question,
            "input": r.chunk_text if with_context else "",
            "output": r.answer,
        }
        if any_system:
            row["system"] = r.system
        if any_history:
            row["history"] = [[u, a] for u, a in r.history]
        rows.append(row)
    return _jsonl(rows)


def import_alpaca(data: str | bytes) -> ImportResult:
    """Read Alpaca JSONL back into QARecords (``input`` becomes ``chunk_text``)."""
    recs: list[QARecord] = []
    errs: list[RowError] = []
    for no, obj, err in _iter_jsonl(_text_of(data)):
        if err:
            errs.append(RowError(no, err))
            continue
        if not isinstance(obj, dict):
            errs.append(RowError(no, "expected a JSON object"))
            continue
        problem = _missing_or_wrong(obj, ("instruction", "output"), ("input", "system"))
        if problem:
            errs.append(RowError(no, problem))
            continue
        hist = obj.get("history") or []
        if not (isinstance(hist, list) and all(_str_list(t) and len(t) == 2 for t in hist)):
            errs.append(RowError(no, "'history' must be a list of [user, assistant] pairs"))
            continue
        recs.append(
            QARecord(
                question=obj["instruction"],
                answer=obj["output"],
                chunk_text=obj.get("input") or "",
                system=obj.get("system") or "",
                history=tuple((u, a) for u, a in hist),
            )
        )
    return ImportResult(tuple(recs), tuple(errs))


def _missing_or_wrong(obj: dict[str, Any], required: Sequence[str], optional: Sequence[str]) -> str | None:
    for key in required:
        if key not in obj:
            return f"missing field '{key}'"
        if not _is_str(obj[key]):
            return f"'{key}' must be a string, got {type(obj[key]).__name__}"
        if not obj[key].strip():
            return f"'{key}' is empty"
    for key in optional:
        if obj.get(key) is not None and not _is_str(obj[key]):
            return f"'{key}' must be a string, got {type(obj[key]).__name__}"
    return None


# --------------------------------------------------------------------------------------
# ShareGPT "messages" JSONL (OpenAI-style roles)
# Carries: question, answer, system, history, and chunk_text when exported with context.
# --------------------------------------------------------------------------------------

CONTEXT_SEPARATOR = "\n\n"  # between the context block and the question in a user turn
CONTEXT_PREFIX = "Context:\n"  # marks the context so import can split it off again
QUESTION_PREFIX = "Question:\n"


def _user_turn(r: QARecord, with_context: bool) -> str:
    if with_context and r.chunk_text:
        return f"{CONTEXT_PREFIX}{r.chunk_text}{CONTEXT_SEPARATOR}{QUESTION_PREFIX}{r.question}"
    return r.question


def _split_user_turn(content: str) -> tuple[str, str]:
    """Inverse of ``_user_turn``: (chunk_text, question)."""
    if content.startswith(CONTEXT_PREFIX):
        marker = CONTEXT_SEPARATOR + QUESTION_PREFIX
        idx = content.rfind(marker)
        if idx >= 0:
            return content[len(CONTEXT_PREFIX) : idx], content[idx + len(marker) :]
    return "", content


def export_sharegpt(records: Iterable[QARecord], *, with_context: bool = False) -> str:
    """``{"messages": [{"role", "content"}, ...]}`` JSONL: system?, history turns, question, answer."""
    rows = []
    for r in records:
        msgs = []
        if r.system:
            msgs.append({"role": "system", "content": r.system})
        for u, a in r.history:
            msgs.append({"role": "user", "content": u})
            msgs.append({"role": "assistant", "content": a})
        msgs.append({"role": "user", "content": _user_turn(r, with_context)})
        msgs.append({"role": "assistant", "content": r.answer})
        rows.append({"messages": msgs})
    return _jsonl(rows)


def import_sharegpt(data: str | bytes) -> ImportResult:
    """Read messages JSONL; the last user/assistant pair is the QA pair, earlier ones history."""
    recs: list[QARecord] = []
    errs: list[RowError] = []
    for no, obj, err in _iter_jsonl(_text_of(data)):
        if err:
            errs.append(RowError(no, err))
            continue
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(msgs, list) or not msgs:
            errs.append(RowError(no, "missing or empty 'messages' list"))
            continue
        if not all(isinstance(m, dict) and _is_str(m.get("role")) and _is_str(m.get("content")) for m in msgs):
            errs.append(RowError(no, "every message needs string 'role' and 'content'"))
            continue
        system = ""
        if msgs[0]["role"] == "system":
            system, msgs = msgs[0]["content"], msgs[1:]
        roles = [m["role"] for m in msgs]
        if len(roles) < 2 or len(roles) % 2 or roles != ["user", "assistant"] * (len(roles) // 2):
            errs.append(RowError(no, "messages must alternate user/assistant after an optional system"))
            continue
        turns = [(msgs[i]["content"], msgs[i + 1]["content"]) for i in range(0, len(msgs), 2)]
        chunk_text, question = _split_user_turn(turns[-1][0])
        if not question.strip() or not turns[-1][1].strip():
            errs.append(RowError(no, "empty question or answer"))
            continue
        recs.append(
            QARecord(
                question=question,
                answer=turns[-1][1],
                chunk_text=chunk_text,
                system=system,
                history=tuple(turns[:-1]),
            )
        )
    return ImportResult(tuple(recs), tuple(errs))


# --------------------------------------------------------------------------------------
# LLaMA-Factory dataset_info.json entries (data/README.md of hiyouga/LLaMA-Factory)
# --------------------------------------------------------------------------------------

SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def llamafactory_dataset_info(
    name: str, file_name: str, *, formatting: str = "sharegpt", with_system: bool = True, with_history: bool = False
) -> dict[str, Any]:
    """One ``{name: entry}`` for LLaMA-Factory's ``dataset_info.json`` matching our exporters."""
    if formatting == "sharegpt":
        entry: dict[str, Any] = {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": dict(SHAREGPT_TAGS),
        }
    elif formatting == "alpaca":
        cols = {"prompt": "instruction", "query": "input", "response": "output"}
        if with_system:
            cols["system"] = "system"
        if with_history:
            cols["history"] = "history"
        entry = {"file_name": file_name, "formatting": "alpaca", "columns": cols}
    else:
        raise FormatError(f"unknown LLaMA-Factory formatting {formatting!r}")
    return {name: entry}


# --------------------------------------------------------------------------------------
# sentence-transformers: pairs, triplets, scored pairs (JSONL and CSV)
# Carries: pairs (query, positive_text); triplets (+ negative texts); scored (+ score).
# --------------------------------------------------------------------------------------

ST_COLUMNS = {
    "pairs": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"),
    "scored": ("sentence1", "sentence2", "score"),
}


def _st_rows(records: Iterable[RetrievalRecord], kind: str) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for r in records:
        if kind == "pairs":
            rows.append([r.query, r.positive_text])
        elif kind == "triplets":
            rows.extend([r.query, r.positive_text, text] for _, text in r.negatives)
        elif kind == "scored":
            if r.score is None:
                raise FormatError(f"scored pairs need a score (query {r.query[:40]!r})")
            rows.append([r.query, r.positive_text, float(r.score)])
        else:
            raise FormatError(f"unknown sentence-transformers layout {kind!r}")
    return rows


def export_sentence_transformers(records: Iterable[RetrievalRecord], kind: str = "pairs", *, fmt: str = "jsonl") -> str:
    """Columns named as sentence-transformers' losses expect; triplets: one row per negative."""
    rows = _st_rows(records, kind)
    cols = ST_COLUMNS[kind]
    if fmt == "jsonl":
        return _jsonl(dict(zip(cols, r)) for r in rows)
    if fmt == "csv":
        return _csv(cols, ([*r[:2], repr(r[2])] if kind == "scored" else r for r in rows))
    raise FormatError(f"unknown file format {fmt!r}")


def import_sentence_transformers(data: str | bytes, kind: str = "pairs", *, fmt: str = "jsonl") -> ImportResult:
    """Inverse of the exporter; consecutive triplet rows with one anchor+positive merge back."""
    cols = ST_COLUMNS[kind]
    rows: list[tuple[int, dict[str, Any]]] = []
    errs: list[RowError] = []
    text = _text_of(data)
    if fmt == "jsonl":
        for no, obj, err in _iter_jsonl(text):
            if err:
                errs.append(RowError(no, err))
            elif not isinstance(obj, dict):
                errs.append(RowError(no, "expected a JSON object"))
            else:
                rows.append((no, obj))
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in cols if c not in (reader.fieldnames or [])]
        if missing:
            return ImportResult(file_error=f"missing column(s): {', '.join(missing)}")
        for row in reader:
            rows.append((reader.line_num, dict(row)))
    else:
        raise FormatError(f"unknown file format {fmt!r}")

    recs: list[RetrievalRecord] = []
    for no, obj in rows:
        text_cols = cols[:2] if kind == "scored" else cols
        problem = _missing_or_wrong(obj, text_cols, ())
        if problem:
            errs.append(RowError(no, problem))
            continue
        if kind == "pairs":
            recs.append(RetrievalRecord(obj["anchor"], "", obj["positive"]))
        elif kind == "triplets":
            neg = ("", obj["negative"])
            last = recs[-1] if recs else None
            if last and last.query == obj["anchor"] and last.positive_text == obj["positive"]:
                recs[-1] = RetrievalRecord(last.query, "", last.positive_text, (*last.negatives, neg))
            else:
                recs.append(RetrievalRecord(obj["anchor"], "", obj["positive"], (neg,)))
        else:
            score = _as_score(obj.get("score"))
            if score is None:
                errs.append(RowError(no, "'score' must be a finite number"))
                continue
            recs.append(RetrievalRecord(obj["sentence1"], "", obj["sentence2"], score=score))
    return ImportResult(tuple(recs), tuple(sorted(errs, key=lambda e: e.line)))


def _as_score(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------------------
# FlagEmbedding JSONL: {"query", "pos": [..], "neg": [..], "pos_scores"?, "neg_scores"?, "prompt"?}
# Carries: query, positive_text, negative texts, score (as pos_scores[0]).
# --------------------------------------------------------------------------------------


def export_flagembedding(
    records: Iterable[RetrievalRecord], *, prompt: str | None = None, neg_scores: Sequence[Sequence[float]] | None = None
) -> str:
    """FlagEmbedding fine-tuning rows; ``prompt`` is the query instruction (e.g. bge's)."""
    rows = []
    for i, r in enumerate(records):
        row: dict[str, Any] = {"query": r.query, "pos": [r.positive_text], "neg": [t for _, t in r.negatives]}
        if r.score is not None:
            row["pos_scores"] = [float(r.score)]
        if neg_scores is not None:
            row["neg_scores"] = [float(s) for s in neg_scores[i]]
        if prompt is not None:
            row["prompt"] = prompt
        rows.append(row)
    return _jsonl(rows)


def import_flagembedding(data: str | bytes) -> ImportResult:
    """One record per positive (FlagEmbedding allows several ``pos`` per query)."""
    recs: list[RetrievalRecord] = []
    errs: list[RowError] = []
    for no, obj, err in _iter_jsonl(_text_of(data)):
        if err:
            errs.append(RowError(no, err))
            continue
        if not isinstance(obj, dict):
            errs.append(RowError(no, "expected a JSON object"))
            continue
        q, pos, neg = obj.get("query"), obj.get("pos"), obj.get("neg", [])
        if not _is_str(q) or not q.strip():
            errs.append(RowError(no, "'query' must be a non-empty string"))
            continue
        if not _str_list(pos) or not pos:
            errs.append(RowError(no, "'pos' must be a non-empty list of strings"))
            continue
        if not _str_list(neg):
            errs.append(RowError(no, "'neg' must be a list of strings"))
            continue
        scores = obj.get("pos_scores")
        if scores is not None and (not isinstance(scores, list) or len(scores) != len(pos)):
            errs.append(RowError(no, "'pos_scores' must have one number per 'pos'"))
            continue
        for j, p in enumerate(pos):
            score = None if scores is None else _as_score(scores[j])
            recs.append(RetrievalRecord(q, "", p, tuple(("", t) for t in neg), score))
    return ImportResult(tuple(recs), tuple(errs))


# --------------------------------------------------------------------------------------
# Entities, CLUENER layout: {"text", "label": {type: {mention: [[start, end_inclusive], ...]}}}
# Carries everything in EntityRecord.
# --------------------------------------------------------------------------------------


def export_cluener(records: Iterable[EntityRecord]) -> str:
    """CLUENER JSONL; a span whose mention does not match the text is a bug, so it raises."""
    rows = []
    for r in records:
        label: dict[str, dict[str, list[list[int]]]] = {}
        for s in r.spans:
            if r.text[s.start : s.end + 1] != s.mention:
                raise FormatError(f"span {s} does not match text {r.text[:40]!r}")
            label.setdefault(s.label, {}).setdefault(s.mention, []).append([s.start, s.end])
        rows.append({"text": r.text, "label": label})
    return _jsonl(rows)


def import_cluener(data: str | bytes) -> ImportResult:
    """Read CLUENER JSONL (test files without ``label`` give records with no spans)."""
    recs: list[EntityRecord] = []
    errs: list[RowError] = []
    for no, obj, err in _iter_jsonl(_text_of(data)):
        if err:
            errs.append(RowError(no, err))
            continue
        if not isinstance(obj, dict) or not _is_str(obj.get("text")):
            errs.append(RowError(no, "expected an object with a string 'text'"))
            continue
        text, label = obj["text"], obj.get("label") or {}
        spans: list[EntitySpan] = []
        problem = None if isinstance(label, dict) else "'label' must be an object"
        for typ, mentions in (label.items() if problem is None else ()):
            if not isinstance(mentions, dict):
                problem = f"label '{typ}' must map mentions to spans"
                break
            for mention, pairs in mentions.items():
                if not isinstance(pairs, list) or not all(
                    isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p) for p in pairs
                ):
                    problem = f"spans of '{mention}' must be [[start, end], ...] integers"
                    break
                for start, end in pairs:
                    if not (0 <= start <= end < len(text)) or text[start : end + 1] != mention:
                        problem = f"span [{start}, {end}] does not match mention '{mention}'"
                        break
                    spans.append(EntitySpan(typ, start, end, mention))
                if problem:
                    break
            if problem:
                break
        if problem:
            errs.append(RowError(no, problem))
            continue
        recs.append(EntityRecord(text, tuple(spans)))  # file order, so export is byte-faithful
    return ImportResult(tuple(recs), tuple(errs))


# --------------------------------------------------------------------------------------
# QA import from user uploads: CSV (UTF-8 ± BOM, GBK/GB18030), JSONL, XLSX
# --------------------------------------------------------------------------------------

# Canonical field → accepted header names (compared case-insensitively, spaces/_/- ignored).
QA_HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question", "q", "query", "instruction", "prompt", "问题", "提问", "问"),
    "answer": ("answer", "a", "response", "output", "答案", "回答", "答"),
    "chunk_text": ("context", "chunktext", "passage", "source_text", "原文", "上下文", "段落"),
    "source_chunk_id": ("sourcechunkid", "chunkid", "chunk", "片段id", "片段编号"),
    "document": ("document", "doc", "source", "file", "文档", "来源", "文件"),
    "heading_path": ("headingpath", "heading", "section", "章节", "标题"),
    "held_out": ("heldout", "test", "holdout", "留出", "测试"),
    "tags": ("tags", "tag", "labels", "标签"),
    "group": ("group", "groupid", "分组", "组"),
    "system": ("system", "systemprompt", "系统提示"),
    "history": ("history", "历史", "对话历史"),  # JSONL only: [[user, assistant], ...]
}
_HEADING_SEP = " > "  # heading_path in a flat cell: "Chapter 2 > 2.3 Travel"
_TAG_SEP = re.compile(r"[,;，；、|]")


def _norm_header(h: Any) -> str:
    return re.sub(r"[\s_\-]+", "", str(h or "")).lower()


_ALIAS_INDEX = {_norm_header(a): k for k, aliases in QA_HEADER_ALIASES.items() for a in aliases}


def _map_headers(headers: Sequence[Any]) -> dict[str, int]:
    """Canonical field → column index; the first matching column wins."""
    out: dict[str, int] = {}
    for i, h in enumerate(headers):
        key = _ALIAS_INDEX.get(_norm_header(h))
        if key and key not in out:
            out[key] = i
    return out


def decode_text(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) for UTF-8 (± BOM) or GBK/GB18030 text; (None, reason) for anything else.

    Excel on Chinese Windows saves CSV as GBK; a file that decodes as neither, or decodes
    into mostly control/private-use characters, is garbled and refused whole.
    """
    if b"\x00" in data[:8192]:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            try:
                return _plausible(data.decode("utf-16"))
            except UnicodeDecodeError:
                pass
        return None, "binary or garbled file (NUL bytes); save it as UTF-8 CSV"
    try:
        return _plausible(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    # Mostly-valid UTF-8 with a few broken bytes (a truncated copy, a bad editor) would
    # "decode" as GBK into mojibake; say where it breaks instead.
    loose = data.decode("utf-8", errors="replace")
    broken = loose.count("\ufffd")
    multibyte = sum(1 for ch in loose if ord(ch) > 127) - broken
    if multibyte >= 4 * broken:
        return None, f"invalid UTF-8 at byte {first_bad} ({broken} broken byte sequence(s)); re-save as UTF-8"
    try:
        return _plausible(data.decode("gb18030"))
    except UnicodeDecodeError:
        return None, "unreadable text encoding (not UTF-8 or GBK); save it as UTF-8 CSV"


def _plausible(text: str) -> tuple[str | None, str | None]:
    bad = sum(
        1
        for ch in text
        if (ord(ch) < 32 and ch not in "\t\r\n") or 0xE000 <= ord(ch) <= 0xF8FF or ord(ch) >= 0xF0000 or ch == "\ufffd"
    )
    if text and bad / len(text) > 0.01:
        return None, "garbled text (control or private-use characters); save it as UTF-8 CSV"
    return text, None


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _parse_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if v is None or (isinstance(v, str) and not v.strip()):
        return False
    s = _cell_text(v).lower()
    if s in ("1", "true", "yes", "y", "t", "是", "真", "对"):
        return True
    if s in ("0", "false", "no", "n", "f", "否", "假", "不"):
        return False
    return None


def _qa_from_fields(fields: dict[str, Any], cfg: ImportConfig, *, strict_types: bool) -> QARecord | str:
    """Build a QARecord or return the reason this row is refused."""
    for key in ("question", "answer"):
        v = fields.get(key)
        if strict_types and v is not None and not isinstance(v, str):
            return f"'{key}' must be text, got {type(v).__name__}"
        if not _cell_text(v):
            return f"empty {key}"
    values: dict[str, Any] = {}
    for key in ("question", "answer", "chunk_text", "source_chunk_id", "document", "group", "system"):
        v = fields.get(key)
        if strict_types and v is not None and not isinstance(v, str) and not (
            key in ("source_chunk_id", "group") and isinstance(v, int) and not isinstance(v, bool)
        ):
            return f"'{key}' must be text, got {type(v).__name__}"
        values[key] = _cell_text(v)
    limits = {"question": cfg.max_question_chars, "answer": cfg.max_answer_chars}
    for key, v in values.items():
        limit = limits.get(key, cfg.max_field_chars)
        if len(v) > limit:
            return f"{key} too long ({len(v)} characters, limit {limit})"
    held = _parse_bool(fields.get("held_out"))
    if held is None:
        return f"held_out must be yes/no, got {fields.get('held_out')!r}"
    heading = fields.get("heading_path")
    if isinstance(heading, list):
        if not all(isinstance(h, str) for h in heading):
            return "'heading_path' must be a list of strings"
        heading_t = tuple(heading)
    elif strict_types and heading is not None and not isinstance(heading, str):
        return f"'heading_path' must be text or a list, got {type(heading).__name__}"
    else:
        heading_t = tuple(p.strip() for p in _cell_text(heading).split(_HEADING_SEP.strip()) if p.strip())
    tags = fields.get("tags")
    if isinstance(tags, list):
        if not all(isinstance(t, str) for t in tags):
            return "'tags' must be a list of strings"
        tags_t = tuple(tags)
    elif strict_types and tags is not None and not isinstance(tags, str):
        return f"'tags' must be text or a list, got {type(tags).__name__}"
    else:
        tags_t = tuple(t.strip() for t in _TAG_SEP.split(_cell_text(tags)) if t.strip())
    history = fields.get("history") or []
    if isinstance(history, str) and not strict_types:
        history = []  # a flat table cell cannot hold turns; ignored rather than guessed
    if not (isinstance(history, list) and all(_str_list(t) and len(t) == 2 for t in history)):
        return "'history' must be a list of [user, assistant] pairs"
    return QARecord(
        question=values["question"],
        answer=values["answer"],
        source_chunk_id=values["source_chunk_id"] or None,
        chunk_text=values["chunk_text"],
        document=values["document"],
        heading_path=heading_t,
        held_out=held,
        tags=tags_t,
        group=values["group"] or None,
        system=values["system"],
        history=tuple((u, a) for u, a in history),
    )


def _qa_from_table(
    header: Sequence[Any], rows: Iterable[tuple[int, Sequence[Any]]], cfg: ImportConfig
) -> ImportResult:
    cols = _map_headers(header)
    missing = [k for k in ("question", "answer") if k not in cols]
    if missing:
        zh = {"question": "问题", "answer": "答案"}
        names = ", ".join(f"{k} / {zh[k]}" for k in missing)
        return ImportResult(file_error=f"missing column(s): {names}; found {[str(h) for h in header]}")
    recs: list[QARecord] = []
    errs: list[RowError] = []
    count = 0
    for line, row in rows:
        if not any(_cell_text(c) for c in row):
            continue  # blank spreadsheet rows are not errors
        count += 1
        if count > cfg.max_rows:
            errs.append(RowError(line, f"too many rows (limit {cfg.max_rows}); the rest were not read"))
            break
        fields = {k: (row[i] if i < len(row) else None) for k, i in cols.items()}
        rec = _qa_from_fields(fields, cfg, strict_types=False)
        if isinstance(rec, str):
            errs.append(RowError(line, rec))
        else:
            recs.append(rec)
    return ImportResult(tuple(recs), tuple(errs))


def import_qa_csv(data: bytes, config: ImportConfig = ImportConfig()) -> ImportResult:
    """QA pairs from a CSV in UTF-8 (± BOM) or GBK, English or Chinese headers."""
    text, err = decode_text(data)
    if text is None:
        return ImportResult(file_error=err)
    text = text.removeprefix("\ufeff")
    first = text.split("\n", 1)[0]
    dialect = csv.excel_tab if first.count("\t") > first.count(",") else csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return ImportResult(file_error=f"not a readable CSV file: {exc}")
    if not header:
        return ImportResult(file_error="empty file")
    # reader.line_num counts physical lines, so a quoted multi-line cell still points at
    # the line where its row starts.
    rows: list[tuple[int, list[str]]] = []
    bad: list[RowError] = []
    start = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a cell over csv's field size limit: skip that row
            bad.append(RowError(start + 1, f"unreadable CSV row: {exc}"))
            start = reader.line_num
            if len(bad) > 1000:
                return ImportResult(file_error="not a readable CSV file: too many malformed rows")
            continue
        rows.append((start + 1, row))
        start = reader.line_num
    res = _qa_from_table(header, rows, config)
    if bad and res.file_error is None:
        res = ImportResult(res.records, tuple(sorted((*res.errors, *bad), key=lambda e: e.line)))
    return res


def import_qa_jsonl(data: bytes, config: ImportConfig = ImportConfig()) -> ImportResult:
    """QA pairs from JSONL objects with the same (English or Chinese) keys as CSV headers."""
    text, err = decode_text(data)
    if text is None:
        return ImportResult(file_error=err)
    text = text.lstrip("\ufeff")
    recs: list[QARecord] = []
    errs: list[RowError] = []
    parsed_any = False
    items = _iter_json_array(text) if text.lstrip().startswith("[") else _iter_jsonl(text)
    for no, obj, jerr in items:
        if len(recs) + len(errs) >= config.max_rows:
            errs.append(RowError(no, f"too many rows (limit {config.max_rows}); the rest were not read"))
            break
        if jerr:
            errs.append(RowError(no, jerr))
            continue
        parsed_any = True
        if not isinstance(obj, dict):
            errs.append(RowError(no, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        cols = _map_headers(list(obj))
        keys = list(obj)
        fields = {k: obj[keys[i]] for k, i in cols.items()}
        missing = [k for k in ("question", "answer") if k not in fields]
        if missing:
            errs.append(RowError(no, f"missing field(s): {', '.join(missing)}"))
            continue
        rec = _qa_from_fields(fields, config, strict_types=True)
        if isinstance(rec, str):
            errs.append(RowError(no, rec))
        else:
            recs.append(rec)
    if not parsed_any and errs:
        return ImportResult(file_error="not a JSONL file: no line is valid JSON", errors=tuple(errs[:20]))
    return ImportResult(tuple(recs), tuple(errs))


def _check_zip(data: bytes, cfg: ImportConfig) -> str | None:
    """Refuse zip bombs from the central directory before inflating anything."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return "not a valid XLSX file (not a zip archive)"
    infos = zf.infolist()
    if len(infos) > cfg.max_xlsx_entries:
        return f"XLSX has too many parts ({len(infos)})"
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > 1_000_000 and info.file_size > cfg.max_xlsx_ratio * max(info.compress_size, 1):
            return f"XLSX part {info.filename} is suspiciously compressed; refused"
    if total > cfg.max_xlsx_uncompressed:
        return f"XLSX expands to {total} bytes (limit {cfg.max_xlsx_uncompressed})"
    if "xl/workbook.xml" not in {i.filename for i in infos}:
        return "not an XLSX workbook (no xl/workbook.xml)"
    return None


def import_qa_xlsx(data: bytes, config: ImportConfig = ImportConfig()) -> ImportResult:
    """QA pairs from the first worksheet; the first non-empty row is the header."""
    problem = _check_zip(data, config)
    if problem:
        return ImportResult(file_error=problem)
    import openpyxl  # heavy-ish import only where needed

    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types on corrupt workbooks
        return ImportResult(file_error=f"unreadable XLSX file: {type(exc).__name__}: {exc}")
    try:
        ws = wb.worksheets[0]
        it = ws.iter_rows(values_only=True)
        header: Sequence[Any] | None = None
        line = 0
        for row in it:
            line += 1
            if any(_cell_text(c) for c in row):
                header = row
                break
        if header is None:
            return ImportResult(file_error="the first worksheet is empty")
        start = line

        def rows() -> Iterable[tuple[int, Sequence[Any]]]:
            yield from enumerate(it, start=start + 1)

        return _qa_from_table(header, rows(), config)
    except Exception as exc:  # noqa: BLE001 - a corrupt sheet is a file error, not a crash
        return ImportResult(file_error=f"unreadable XLSX file: {type(exc).__name__}: {exc}")
    finally:
        wb.close()


QA_IMPORTERS = {"csv": import_qa_csv, "jsonl": import_qa_jsonl, "xlsx": import_qa_xlsx}


def import_qa(data: bytes, filename: str, config: ImportConfig = ImportConfig()) -> ImportResult:
    """Dispatch an upload by extension (.csv/.tsv/.jsonl/.json lines/.xlsx); never raises."""
    if len(data) > config.max_file_bytes:
        return ImportResult(file_error=f"file too large ({len(data)} bytes, limit {config.max_file_bytes})")
    ext = Path(filename).suffix.lower().lstrip(".")
    fmt = {"tsv": "csv", "txt": "csv", "json": "jsonl", "ndjson": "jsonl", "xlsm": "xlsx"}.get(ext, ext)
    if fmt not in QA_IMPORTERS:
        return ImportResult(file_error=f"unsupported file type '.{ext}'; use CSV, JSONL or XLSX")
    if fmt != "xlsx" and data[:2] == b"PK":
        return ImportResult(file_error="this looks like a zip/XLSX file, not text; upload it as .xlsx")
    try:
        return QA_IMPORTERS[fmt](data, config)
    except Exception as exc:  # noqa: BLE001 - last resort: an upload must never crash the worker
        return ImportResult(file_error=f"could not read file: {type(exc).__name__}: {exc}")


def export_qa_jsonl(records: Iterable[QARecord]) -> str:
    """Lossless QA JSONL (every QARecord field), readable by ``import_qa_jsonl``."""
    rows = []
    for r in records:
        rows.append(
            {
                "question": r.question,
                "answer": r.answer,
                "source_chunk_id": r.source_chunk_id,
                "chunk_text": r.chunk_text,
                "document": r.document,
                "heading_path": list(r.heading_path),
                "held_out": r.held_out,
                "tags": list(r.tags),
                "group": r.group,
                "system": r.system,
                "history": [[u, a] for u, a in r.history],
            }
        )
    return _jsonl(rows)


__all__ = [
    "EntityRecord",
    "EntitySpan",
    "FormatError",
    "ImportConfig",
    "ImportResult",
    "QARecord",
    "RetrievalRecord",
    "RowError",
    "decode_text",
    "export_alpaca",
    "export_cluener",
    "export_flagembedding",
    "export_qa_jsonl",
    "export_sentence_transformers",
    "export_sharegpt",
    "import_alpaca",
    "import_cluener",
    "import_flagembedding",
    "import_qa",
    "import_qa_csv",
    "import_qa_jsonl",
    "import_qa_xlsx",
    "import_sentence_transformers",
    "import_sharegpt",
    "llamafactory_dataset_info",
    "write_atomic",
]
