"""Robust parsing of a teacher's JSON output.

Why: even with a response schema, teachers wrap JSON in code fences or prose, leave trailing
commas, use Python quoting, or get cut off by the token limit half-way through an array.
Throwing away a response that holds nine good QA pairs and a truncated tenth wastes money,
so we repair what is safe to repair, keep complete items, validate against the recipe's
schema, and otherwise raise ``MalformedOutput`` with an excerpt the teacher can re-ask with.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

EXCERPT_CHARS = 200


class MalformedOutput(ValueError):
    """The output is not (repairable) JSON matching the schema; ``reason`` says what's wrong."""

    def __init__(self, reason: str, text: str = "") -> None:
        self.reason = reason
        self.excerpt = excerpt(text)
        super().__init__(f"{reason} (output began: {self.excerpt!r})" if text else reason)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A short single-line excerpt of model output for errors and logs."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass
class Repaired:
    """The parsed value and the repairs applied (for logs and statistics)."""

    value: Any
    repairs: list[str] = field(default_factory=list)


_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)


def _strip_fences(text: str) -> str | None:
    m = _FENCE.search(text)
    return m.group(1).strip() if m else None


def _starts(text: str, limit: int = 20) -> list[int]:
    """Positions of the first few ``{``/``[`` (prose before the JSON may hold a stray bracket)."""
    return [i for i, ch in enumerate(text) if ch in "{["][:limit]


MAX_DEPTH = 100  # QA and entity answers nest 3-4 levels; deeper is not an answer (and costs memory to repair)
MAX_OUTPUT_CHARS = 4_000_000


def _scan(text: str, start: int) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    """Walk ``text`` from ``start`` (a ``{``/``[``) with a string-aware bracket stack.

    Returns the balanced JSON candidate (or the truncated tail), the stack left open at the
    end, and cut points: positions just after a closed container, with the stack open there.
    """
    stack: list[str] = []
    cuts: list[tuple[int, list[str]]] = []
    quote: str | None = None
    esc = False
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            if len(stack) > MAX_DEPTH:
                raise MalformedOutput(f"JSON nested deeper than {MAX_DEPTH} levels", text)
        elif ch in "}]":
            if stack:
                stack.pop()
            if not stack:
                return text[start : i + 1], [], cuts
            cuts.append((i + 1 - start, list(stack)))
        i += 1
    return text[start:], stack, cuts


def _fix_tokens(s: str, repairs: list[str]) -> str:
    """Outside strings: single→double quotes, drop trailing commas, Python literals → JSON."""
    out: list[str] = []
    i = 0
    n = len(s)
    changed_quotes = changed_commas = changed_literals = False
    while i < n:
        ch = s[i]
        if ch == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            out.append(s[i : j + 1])
            i = j + 1
            continue
        if ch == "'":
            j = i + 1
            buf: list[str] = []
            while j < n and s[j] != "'":
                if s[j] == "\\" and j + 1 < n:
                    nxt = s[j + 1]
                    buf.append("'" if nxt == "'" else "\\" + nxt)
                    j += 2
                    continue
                buf.append('\\"' if s[j] == '"' else s[j])
                j += 1
            out.append('"' + "".join(buf) + '"')
            changed_quotes = True
            i = j + 1
            continue
        if ch == ",":
            j = i + 1
            while j < n and s[j] in " \t\r\n":
                j += 1
            if j < n and s[j] in "}]":
                changed_commas = True
                i += 1
                continue
        m = re.match(r"(True|False|None)\b", s[i:]) if ch in "TFN" and (i == 0 or not s[i - 1].isalnum()) else None
        if m:
            out.append({"True": "true", "False": "false", "None": "null"}[m.group(1)])
            changed_literals = True
            i += len(m.group(1))
            continue
        out.append(ch)
        i += 1
    if changed_quotes:
        repairs.append("single quotes")
    if changed_commas:
        repairs.append("trailing commas")
    if changed_literals:
        repairs.append("python literals")
    return "".join(out)


def _loads(s: str) -> Any:
    try:
        return json.loads(s, strict=False)  # strict=False: raw newlines inside strings are common
    except RecursionError:  # "[[[[…" thousands deep: not an answer, and never a crash
        raise ValueError("JSON nested too deeply") from None


