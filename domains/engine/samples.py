"""Turning a shipped Markdown sample into what a scanner makes: a PDF of page images, no text layer.

The demo domain's travel rules are kept as Markdown (reviewable, editable) and rendered here before
upload, so ingestion has to read them through OCR, as it would a real scan.
"""
from __future__ import annotations

import re
from pathlib import Path

PAGE = (595, 842)  # A4 in points
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")


def plain_lines(markdown: str) -> list[str]:
    """The text a reader sees: headings without '#', table rows as spaced cells, no rule rows."""
    lines = []
    for raw in markdown.splitlines():
        line = raw.strip()
        if _TABLE_RULE.match(line):
            continue
        if line.startswith("|"):
            line = "    ".join(cell.strip() for cell in line.strip("|").split("|"))
        line = line.lstrip("#").strip()
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def render_scanned_pdf(markdown: str, path: Path, *, dpi: int = 150, lines_per_page: int = 30,
                       font_size: float = 13.0, max_pages: int | None = None) -> int:
    """Write ``markdown`` as an image-only PDF at ``path``; returns the number of pages.

    Each page is typeset with PyMuPDF's built-in CJK font, rasterised at ``dpi`` and placed as a
    picture on a fresh page, which is exactly what a scanner hands over.
    """
    import pymupdf

    lines = plain_lines(markdown)
    pages = [lines[i:i + lines_per_page] for i in range(0, len(lines), lines_per_page)] or [[]]
    if max_pages is not None:
        pages = pages[:max_pages]
    out = pymupdf.open()
    try:
        for page_lines in pages:
            src = pymupdf.open()
            page = src.new_page(width=PAGE[0], height=PAGE[1])
            y = 70.0
            for line in page_lines:
                if line:
                    page.insert_text((60, y), line, fontname="china-s", fontsize=font_size)
                y += font_size * 1.9
            pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
            target = out.new_page(width=PAGE[0], height=PAGE[1])
            target.insert_image(target.rect, pixmap=pix)
            src.close()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        out.save(tmp, deflate=True)
        tmp.replace(path)
        return len(pages)
    finally:
        out.close()
