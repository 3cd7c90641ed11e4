"""Turn a document into ordered text ``Block``s with page numbers and heading paths.

One loader per kind (see ``sniff``). Loaders keep structure the chunker needs — headings,
table rows, pages, OCR confidence — and leave text repair (headers, broken lines, widths)
to ``clean``. They run inside the sandbox child, so they may raise freely: every failure a
person can act on is a ``LoadError``.
"""
from __future__ import annotations

import os
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .encoding import decode_bytes
from .errors import (
    CorruptFile,
    EmptyFile,
    EncryptedPdf,
    LoadError,
    TooLarge,
    UnsupportedType,
)
from .textutil import SENTENCE_END, count_nonspace, soft_join

if TYPE_CHECKING:
    from .config import IngestConfig
    from .ocr import OcrBackend, OcrLine

ProgressFn = Callable[[int, int], None]


@dataclass(slots=True)
class Block:
    """A run of text with its place in the document.

    ``heading_path`` lists the headings the block sits under (a heading block includes
    itself); ``page``/``page_end`` are 1-based, ``None`` for formats without pages.
    """

    text: str
    kind: str = "paragraph"  # heading | paragraph | table_row | code
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    level: int = 0  # heading level, 1 = top; 0 for non-headings
    ocr: bool = False
    ocr_confidence: float | None = None
    page_end: int | None = None  # last page, when a paragraph continues onto the next page


@dataclass(slots=True)
class PageInfo:
    """What one page gave: shown to users so they can check OCR and extraction."""

    number: int
    chars: int  # non-space characters extracted (text layer or OCR)
    ocr: bool = False
    ocr_confidence: float | None = None  # mean over recognised characters
    text: str = ""  # extracted text, before cleaning