def repair_json(text: str) -> Repaired:
    """Parse ``text`` into JSON, repairing the common teacher mistakes; raises MalformedOutput."""
    if text is None or not str(text).strip():
        raise MalformedOutput("empty output", text or "")
    if len(str(text)) > MAX_OUTPUT_CHARS:
        raise MalformedOutput(f"output too long ({len(str(text)):,} characters)", text)
    raw = str(text).lstrip("\ufeff").strip()
    repairs: list[str] = []
    try:
        return Repaired(_loads(raw), repairs)
    except ValueError:
        pass
    low = raw.lower()
    if "</think>" in low:
        raw = raw[low.rindex("</think>") + len("</think>"):].strip()
        repairs.append("reasoning block")
        if not raw:
            raise MalformedOutput("output holds only a reasoning block, no answer", text)
    elif low.startswith("<think>"):
        raise MalformedOutput("output holds only an unfinished reasoning block (raise max_output_tokens)", text)
    body = raw
    fenced = _strip_fences(raw)
    if fenced is not None and fenced != raw:
        repairs.append("code fence")
        body = fenced
        try:
            return Repaired(_loads(body), repairs)
        except ValueError:
            pass
    starts = _starts(body)
    if not starts:
        raise MalformedOutput("no JSON object or array found", raw)
    first_error: MalformedOutput | None = None
    best: tuple[int, int, Repaired] | None = None  # (start, end, value)
    for start in starts:
        if best is not None and start < best[1]:
            continue  # inside the value already found
        try:
            result, end = _repair_from(body, start, list(repairs), raw)
        except MalformedOutput as exc:
            first_error = first_error or exc
            continue
        # "[1] see {…}": prefer the value that spans the most text, not the first bracket.
        if best is None or end - start > best[1] - best[0]:
            best = (start, end, result)
    if best is not None:
        return best[2]
    assert first_error is not None
    raise first_error


def _repair_from(body: str, start: int, repairs: list[str], raw: str) -> tuple[Repaired, int]:
    """Repair the JSON value that begins at ``start``; returns it and where it ends."""
    candidate, open_stack, cuts = _scan(body, start)
    end = start + len(candidate)
    if candidate.strip() != body.strip():
        repairs.append("surrounding prose")
    fixed = _fix_tokens(candidate, repairs)
    if not open_stack:
        try:
            return Repaired(_loads(fixed), repairs), end
        except ValueError as exc:
            raise MalformedOutput(f"invalid JSON: {exc}", raw) from None
    # Truncated: close at the latest cut point that yields valid JSON, keeping whole items.
    for pos, stack in reversed(cuts[-200:]):
        head = _fix_tokens(candidate[:pos], []).rstrip().rstrip(",")
        attempt = head + "".join(reversed(stack))
        try:
            value = _loads(attempt)
        except ValueError:
            continue
        repairs.append("truncated output (kept complete items)")
        return Repaired(value, repairs), end
    attempt = fixed.rstrip().rstrip(",") + "".join(reversed(open_stack))
    try:
        value = _loads(attempt)
    except ValueError:
        raise MalformedOutput("truncated JSON with no complete item to keep", raw) from None
    repairs.append("truncated output (closed)")
    return Repaired(value, repairs), end


def validate(value: Any, schema: dict[str, Any], text: str = "") -> None:
    """Raise MalformedOutput naming the first schema violation (path + message)."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema ships with drf-spectacular
        _mini_validate(value, schema, "$", text)
        return
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err.absolute_path)
        raise MalformedOutput(f"schema violation at {path}: {err.message[:200]}", text)


_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}


def _mini_validate(value: Any, schema: dict[str, Any], path: str, text: str) -> None:
    """Tiny fallback validator: type, required, properties, items, enum."""
    t = schema.get("type")
    if t and not isinstance(value, _TYPES.get(t, object)):
        raise MalformedOutput(f"schema violation at {path}: expected {t}", text)
    if "enum" in schema and value not in schema["enum"]:
        raise MalformedOutput(f"schema violation at {path}: not one of {schema['enum']}", text)
    if isinstance(value, dict):
        for req in schema.get("required", []):
            if req not in value:
                raise MalformedOutput(f"schema violation at {path}: missing {req!r}", text)
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                _mini_validate(value[k], sub, f"{path}[{k!r}]", text)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _mini_validate(item, schema["items"], f"{path}[{i}]", text)


def parse_json_output(text: str, schema: dict[str, Any] | None = None) -> Repaired:
    """Repair, parse and (when a schema is given) validate a teacher's output. Whatever the text,
    the answer is a ``Repaired`` or a ``MalformedOutput``."""
    try:
        return _parse_json_output(text, schema)
    except RecursionError:
        raise MalformedOutput("JSON nested too deeply", text) from None


def _parse_json_output(text: str, schema: dict[str, Any] | None) -> Repaired:
    result = repair_json(text)
    if schema is not None:
        value = result.value
        # A bare list where the schema wants {"<key>": [...]} is a common, safe-to-fix slip.
        if isinstance(value, list) and schema.get("type") == "object":
            arrays = [k for k, v in schema.get("properties", {}).items() if v.get("type") == "array"]
            if len(arrays) == 1 and set(schema.get("required", [])) <= {arrays[0]}:
                result = Repaired({arrays[0]: value}, result.repairs + ["wrapped bare array"])
        validate(result.value, schema, text)
    return result
