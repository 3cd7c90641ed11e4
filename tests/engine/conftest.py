"""Engine tests: plain pytest, temp dirs, no database."""
from __future__ import annotations

from pathlib import Path

import pytest

from domains.engine.config import IngestConfig

from . import docs


@pytest.fixture
def inline_config() -> IngestConfig:
    """Parse in-process: the loader tests need no sandbox (it has tests of its own)."""
    return IngestConfig(sandbox=False)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Every generated document, built once per test session."""
    root = tmp_path_factory.mktemp("corpus")
    return {
        "regulation.pdf": docs.regulation_pdf(root / "regulation.pdf"),
        "regulation-long.pdf": docs.regulation_pdf(root / "regulation-long.pdf", pages_per_chapter=2),
        "manual.pdf": docs.manual_pdf(root / "manual.pdf"),
        "scanned.pdf": docs.scanned_pdf(root / "scanned.pdf"),
        "mixed.pdf": docs.mixed_pdf(root / "mixed.pdf"),
        "encrypted.pdf": docs.encrypted_pdf(root / "encrypted.pdf"),
        "regulation.docx": docs.regulation_docx(root / "regulation.docx"),
    }