@dataclass(slots=True)
class LoadResult:
    """Everything a loader found; plain data so it pickles across the sandbox boundary."""

    kind: str
    blocks: list[Block]
    pages: list[PageInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def load(path: str | os.PathLike[str], kind: str, config: IngestConfig, on_page: ProgressFn | None = None) -> LoadResult:
    """Load ``path`` as ``kind``; ``on_page(done, total)`` is called as pages finish."""
    loaders: dict[str, Callable[..., LoadResult]] = {
        "pdf": load_pdf,
        "docx": load_docx,
        "markdown": load_markdown,
        "html": load_html,
        "text": load_text,
        "image": load_image,
    }
    if kind not in loaders:
        raise UnsupportedType(f"No loader for documents of kind {kind!r}.")
    result = loaders[kind](os.fspath(path), config, on_page)
    if not any(b.text.strip() for b in result.blocks):
        hint = ""
        if kind in ("pdf", "image") and not config.ocr.enabled:
            hint = " It seems to be scanned, and OCR is switched off."
        elif kind in ("pdf", "image"):
            hint = " Neither its text layer nor OCR found any text."
        raise EmptyFile(f"No text could be extracted from this document.{hint}")
    return result


def _progress(on_page: ProgressFn | None, done: int, total: int) -> None:
    if on_page is not None:
        on_page(done, total)


def _heading_path(stack: list[tuple[int, str]]) -> tuple[str, ...]:
    return tuple(title for _, title in stack)


def _push_heading(stack: list[tuple[int, str]], level: int, title: str) -> None:
    """A heading closes every open heading of its level or deeper."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, title))


# --------------------------------------------------------------------------- PDF


def _import_pymupdf(lean: bool | None = None):
    """PyMuPDF; in sandbox children (``lean``) without its optional extras.

    pymupdf 2.x imports ``pymupdf.layout`` (an ONNX layout model) and ``pymupdf4llm`` when
    they are installed: ~1 s and numpy's thread pool, neither used by VSM. PyMuPDF treats
    both as optional (it guards their imports with ``except ImportError``), so a child
    marks them absent before the first import. Lean, the import starts no threads, which is
    what lets the sandbox's fork server preload it (see ``preload``).
    """
    from . import sandbox

    if lean is None:
        lean = sandbox.in_child()
    if lean and "pymupdf" not in sys.modules:
        for optional in ("pymupdf.layout", "pymupdf4llm"):
            sys.modules.setdefault(optional, None)  # type: ignore[arg-type]
    import pymupdf

    if hasattr(pymupdf, "no_recommend_layout"):
        pymupdf.no_recommend_layout()
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    return pymupdf


@dataclass(slots=True)
class _Line:
    """A visual line of a PDF page with the style facts heading detection needs."""

    text: str
    size: float
    bold: bool
    x0: float
    y0: float
    x1: float
    y1: float
    kind: str = "body"  # body | heading | table_row | ocr
    level: int = 0
    confidence: float | None = None


def _span_is_bold(span: dict) -> bool:
    return bool(span.get("flags", 0) & 16) or "bold" in str(span.get("font", "")).lower()


def _page_lines(page, pymupdf) -> list[_Line]:
    """Text-layer lines in content order; pieces on one baseline are joined into one line."""
    data = page.get_text("dict", flags=pymupdf.TEXTFLAGS_TEXT)
    lines: list[_Line] = []
    for block in data.get("blocks", []):
        if block.get("type", 0) != 0:
            continue
        for line in block.get("lines", []):
            spans = [s for s in line.get("spans", []) if s.get("text", "").strip()]
            if not spans:
                continue
            text = "".join(s["text"] for s in line["spans"]).strip()
            main = max(spans, key=lambda s: len(s["text"].strip()))
            x0, y0, x1, y1 = line["bbox"]
            new = _Line(text, round(float(main["size"]) * 2) / 2, all(_span_is_bold(s) for s in spans), x0, y0, x1, y1)
            prev = lines[-1] if lines else None
            if prev is not None:
                overlap = min(prev.y1, y1) - max(prev.y0, y0)
                if overlap > 0.6 * min(prev.y1 - prev.y0, y1 - y0) and x0 >= prev.x1 - 1:
                    prev.text = f"{prev.text} {text}"
                    prev.x1 = max(prev.x1, x1)
                    prev.bold = prev.bold and new.bold
                    continue
            lines.append(new)
    return lines


def _page_tables(page, lines: list[_Line], warnings: list[str], number: int) -> list[_Line]:
    """Ruled tables as ``table_row`` lines ("cell | cell"); the text they cover leaves ``lines``.

    ``find_tables`` costs ~50 ms a page even on pages without tables, so it only runs on
    pages that draw enough vector lines to hold a ruled table.
    """
    try:
        # A ruled table needs at least a few strokes (one path may hold all of them).
        if sum(len(d.get("items", ())) or 1 for d in page.get_cdrawings()) < 4:
            return lines
        tables = page.find_tables().tables
    except Exception as exc:  # table detection is a bonus; never lose the page for it
        warnings.append(f"Page {number}: table detection failed ({exc}); tables read as plain lines.")
        return lines
    if not tables:
        return lines
    boxes = []
    rows_by_table: list[tuple[float, list[_Line]]] = []
    for table in tables:
        x0, y0, x1, y1 = table.bbox
        boxes.append((x0, y0, x1, y1))
        rows: list[_Line] = []
        for row in table.rows:
            cells = []
            for cell in row.cells:
                if cell is None:
                    continue
                text = " ".join(page.get_textbox(cell).split())
                cells.append(text)
            if any(cells):
                ry0 = min(c[1] for c in row.cells if c is not None)
                ry1 = max(c[3] for c in row.cells if c is not None)
                rows.append(_Line(" | ".join(cells), 0.0, False, x0, ry0, x1, ry1, kind="table_row"))
        rows_by_table.append((y0, rows))

    def inside(line: _Line) -> bool:
        cx, cy = (line.x0 + line.x1) / 2, (line.y0 + line.y1) / 2
        return any(bx0 <= cx <= bx1 and by0 <= cy <= by1 for bx0, by0, bx1, by1 in boxes)

    kept = [ln for ln in lines if not inside(ln)]
    # Put each table where it sits on the page: before the first line that starts below its top.
    for top, rows in sorted(rows_by_table, key=lambda t: t[0], reverse=True):
        at = next((i for i, ln in enumerate(kept) if ln.y0 > top and ln.kind != "table_row"), len(kept))
        kept[at:at] = rows
    return kept


def _needs_ocr(page, chars: int, config: IngestConfig, pymupdf) -> bool:
    """A page with (almost) no text layer, or a full-page scan under a thin text layer."""
    if chars >= max(config.ocr.min_text_chars, 200):
        return False
    try:
        images = page.get_image_info()
    except Exception:
        images = []
    area = abs(page.rect)
    covered = sum(abs(page.rect & pymupdf.Rect(img["bbox"])) for img in images) if images else 0.0
    if chars < config.ocr.min_text_chars:
        # Blank pages (no images, no vector art) are not worth 3 s of OCR.
        return bool(images) or len(page.get_cdrawings()) > 0
    return area > 0 and covered / area >= 0.6


def _render(page, config: IngestConfig):
    """The page as an RGB numpy array at the OCR dpi, lowered for oversized pages."""
    import numpy as np

    dpi = config.ocr.dpi
    w_in, h_in = page.rect.width / 72, page.rect.height / 72
    if w_in * h_in * dpi * dpi > config.ocr.max_pixels:
        dpi = max(50, int((config.ocr.max_pixels / max(w_in * h_in, 1e-6)) ** 0.5))
    pix = page.get_pixmap(dpi=dpi, alpha=False)
    img = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, pix.n)
    if pix.n == 1:
        img = np.repeat(img, 3, axis=2)
    elif pix.n > 3:
        img = img[:, :, :3]
    return img


def _ocr_paragraphs(backend: OcrBackend, image, config: IngestConfig) -> tuple[list[tuple[list[str], float]], float | None]:
    """OCR an image into paragraphs (row texts and mean confidence) and the page's mean confidence.

    Means are weighted by characters, so a long confident line outweighs a stray low-scoring mark.
    """
    from .ocr import group_paragraphs

    lines = [ln for ln in backend.recognize(image) if ln.confidence >= config.ocr.min_confidence]
    paragraphs: list[tuple[list[str], float]] = []
    weighted = 0.0
    chars = 0
    for para in group_paragraphs(lines):
        members: list[OcrLine] = [ln for row in para for ln in row]
        n = sum(len(ln.text) for ln in members)
        score = sum(ln.confidence * len(ln.text) for ln in members)
        paragraphs.append(([" ".join(ln.text for ln in row) for row in para], round(score / max(n, 1), 4)))
        weighted += score
        chars += n
    return paragraphs, (round(weighted / chars, 4) if chars else None)


def _classify_headings(pages: list[list[_Line]], toc: list[list[Any]]) -> None:
    """Mark heading lines: by the PDF outline when it matches the text, else by font size."""
    text_lines = [ln for lines in pages for ln in lines if ln.kind == "body"]
    if not text_lines:
        return
    def norm(text: str) -> str:
        return re.sub(r"\s+", "", text)

    if toc:
        wanted: dict[tuple[int, str], int] = {}
        for entry in toc:
            level, title, page_no = int(entry[0]), str(entry[1]), int(entry[2])
            if title.strip() and page_no >= 1:
                wanted[(page_no, norm(title))] = level
        matched = 0
        for page_no, lines in enumerate(pages, start=1):
            for ln in lines:
                level = wanted.get((page_no, norm(ln.text)))
                if ln.kind == "body" and level is not None:
                    ln.kind, ln.level = "heading", level
                    matched += 1
        if matched >= max(1, len(wanted) // 2):
            return
        for lines in pages:  # the outline does not match the text: fall back to fonts
            for ln in lines:
                if ln.kind == "heading":
                    ln.kind, ln.level = "body", 0
    chars_by_size: Counter[float] = Counter()
    for ln in text_lines:
        chars_by_size[ln.size] += len(ln.text)
    total_chars = sum(chars_by_size.values())
    body = chars_by_size.most_common(1)[0][0]

    def heading_like(ln: _Line) -> bool:
        text = ln.text.strip()
        return (
            0 < len(text) <= 100
            and text[-1] not in "，,;；:："
            and any(ch.isalpha() for ch in text)
        )

    sizes = sorted(
        {
            ln.size
            for ln in text_lines
            if ln.size >= body * 1.15 and heading_like(ln) and chars_by_size[ln.size] <= 0.3 * total_chars
        },
        reverse=True,
    )[:5]
    level_of = {size: i + 1 for i, size in enumerate(sizes)}
    for ln in text_lines:
        if ln.size in level_of and heading_like(ln):
            ln.kind, ln.level = "heading", level_of[ln.size]
        elif (
            ln.bold
            and ln.size >= body
            and heading_like(ln)
            and len(ln.text) <= 60
            and ln.text.strip()[-1] not in SENTENCE_END + "."
        ):
            ln.kind, ln.level = "heading", len(sizes) + 1


def _group_page(lines: list[_Line], page_no: int) -> list[tuple[str, list[_Line]]]:
    """Group a page's lines into (kind, lines) runs: headings, paragraphs and table rows.

    A paragraph ends where the vertical gap is clearly wider than the page's usual line gap,
    where a line is indented (first-line indent), or where the reading order jumps up.
    """
    body_gaps = [
        b.y0 - a.y1
        for a, b in zip(lines, lines[1:])
        if a.kind == b.kind == "body" and b.y0 >= a.y0 and b.y0 - a.y1 >= -1
    ]
    usual_gap = statistics.median(body_gaps) if body_gaps else 0.0
    groups: list[tuple[str, list[_Line]]] = []
    for ln in lines:
        if groups:
            kind, current = groups[-1]
            prev = current[-1]
            height = max(prev.y1 - prev.y0, ln.y1 - ln.y0, 1.0)
            same = (
                kind == ln.kind
                and kind in ("body", "heading", "ocr")
                and ln.level == prev.level
                and ln.y0 >= prev.y0  # still moving down the page
                and ln.y0 - prev.y1 <= usual_gap + 0.5 * height
                and not (kind == "body" and ln.x0 > prev.x0 + 0.9 * max(ln.size, 6))  # first-line indent
            )
            if same:
                current.append(ln)
                continue
        groups.append((ln.kind, [ln]))
    return groups


def load_pdf(path: str, config: IngestConfig, on_page: ProgressFn | None = None) -> LoadResult:
    """PDF page by page: text layer where there is one, OCR where there is not."""
    pymupdf = _import_pymupdf()
    warnings: list[str] = []
    pymupdf.TOOLS.reset_mupdf_warnings()  # warnings are process-wide; count only this file's
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:
        raise CorruptFile(f"This PDF is damaged and cannot be opened ({exc}).") from exc
    with doc:
        if doc.needs_pass:
            raise EncryptedPdf(
                "This PDF is protected by a password. Remove the protection (for example "
                "print it to a new PDF) and upload it again."
            )
        total = doc.page_count
        if total == 0:
            raise CorruptFile("This PDF has no readable pages; it is probably truncated or damaged.")
        if total > config.max_pages:
            raise TooLarge(f"This PDF has {total:,} pages; the limit is {config.max_pages:,}. Split it into parts.")
        try:
            toc = doc.get_toc(simple=True)
        except Exception:
            toc = []
        backend = None
        ocr_done = 0
        ocr_skipped: list[int] = []
        failed: list[int] = []
        page_lines: list[list[_Line]] = []
        ocr_pages: dict[int, list[tuple[list[str], float]]] = {}
        infos: list[PageInfo] = []
        for index in range(total):
            number = index + 1
            try:
                page = doc.load_page(index)
                lines = _page_lines(page, pymupdf)
            except Exception as exc:
                failed.append(number)
                warnings.append(f"Page {number} could not be read ({exc}).")
                page_lines.append([])
                infos.append(PageInfo(number, 0))
                _progress(on_page, number, total)
                continue
            chars = sum(count_nonspace(ln.text) for ln in lines)
            info = PageInfo(number, chars)
            if _needs_ocr(page, chars, config, pymupdf):
                if not config.ocr.enabled or ocr_done >= config.ocr.max_pages:
                    ocr_skipped.append(number)
                else:
                    if backend is None:
                        from .ocr import get_backend

                        backend = get_backend(config.ocr.backend, config.ocr.lang)
                    paragraphs, mean = _ocr_paragraphs(backend, _render(page, config), config)
                    ocr_done += 1
                    ocr_pages[number] = paragraphs
                    lines = [_Line(row, 0.0, False, 0, 0, 0, 0, kind="ocr") for rows, _ in paragraphs for row in rows]
                    info = PageInfo(number, sum(count_nonspace(ln.text) for ln in lines), ocr=True, ocr_confidence=mean)
                    if info.ocr_confidence is not None and info.ocr_confidence < config.ocr.warn_below:
                        warnings.append(
                            f"Page {number}: OCR confidence is low ({info.ocr_confidence:.2f}); check its text."
                        )
            elif config.pdf_tables:
                lines = _page_tables(page, lines, warnings, number)
            info.text = "\n".join(ln.text for ln in lines)
            page_lines.append(lines)
            infos.append(info)
            _progress(on_page, number, total)
        if failed and len(failed) == total:
            raise CorruptFile("No page of this PDF could be read; the file is damaged.")
        if ocr_skipped:
            reason = "OCR is switched off" if not config.ocr.enabled else f"the OCR limit of {config.ocr.max_pages} pages was reached"
            warnings.append(
                f"{len(ocr_skipped)} scanned page(s) were not read because {reason}: "
                + ", ".join(map(str, ocr_skipped[:20]))
                + ("…" if len(ocr_skipped) > 20 else "")
            )
        try:
            notes = pymupdf.TOOLS.mupdf_warnings()
        except Exception:
            notes = ""
        repaired = bool(getattr(doc, "is_repaired", False))
        if repaired or notes:
            what = "is damaged and was repaired while reading; some text may be missing" if repaired else "had problems while reading"
            detail = " ".join(notes.split())[:300]
            warnings.append(f"This PDF {what}" + (f" ({detail})" if detail else "") + ".")
        meta = {
            "page_count": total,
            "ocr_pages": ocr_done,
            "ocr_backend": config.ocr.backend if ocr_done else None,
            "title": (doc.metadata or {}).get("title") or None,
            "repaired": repaired,
        }

    _classify_headings(page_lines, toc)
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    for number, lines in enumerate(page_lines, start=1):
        if number in ocr_pages:
            for rows, conf in ocr_pages[number]:
                blocks.append(Block("\n".join(rows), "paragraph", number, _heading_path(stack), ocr=True, ocr_confidence=conf))
            continue
        for kind, group in _group_page(lines, number):
            if kind == "heading":
                title = group[0].text
                for ln in group[1:]:
                    title = soft_join(title, ln.text)
                _push_heading(stack, group[0].level, title)
                blocks.append(Block(title, "heading", number, _heading_path(stack), level=group[0].level))
            elif kind == "table_row":
                for ln in group:
                    blocks.append(Block(ln.text, "table_row", number, _heading_path(stack)))
            else:
                blocks.append(Block("\n".join(ln.text for ln in group), "paragraph", number, _heading_path(stack)))
    return LoadResult("pdf", blocks, infos, warnings, meta)


# --------------------------------------------------------------------------- images


def load_image(path: str, config: IngestConfig, on_page: ProgressFn | None = None) -> LoadResult:
    """A photo or scan (PNG, JPEG, TIFF…): every frame is OCR'd as one page."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .ocr import get_backend

    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"This image is too large to read safely ({exc}).") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise CorruptFile(f"This image cannot be decoded ({exc}).") from exc
    with image:
        width, height = image.size
        if width * height > config.max_image_pixels:
            raise TooLarge(
                f"This image is {width}×{height} pixels; the limit is {config.max_image_pixels:,} pixels."
            )
        frames = getattr(image, "n_frames", 1)
        if frames > config.max_pages:
            raise TooLarge(f"This image has {frames:,} pages; the limit is {config.max_pages:,}.")
        backend = get_backend(config.ocr.backend, config.ocr.lang)
        blocks: list[Block] = []
        infos: list[PageInfo] = []
        warnings: list[str] = []
        for index in range(frames):
            number = index + 1
            try:
                image.seek(index)
                frame = image.convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise CorruptFile(f"Page {number} of this image cannot be decoded ({exc}).") from exc
            if frame.width * frame.height > config.ocr.max_pixels:
                scale = (config.ocr.max_pixels / (frame.width * frame.height)) ** 0.5
                frame = frame.resize((max(1, int(frame.width * scale)), max(1, int(frame.height * scale))))
            paragraphs, mean = _ocr_paragraphs(backend, np.asarray(frame), config)
            for rows, conf in paragraphs:
                blocks.append(Block("\n".join(rows), "paragraph", number, (), ocr=True, ocr_confidence=conf))
            text = "\n".join(row for rows, _ in paragraphs for row in rows)
            infos.append(PageInfo(number, count_nonspace(text), True, mean, text))
            if mean is not None and mean < config.ocr.warn_below:
                warnings.append(f"Page {number}: OCR confidence is low ({mean:.2f}); check its text.")
            _progress(on_page, number, frames)
    return LoadResult("image", blocks, infos, warnings, {"page_count": frames, "ocr_pages": frames, "ocr_backend": config.ocr.backend})


