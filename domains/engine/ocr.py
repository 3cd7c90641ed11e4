"""OCR behind a small backend interface, so scanned pages need no external tool.

The default backend is RapidOCR (PP-OCRv4 det/rec ONNX models inside the
``rapidocr-onnxruntime`` wheel: offline, CPU). PaddleOCR is used only when installed and
chosen in the config. Engines are loaded once per process and reused: building one costs
more than recognising a small page.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import OcrUnavailable

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class OcrLine:
    """One recognised line: its text, the model's confidence (0–1) and its box in pixels."""

    text: str
    confidence: float
    x0: float
    y0: float
    x1: float
    y1: float


class OcrBackend(Protocol):
    """What a backend offers: recognise the text lines of an RGB image."""

    name: str

    def recognize(self, image: np.ndarray) -> list[OcrLine]:  # image: H×W×3 uint8, RGB
        ...


def _box(points: Any) -> tuple[float, float, float, float]:
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    return min(xs), min(ys), max(xs), max(ys)


class RapidOcrBackend:
    """PP-OCRv4 through rapidocr-onnxruntime (the embedded default)."""

    name = "rapidocr"

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise OcrUnavailable(
                "OCR needs the 'rapidocr-onnxruntime' package, which is not installed."
            ) from exc
        self._engine = RapidOCR()

    def recognize(self, image: np.ndarray) -> list[OcrLine]:
        # RapidOCR follows OpenCV and expects BGR channel order.
        result, _elapsed = self._engine(image[:, :, ::-1].copy())
        lines = []
        for points, text, score in result or []:
            if text and text.strip():
                lines.append(OcrLine(text.strip(), float(score), *_box(points)))
        return lines


class PaddleOcrBackend:
    """PaddleOCR, for sites that installed it (heavier, sometimes more accurate)."""

    name = "paddle"

    def __init__(self, lang: str = "ch") -> None:
        try:
            from paddleocr import PaddleOCR
        except ImportError as exc:
            raise OcrUnavailable(
                "The OCR backend 'paddle' is chosen but PaddleOCR is not installed "
                "(pip install paddleocr paddlepaddle), or choose the 'rapidocr' backend."
            ) from exc
        try:
            self._engine = PaddleOCR(lang=lang)
        except Exception as exc:  # its models may be missing on an offline machine
            raise OcrUnavailable(f"PaddleOCR could not start: {exc}") from exc

    def recognize(self, image: np.ndarray) -> list[OcrLine]:
        bgr = image[:, :, ::-1].copy()
        lines: list[OcrLine] = []
        if hasattr(self._engine, "predict"):  # PaddleOCR 3.x
            for page in self._engine.predict(bgr) or []:
                texts = page.get("rec_texts", []) if hasattr(page, "get") else []
                scores = page.get("rec_scores", [])
                polys = page.get("rec_polys", [])
                for text, score, poly in zip(texts, scores, polys):
                    if text and text.strip():
                        lines.append(OcrLine(text.strip(), float(score), *_box(poly)))
            return lines
        for page in self._engine.ocr(bgr) or []:  # PaddleOCR 2.x: [[box, (text, score)], …]
            for points, (text, score) in page or []:
                if text and text.strip():
                    lines.append(OcrLine(text.strip(), float(score), *_box(points)))
        return lines


BACKENDS = ("rapidocr", "paddle")


@functools.lru_cache(maxsize=4)
def get_backend(name: str = "rapidocr", lang: str = "ch") -> OcrBackend:
    """The backend called ``name``, built once per process and reused."""
    if name == "rapidocr":
        return RapidOcrBackend()
    if name == "paddle":
        return PaddleOcrBackend(lang)
    raise OcrUnavailable(f"Unknown OCR backend {name!r}; choose one of {', '.join(BACKENDS)}.")


def sort_lines(lines: list[OcrLine]) -> list[list[OcrLine]]:
    """Reading order: rows top to bottom (boxes overlapping vertically share a row), then left to right."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: (ln.y0 + ln.y1) / 2):
        if rows:
            row = rows[-1]
            top = min(ln.y0 for ln in row)
            bottom = max(ln.y1 for ln in row)
            overlap = min(bottom, line.y1) - max(top, line.y0)
            if overlap > 0.5 * min(bottom - top, line.y1 - line.y0):
                row.append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda ln: ln.x0) for row in rows]


def group_paragraphs(lines: list[OcrLine]) -> list[list[list[OcrLine]]]:
    """Rows grouped into paragraphs: a vertical gap taller than ~0.8 of a line starts a new one."""
    rows = sort_lines(lines)
    paragraphs: list[list[list[OcrLine]]] = []
    prev_bottom = None
    prev_height = None
    for row in rows:
        top = min(ln.y0 for ln in row)
        bottom = max(ln.y1 for ln in row)
        height = bottom - top
        if paragraphs and prev_bottom is not None and prev_height is not None:
            gap = top - prev_bottom
            if gap <= 0.8 * max(height, prev_height):
                paragraphs[-1].append(row)
                prev_bottom, prev_height = bottom, height
                continue
        paragraphs.append([row])
        prev_bottom, prev_height = bottom, height
    return paragraphs
