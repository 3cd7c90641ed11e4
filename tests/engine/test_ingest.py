"""The entry point the ingest job calls: sandboxed by default, JSON-ready, Django-free."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from domains.engine.chunker import ChunkConfig
from domains.engine.config import IngestConfig, OcrConfig
from domains.engine.errors import (
    EncryptedPdf,
    LoadError,
    TooLarge,
    UnsupportedType,
    ZipBomb,
)
from domains.engine.ingest import IngestResult, ingest_file

from . import docs

ENGINE = Path(__file__).resolve().parents[2] / "domains" / "engine"


def test_sandboxed_ingest_reports_every_page(corpus):
    progress = []
    result = ingest_file(corpus["regulation-long.pdf"], IngestConfig(), on_page=lambda d, t: progress.append((d, t)))
    assert isinstance(result, IngestResult)
    assert progress == [(n, 6) for n in range(1, 7)]
    assert result.kind == "pdf" and len(result.pages) == 6
    inline = ingest_file(corpus["regulation-long.pdf"], IngestConfig(sandbox=False))
    # The sandbox changes where parsing runs, not what comes out.
    assert [c.sha256 for c in result.chunks] == [c.sha256 for c in inline.chunks]
    assert result.text == inline.text


def test_sandboxed_ocr(corpus):
    result = ingest_file(corpus["mixed.pdf"], IngestConfig())
    assert [p.ocr for p in result.pages] == [False, True]


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda corpus, tmp: corpus["encrypted.pdf"], EncryptedPdf),
        (lambda corpus, tmp: docs.zip_bomb_docx(tmp / "bomb.docx"), ZipBomb),
    ],
    ids=["encrypted", "zip-bomb"],
)
def test_errors_cross_the_sandbox_with_their_class(corpus, tmp_path, make, error):
    with pytest.raises(error) as caught:
        ingest_file(make(corpus, tmp_path), IngestConfig())
    assert caught.value.code == error.code
    assert caught.value.message


def test_size_and_type_are_checked_before_any_child_starts(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("报销须知。" * 1000, encoding="utf-8")
    with pytest.raises(TooLarge):
        ingest_file(big, IngestConfig(max_bytes=1024))
    elf = tmp_path / "tool.pdf"
    elf.write_bytes(b"\x7fELF" + bytes(64))
    with pytest.raises(UnsupportedType, match="executable"):
        ingest_file(elf)


def test_result_and_config_are_json(corpus):
    config = IngestConfig(max_pages=50, ocr=OcrConfig(dpi=150), chunk=ChunkConfig(target_chars=800, overlap_chars=100))
    stored = json.loads(json.dumps(config.to_dict()))
    assert IngestConfig.from_dict(stored) == config
    assert IngestConfig.from_dict({"max_pages": 9, "no_longer_a_setting": 1}).max_pages == 9
    result = ingest_file(corpus["manual.pdf"], config)
    data = json.loads(json.dumps(result.to_dict(), ensure_ascii=False))
    assert data["kind"] == "pdf"
    assert data["chunks"][0]["sha256"] == result.chunks[0].sha256
    assert data["meta"]["file_sha256"] and data["meta"]["page_count"] == 2


def test_every_error_has_a_code_and_pickles():
    import pickle

    from domains.engine import errors

    for cls in errors.ERRORS.values():
        err = pickle.loads(pickle.dumps(cls("why it failed", detail="trace")))
        assert type(err) is cls and err.message == "why it failed" and err.detail == "trace"
        assert isinstance(err, LoadError) and err.code


def test_engine_never_imports_django():
    for source in ENGINE.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "import django" not in text and "from django" not in text, source.name
    code = (
        "import sys; import domains.engine.ingest, domains.engine.chunker;"
        "heavy = [m for m in ('django', 'pymupdf', 'fitz', 'docx', 'rapidocr_onnxruntime', 'bs4', 'numpy') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ENGINE.parents[1], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