# --------------------------------------------------------------------------- DOCX

_DOCX_HEADING = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _docx_level(paragraph) -> int:
    """Heading level of a Word paragraph (0 = not a heading; Title counts as level 1)."""
    try:
        style = paragraph.style
    except Exception:
        style = None
    name = (getattr(style, "name", None) or "").strip()
    match = _DOCX_HEADING.match(name)
    if match:
        return int(match.group(1)) + 1
    if name.lower() in ("title", "标题"):
        return 1
    # Outline level set on the paragraph or its style (documents with custom heading styles).
    for element in (paragraph._p, getattr(style, "element", None)):
        if element is None:
            continue
        found = element.find(f"{_W}pPr/{_W}outlineLvl")
        if found is not None:
            value = found.get(f"{_W}val")
            if value is not None and value.isdigit() and int(value) < 9:
                return int(value) + 2
    return 0


def _docx_rows(table) -> list[str]:
    """Rows as "cell | cell"; a merged cell appears once, not once per grid column."""
    rows = []
    for row in table.rows:
        seen: list[Any] = []
        cells = []
        for cell in row.cells:
            if any(cell._tc is tc for tc in seen):
                continue
            seen.append(cell._tc)
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def load_docx(path: str, config: IngestConfig, on_page: ProgressFn | None = None) -> LoadResult:
    """Word paragraphs in order; heading styles give the heading path, tables become rows."""
    from .zipcheck import check_zip

    check_zip(
        path,
        max_entries=config.zip_max_entries,
        max_entry_bytes=config.zip_max_entry_bytes,
        max_total_bytes=config.zip_max_total_bytes,
        max_ratio=config.zip_max_ratio,
    )
    import docx
    from docx.table import Table

    try:
        document = docx.Document(path)
        items = list(document.iter_inner_content())
    except LoadError:
        raise
    except Exception as exc:
        raise CorruptFile(f"This Word document is damaged and cannot be read ({exc}).") from exc
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    for item in items:
        if isinstance(item, Table):
            for row in _docx_rows(item):
                blocks.append(Block(row, "table_row", None, _heading_path(stack)))
            continue
        text = item.text.strip()
        if not text:
            continue
        level = _docx_level(item)
        if level:
            title = " ".join(text.split())
            _push_heading(stack, level, title)
            blocks.append(Block(title, "heading", None, _heading_path(stack), level=level))
        else:
            blocks.append(Block(text, "paragraph", None, _heading_path(stack)))
    _progress(on_page, 1, 1)
    title = None
    try:
        title = document.core_properties.title or None
    except Exception:
        pass
    return LoadResult("docx", blocks, [], [], {"title": title})


