"""Property-based and mutation fuzzing of what users upload: every loader on mutated PDF, DOCX,
Markdown, HTML and text bytes, and every dataset import format on arbitrary text. Whatever comes
in, the answer is a result or a clear ``LoadError`` / import error on the item, never a crash.

Loaders run in the sandbox (a child process, as in production), so a native crash in a parser
shows as a ``LoadError`` here too. Examples are few and derandomised: the suite stays fast and a
failure reproduces; raise ``max_examples`` locally to search longer.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets_app.engine import formats
from domains.engine.config import IngestConfig
from domains.engine.errors import LoadError
from domains.engine.ingest import ingest_file
from tests.engine.docs import regulation_docx, regulation_pdf

FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz-seeds")
    return {
        "rules.pdf": regulation_pdf(root / "rules.pdf").read_bytes(),
        "rules.docx": regulation_docx(root / "rules.docx").read_bytes(),
        "manual.md": "# Manual\n\n## E100\n\nFault E100.1: over-current.\n\n| code | meaning |\n|---|---|\n| E1 | x |\n"
                     .encode(),
        "page.html": b"<html><body><h1>Rules</h1><p>Invoices of 3,000 yuan need an agreement.</p></body></html>",
        "notes.txt": "第三条 报销单据金额在3000元及以上的，需要签订协议。\n".encode() * 5,
    }


def mutate(data: bytes, edits: list[tuple[int, int, int]], cut: int | None) -> bytes:
    """Overwrite, delete or insert bytes at positions scaled to the file, then maybe truncate it."""
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == 0:
            buf[i] = value
        elif kind == 1:
            del buf[i:i + 1 + value % 64]
        else:
            buf[i:i] = bytes([value]) * (1 + value % 16)
    if cut is not None and buf:
        buf = buf[: cut % len(buf)]
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**31), st.integers(0, 255)), max_size=24)
CONFIG = IngestConfig(timeout_s=60, idle_timeout_s=30, memory_mb=1024)


def _ingest(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            result = ingest_file(path, CONFIG, name=name)
        except LoadError as exc:
            assert str(exc).strip() and exc.code  # a reason a person can act on
            return
        assert result.chunks and all(c.text.strip() for c in result.chunks)


@pytest.mark.parametrize("name", ["rules.pdf", "rules.docx", "manual.md", "page.html", "notes.txt"])
@FUZZ
@given(edits=EDITS, cut=st.one_of(st.none(), st.integers(0, 2**31)))
def test_mutated_documents_load_or_fail_clearly(seeds, name, edits, cut):
    _ingest(name, mutate(seeds[name], edits, cut))


@FUZZ
@given(data=st.binary(max_size=4096), name=st.sampled_from(["x.pdf", "x.docx", "x.md", "x.html", "x.txt", "x"]))
def test_arbitrary_bytes_under_any_name_load_or_fail_clearly(data, name):
    _ingest(name, data)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                   max_size=4), max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={k: JSONISH for k in (
    "instruction", "input", "output", "question", "answer", "conversations", "messages", "from", "value", "query",
    "pos", "neg", "anchor", "positive", "negative", "sentence1", "sentence2", "score", "text", "label")})
IMPORTERS = [
    formats.import_alpaca, formats.import_sharegpt, formats.import_flagembedding, formats.import_cluener,
    lambda d: formats.import_sentence_transformers(d, "pairs"),
    lambda d: formats.import_sentence_transformers(d, "triplets"),
    lambda d: formats.import_sentence_transformers(d, "scored"),
    lambda d: formats.import_sentence_transformers(d, "pairs", fmt="csv"),
    lambda d: formats.import_qa(d if isinstance(d, bytes) else d.encode(), "x.csv"),
    lambda d: formats.import_qa(d if isinstance(d, bytes) else d.encode(), "x.jsonl"),
    lambda d: formats.import_qa(d if isinstance(d, bytes) else d.encode(), "x.xlsx"),
]


@pytest.mark.parametrize("importer", range(len(IMPORTERS)))
@FUZZ
@given(rows=st.lists(FIELDS, max_size=5), junk=st.text(max_size=200), as_array=st.booleans())
def test_import_formats_take_any_rows_and_report_bad_ones(importer, rows, junk, as_array):
    text = json.dumps(rows, ensure_ascii=False) if as_array else "\n".join(json.dumps(r) for r in rows)
    for data in (text, text + "\n" + junk, junk, (text + junk).encode("utf-8")):
        result = IMPORTERS[importer](data)
        assert isinstance(result, formats.ImportResult)


# Teacher output: whatever a model writes back, the parser answers with JSON or a MalformedOutput.

SCHEMA = {"type": "object", "properties": {"pairs": {"type": "array", "items": {"type": "object", "properties": {
    "question": {"type": "string"}, "answer": {"type": "string"}}, "required": ["question", "answer"]}}},
    "required": ["pairs"]}


@FUZZ
@given(text=st.one_of(st.text(max_size=2000), st.builds(lambda v: json.dumps(v), JSONISH),
                      st.builds(lambda v, cut: json.dumps({"pairs": v})[:cut], st.lists(FIELDS, max_size=6),
                                st.integers(0, 400))))
def test_teacher_output_parses_or_is_malformed(text):
    from datasets_app.engine.jsonrepair import MalformedOutput, parse_json_output

    for schema in (None, SCHEMA):
        try:
            parse_json_output(text, schema)
        except MalformedOutput as exc:
            assert str(exc)


def test_teacher_output_that_is_huge_or_deeply_nested_is_malformed_not_a_crash():
    from datasets_app.engine.jsonrepair import MalformedOutput, parse_json_output

    for text in ("[" * 200_000, "{" * 5_000_000, '{"pairs": ' + "[" * 100_000 + "]" * 100_000 + "}", "x" * 2_000_000):
        with pytest.raises(MalformedOutput):
            parse_json_output(text, SCHEMA)
