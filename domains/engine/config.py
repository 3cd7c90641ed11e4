"""Ingestion settings: one frozen dataclass, stored as JSON on the job (``asdict``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .chunker import ChunkConfig

MB = 1024 * 1024


@dataclass(frozen=True)
class OcrConfig:
    """When and how pages without a usable text layer are read by OCR."""

    enabled: bool = True  # OCR scanned pages and images; off → such pages yield no text
    backend: str = "rapidocr"  # "rapidocr" (PP-OCRv4 ONNX, ships in the wheel) or "paddle"
    min_text_chars: int = 20  # a PDF page with fewer non-space characters is OCR'd
    dpi: int = 200  # render resolution; 200 dpi reads 9-pt CJK text reliably
    max_pixels: int = 25_000_000  # per rendered page; larger pages are rendered at lower dpi
    max_pages: int = 500  # OCR at most this many pages per file (~3 s a page on 2 cores)
    min_confidence: float = 0.5  # recognised lines below this confidence are dropped
    warn_below: float = 0.8  # a page whose mean confidence is lower gets a warning
    lang: str = "ch"  # PaddleOCR language model ("ch" reads Chinese and English)


@dataclass(frozen=True)
class IngestConfig:
    """Limits and choices for ``ingest_file``; defaults suit a 2-core, 24 GB machine."""

    max_bytes: int = 100 * MB  # refuse larger uploads before parsing anything
    max_pages: int = 2000  # refuse PDFs (and TIFFs) with more pages
    max_image_pixels: int = 60_000_000  # refuse images larger than this (decompression bombs)
    # DOCX is a zip: the central directory is checked before anything is inflated.
    zip_max_entries: int = 10_000  # real documents hold tens to a few hundred parts
    zip_max_entry_bytes: int = 256 * MB  # declared uncompressed size of one part
    zip_max_total_bytes: int = 1024 * MB  # declared uncompressed size of all parts together
    zip_max_ratio: float = 200.0  # uncompressed/compressed per part; XML reaches ~10-50
    sandbox: bool = True  # parse in a child process with the limits below
    timeout_s: float = 3600.0  # wall clock for one file, OCR included
    idle_timeout_s: float = 300.0  # no page finished for this long → the parser is stuck
    memory_mb: int = 4096  # address-space cap of the child (RLIMIT_AS); OCR peaks at ~1.8 GB
    pdf_tables: bool = True  # detect ruled tables on PDF pages and keep them as text rows
    ocr: OcrConfig = field(default_factory=OcrConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (what the job row stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> IngestConfig:
        """Rebuild from ``to_dict`` output; unknown keys are ignored so old rows still load."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k not in ("ocr", "chunk")}
        ocr_known = {f.name for f in fields(OcrConfig)}
        chunk_known = {f.name for f in fields(ChunkConfig)}
        ocr = OcrConfig(**{k: v for k, v in (data.get("ocr") or {}).items() if k in ocr_known})
        chunk = ChunkConfig(**{k: v for k, v in (data.get("chunk") or {}).items() if k in chunk_known})
        return cls(ocr=ocr, chunk=chunk, **kwargs)