# --------------------------------------------------------------------------- Markdown

_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n(---|\.\.\.)\s*\n", re.DOTALL)


def _inline_text(token) -> str:
    """Plain text of an inline token: markup dropped, image alt kept.

    Soft breaks (a newline inside a paragraph) are joined without a space between CJK
    characters and with one otherwise; hard breaks stay newlines.
    """
    pieces = [""]
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            pieces[-1] += child.content
        elif child.type == "softbreak":
            pieces.append("")
        elif child.type == "hardbreak":
            pieces[-1] += "\n"
        elif child.type == "image":
            pieces[-1] += _inline_text(child)
    text = pieces[0]
    for piece in pieces[1:]:
        text = soft_join(text, piece)
    return text.strip()


def load_markdown(path: str, config: IngestConfig, on_page: ProgressFn | None = None) -> LoadResult:
    """Markdown through markdown-it: # levels give the heading path, tables become rows."""
    from markdown_it import MarkdownIt

    with open(path, "rb") as fh:
        text, encoding = decode_bytes(fh.read())
    text = _FRONT_MATTER.sub("", text, count=1)
    tokens = MarkdownIt("commonmark", {"html": False}).enable("table").parse(text)
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    row: list[str] | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            level = int(tok.tag[1])
            title = _inline_text(tokens[i + 1])
            if title:
                _push_heading(stack, level, title)
                blocks.append(Block(title, "heading", None, _heading_path(stack), level=level))
            i += 3
            continue
        if tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close" and row is not None:
            if any(row):
                blocks.append(Block(" | ".join(row), "table_row", None, _heading_path(stack)))
            row = None
        elif tok.type == "inline" and row is not None:
            row.append(" ".join(_inline_text(tok).split()))
        elif tok.type == "inline":
            para = _inline_text(tok)
            if para:
                blocks.append(Block(para, "paragraph", None, _heading_path(stack)))
        elif tok.type in ("fence", "code_block") and tok.content.strip():
            blocks.append(Block(tok.content.rstrip("\n"), "code", None, _heading_path(stack)))
        elif tok.type == "html_block":
            stripped = re.sub(r"<[^>]+>", " ", tok.content)
            if stripped.strip():
                blocks.append(Block(" ".join(stripped.split()), "paragraph", None, _heading_path(stack)))
        i += 1
    _progress(on_page, 1, 1)
    return LoadResult("markdown", blocks, [], [], {"encoding": encoding})


