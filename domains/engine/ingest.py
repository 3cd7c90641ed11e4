"""The one entry point the ingest job calls: file in, chunks and per-page facts out.

sniff (from the bytes) → load (in a sandbox child: hostile files may hang or bloat the
parser) → clean (headers, page numbers, broken lines, widths) → chunk (sentences, headings,
overlap). Pure Python and Django-free: the job adapter turns the result into rows.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .chunker import Chunk, ChunkConfig, chunk, document_text
from .clean import clean
from .config import IngestConfig, OcrConfig
from .errors import EmptyFile, LoadError
from .loaders import Block, LoadResult, PageInfo, load
from .sandbox import run_isolated
from .sniff import sniff

__all__ = [
    "Block",
    "Chunk",
    "ChunkConfig",
    "IngestConfig",
    "IngestResult",
    "LoadError",
    "OcrConfig",
    "PageInfo",
    "ingest_file",
    "load_file",
]

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class IngestResult:
    """What one document became; ``to_dict()`` is JSON-serialisable."""

    kind: str  # pdf | docx | html | markdown | text | image
    text: str  # cleaned full text; every chunk is text[char_start:char_end]
    chunks: list[Chunk]
    pages: list[PageInfo]  # empty for formats without pages (DOCX, Markdown, HTML)
    blocks: list[Block] = field(default_factory=list)  # cleaned blocks: keep them to re-chunk without re-parsing
    warnings: list[str] = field(default_factory=list)  # things a person should check
    meta: dict[str, Any] = field(default_factory=dict)  # encoding, title, page/OCR counts, timings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def load_file(
    path: str | os.PathLike[str],
    config: IngestConfig | None = None,
    on_page: ProgressFn | None = None,
    *,
    name: str | None = None,
) -> LoadResult:
    """Sniff and load (sandboxed unless ``config.sandbox`` is off), without cleaning or chunking."""
    config = config or IngestConfig()
    path = os.fspath(path)
    kind = sniff(path, config, name=name)
    if not config.sandbox:
        return load(path, kind, config, on_page=on_page)
    # Progress always flows: it is also the heartbeat the idle timeout watches.
    return run_isolated(
        load,
        path,
        kind,
        config,
        timeout_s=config.timeout_s,
        memory_mb=config.memory_mb,
        idle_timeout_s=config.idle_timeout_s,
        on_progress=on_page or (lambda done, total: None),
    )


def ingest_file(
    path: str | os.PathLike[str],
    config: IngestConfig | None = None,
    on_page: ProgressFn | None = None,
    *,
    name: str | None = None,
) -> IngestResult:
    """Turn the document at ``path`` into chunks, or raise a ``LoadError`` that says why not.

    ``on_page(done, total)`` reports parsing progress (per page for PDFs and images; once
    for other formats); an exception it raises (a cancelled job) stops the parse.
    ``name``: the original upload name (only a hint for Markdown vs plain text).
    """
    config = config or IngestConfig()
    path = os.fspath(path)
    started = time.monotonic()
    result = load_file(path, config, on_page, name=name)
    loaded = time.monotonic()
    blocks = clean(result)
    if not blocks:
        raise EmptyFile("Nothing but page numbers and running headers was found in this document.")
    text = document_text(blocks)
    chunks = chunk(blocks, config.chunk)
    meta = dict(result.meta)
    meta.update(
        {
            "bytes": os.path.getsize(path),
            "file_sha256": _sha256_file(path),
            "blocks": len(blocks),
            "load_seconds": round(loaded - started, 3),
            "total_seconds": round(time.monotonic() - started, 3),
        }
    )
    return IngestResult(result.kind, text, chunks, list(result.pages), blocks, list(result.warnings), meta)