# --------------------------------------------------------------------------- HTML

_HTML_DROP = ("script", "style", "nav", "noscript", "template", "svg", "header", "footer", "aside", "form", "iframe", "head")
_HTML_PARA = {"p", "pre", "blockquote", "dt", "dd", "caption", "figcaption", "address", "summary", "li"}
_HTML_BLOCKS = _HTML_PARA | {
    "div", "section", "article", "main", "ul", "ol", "dl", "table", "body", "html", "figure",
    "details", "fieldset", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "br", "tr", "td", "th",
}


_BR = "\ue000"  # stands for <br> until whitespace is normalised
_HTML_WS = re.compile(r"[ \t\r\n\f\v]+")
_CJK_NEWLINE = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])[ \t]*[\r\n]+[ \t]*(?=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])")


def _html_text(raw: str) -> str:
    """HTML text as a browser shows it: source newlines are spaces, <br> is a line break.

    A source line break between two Chinese characters is not a space (browsers differ;
    for Chinese text no space is right).
    """
    lines = []
    for line in raw.split(_BR):
        line = _HTML_WS.sub(" ", _CJK_NEWLINE.sub("", line)).strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def load_html(path: str, config: IngestConfig, on_page: ProgressFn | None = None) -> LoadResult:
    """HTML via BeautifulSoup: h1–h6 give the heading path, tables become rows, chrome is dropped."""
    from bs4 import BeautifulSoup, NavigableString, Tag

    with open(path, "rb") as fh:
        text, encoding = decode_bytes(fh.read())
    soup = BeautifulSoup(text, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    for br in soup.find_all("br"):
        br.replace_with(_BR)
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    inline: list[str] = []

    def flush() -> None:
        para = _html_text("".join(inline))
        inline.clear()
        if para:
            blocks.append(Block(para, "paragraph", None, _heading_path(stack)))

    def has_blocks(tag: Tag) -> bool:
        return any(isinstance(c, Tag) and c.name in _HTML_BLOCKS for c in tag.descendants)

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child).__name__ in ("Comment", "Doctype", "Declaration", "ProcessingInstruction", "CData"):
                    continue
                inline.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
                flush()
                heading = " ".join(_html_text(child.get_text()).split())
                if heading:
                    level = int(name[1])
                    _push_heading(stack, level, heading)
                    blocks.append(Block(heading, "heading", None, _heading_path(stack), level=level))
            elif name == "table":
                flush()
                for tr in child.find_all("tr"):
                    if tr.find_parent("table") is not child:
                        continue
                    cells = [" ".join(_html_text(c.get_text()).split()) for c in tr.find_all(["td", "th"], recursive=False)]
                    if any(cells):
                        blocks.append(Block(" | ".join(cells), "table_row", None, _heading_path(stack)))
            elif name in _HTML_PARA and not has_blocks(child):
                flush()
                if name == "pre":
                    para = child.get_text().replace(_BR, "\n").strip("\n")
                else:
                    para = _html_text(child.get_text())
                if para:
                    blocks.append(Block(para, "code" if name == "pre" else "paragraph", None, _heading_path(stack)))
            elif name in _HTML_BLOCKS:
                flush()
                walk(child)
                flush()
            else:  # inline element: part of the surrounding paragraph
                inline.append(child.get_text())

    walk(soup.body or soup)
    flush()
    _progress(on_page, 1, 1)
    return LoadResult("html", blocks, [], [], {"encoding": encoding, "title": title})


# --------------------------------------------------------------------------- plain text


def load_text(path: str, config: IngestConfig, on_page: ProgressFn | None = None) -> LoadResult:
    """Plain text in any common encoding; blank lines separate paragraphs, form feeds pages."""
    with open(path, "rb") as fh:
        text, encoding = decode_bytes(fh.read())
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paged = "\f" in text.strip("\f")
    chunks = text.split("\f") if paged else [text]
    if paged and not chunks[-1].strip():
        chunks.pop()  # pdftotext ends every page, the last one too, with a form feed
    if paged and len(chunks) > config.max_pages:
        raise TooLarge(f"This text has {len(chunks):,} pages; the limit is {config.max_pages:,}.")
    blocks: list[Block] = []
    infos: list[PageInfo] = []
    for number, page_text in enumerate(chunks, start=1):
        page = number if paged else None
        for para in re.split(r"\n[ \t\u3000]*\n", page_text):
            lines = [ln.rstrip() for ln in para.split("\n") if ln.strip()]
            if lines:
                blocks.append(Block("\n".join(lines), "paragraph", page))
        if paged:
            infos.append(PageInfo(number, count_nonspace(page_text), text=page_text.strip("\n")))
    _progress(on_page, 1, 1)
    return LoadResult("text", blocks, infos, [], {"encoding": encoding, "page_count": len(infos) or None})
