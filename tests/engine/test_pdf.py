"""PDF loading: text layer page by page, headings, tables, OCR only where there is no text."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest

from domains.engine.clean import clean
from domains.engine.config import IngestConfig, OcrConfig
from domains.engine.errors import (
    CorruptFile,
    EmptyFile,
    EncryptedPdf,
    OcrUnavailable,
    TooLarge,
)
from domains.engine.ingest import ingest_file
from domains.engine.loaders import load

from . import docs


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_regulation_pages_headings_and_furniture(corpus, inline_config):
    progress = []
    result = ingest_file(corpus["regulation-long.pdf"], inline_config, on_page=lambda d, t: progress.append((d, t)))
    assert result.kind == "pdf"
    assert progress == [(n, 6) for n in range(1, 7)]
    assert [p.number for p in result.pages] == list(range(1, 7))
    assert not any(p.ocr for p in result.pages)
    # The raw page text still shows header and page number; the cleaned text does not.
    assert "内部规章制度汇编" in result.pages[0].text and "第 1 页 共 6 页" in result.pages[0].text
    assert "内部规章制度汇编" not in result.text
    assert not re.search(r"第 ?\d+ ?页", result.text)
    # Lines wrapped at the margin are joined again: the article reads as one sentence.
    assert "根据国家有关财务制度，结合学校实际，制定本办法。" in result.text
    # Font sizes give the heading path: title > chapter.
    headings = [(b.text, b.level) for b in result.blocks if b.kind == "heading"]
    assert headings[:2] == [(docs.REGULATION_TITLE, 1), ("第一章 总则", 2)]
    third = next(c for c in result.chunks if "第三条" in c.text)
    assert third.heading_path == (docs.REGULATION_TITLE, "第一章 总则")
    assert (third.page_start, third.page_end) == (1, 2)
    assert all(result.text[c.char_start : c.char_end] == c.text for c in result.chunks)


def test_article_split_by_a_page_break_is_rejoined(corpus, inline_config):
    result = ingest_file(corpus["regulation-long.pdf"], inline_config)
    # Chapter one's articles alternate between pages 1 and 2; each article stays whole.
    for article in docs.REGULATION[0][1]:
        assert article in result.text


def test_manual_headings_fault_codes_and_table_rows(corpus, inline_config):
    result = ingest_file(corpus["manual.pdf"], inline_config)
    assert [b.text for b in result.blocks if b.kind == "heading"] == ["1 Safety", "2 Fault codes"]
    rows = [b.text for b in result.blocks if b.kind == "table_row"]
    assert rows == ["Code | Meaning | Action", "E100 | Over-current | Check wiring", "E200 | Under-voltage | Check strings"]
    assert "E100 over-current: the output current exceeded 150 percent of the rated value." in result.text
    assert "ACME SUN-5K Inverter User Manual" not in result.text
    assert "Page 1 of 2" not in result.text
    fault = next(c for c in result.chunks if "E300" in c.text)
    assert fault.heading_path == ("2 Fault codes",)
    assert fault.page_start == fault.page_end == 2


def test_encrypted_pdf(corpus, inline_config):
    with pytest.raises(EncryptedPdf, match="password"):
        ingest_file(corpus["encrypted.pdf"], inline_config)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"%PDF-1.7\n" + bytes(range(256)) * 40,  # garbled
        lambda data: b"%PDF-1.4\n%%EOF\n",  # header and nothing else
        lambda data: b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n" + b"\x00" * 500,
    ],
    ids=["garbled", "hollow", "no-pages"],
)
def test_corrupt_pdf(corpus, tmp_path, inline_config, damage):
    path = tmp_path / "broken.pdf"
    path.write_bytes(damage(corpus["manual.pdf"].read_bytes()))
    with pytest.raises((CorruptFile, EmptyFile)) as caught:
        ingest_file(path, inline_config)
    assert "damaged" in str(caught.value) or "No text" in str(caught.value)


def test_truncated_pdf_is_repaired_with_a_warning(corpus, tmp_path, inline_config):
    """MuPDF repairs what it can of a cut-off download; the user is told text may be missing."""
    data = corpus["manual.pdf"].read_bytes()
    path = tmp_path / "truncated.pdf"
    path.write_bytes(data[: len(data) // 3])
    result = ingest_file(path, inline_config)
    assert result.meta["repaired"] is True
    assert any("damaged" in w and "missing" in w for w in result.warnings)
    assert "E100" not in result.text  # page two's text was in the part cut off
    assert "Only qualified electricians" in result.text


def test_page_limit(corpus):
    with pytest.raises(TooLarge, match="6 pages; the limit is 4"):
        ingest_file(corpus["regulation-long.pdf"], IngestConfig(sandbox=False, max_pages=4))


def test_blank_page_is_not_ocrd(tmp_path, inline_config):
    import pymupdf

    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Only the first page has text, enough to pass the threshold.", fontsize=11)
    doc.new_page()  # blank: no text, no images
    path = tmp_path / "blank.pdf"
    doc.save(path)
    result = ingest_file(path, inline_config)
    assert [(p.number, p.ocr, p.chars) for p in result.pages] == [(1, False, 49), (2, False, 0)]


def test_scanned_pdf_is_ocrd(corpus, inline_config):
    result = ingest_file(corpus["scanned.pdf"], inline_config)
    page = result.pages[0]
    assert page.ocr and page.ocr_confidence is not None and page.ocr_confidence > 0.8
    assert squash(docs.SCANNED_SENTENCE) in squash(result.text)
    assert squash(docs.SCANNED_SENTENCE) in squash(page.text)
    assert all(b.ocr for b in result.blocks)
    assert result.meta["ocr_pages"] == 1
    # The chapter marker recognised by OCR still gives the article its address.
    assert squash(result.chunks[0].heading_path[0]) == "第一章总则"


def test_mixed_pdf_ocrs_only_the_scanned_page(corpus, inline_config):
    result = ingest_file(corpus["mixed.pdf"], inline_config)
    assert [p.ocr for p in result.pages] == [False, True]
    assert result.pages[0].ocr_confidence is None
    assert "第一条 为规范学校经费报销管理，制定本办法。" in result.pages[0].text
    assert squash(docs.SCANNED_SENTENCE) in squash(result.pages[1].text)
    assert [b.ocr for b in result.blocks] == [False] * (len(result.blocks) - 1) + [True]


def test_scanned_pdf_with_ocr_off(corpus):
    config = IngestConfig(sandbox=False, ocr=OcrConfig(enabled=False))
    with pytest.raises(EmptyFile, match="OCR is switched off"):
        ingest_file(corpus["scanned.pdf"], config)
    mixed = load(corpus["mixed.pdf"], "pdf", config)
    assert [p.ocr for p in mixed.pages] == [False, False]
    assert any("OCR is switched off: 2" in w for w in mixed.warnings)


def test_ocr_page_budget(corpus):
    config = IngestConfig(sandbox=False, ocr=OcrConfig(max_pages=0))
    result = load(corpus["mixed.pdf"], "pdf", config)
    assert [p.ocr for p in result.pages] == [False, False]
    assert any("OCR limit of 0 pages" in w for w in result.warnings)


def test_paddle_backend_missing_is_a_clear_error(corpus):
    pytest.importorskip("pymupdf")
    try:
        import paddleocr  # noqa: F401

        pytest.skip("PaddleOCR is installed here")
    except ImportError:
        pass
    config = IngestConfig(sandbox=False, ocr=OcrConfig(backend="paddle"))
    with pytest.raises(OcrUnavailable, match="PaddleOCR is not installed"):
        ingest_file(corpus["scanned.pdf"], config)


def test_image_upload_is_ocrd(tmp_path, inline_config):
    import pymupdf

    src = pymupdf.open()
    page = src.new_page(width=400, height=200)
    page.insert_text((30, 100), docs.SCANNED_SENTENCE, fontname="china-s", fontsize=14)
    path = tmp_path / "photo.png"
    page.get_pixmap(dpi=200).save(path)
    result = ingest_file(path, inline_config)
    assert result.kind == "image"
    assert result.pages[0].ocr
    assert squash(docs.SCANNED_SENTENCE) in squash(result.text)


def test_clean_is_idempotent_on_loaded_pdf(corpus, inline_config):
    loaded = load(corpus["regulation.pdf"], "pdf", inline_config)
    once = clean(loaded)
    twice = clean(replace(loaded, blocks=once))
    assert [b.text for b in twice] == [b.text for b in once]


def test_oversized_image_refused_before_decoding(tmp_path):
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("L", (3000, 2000), 255).save(path)  # 6 MP, tiny on disk
    with pytest.raises(TooLarge, match="3000×2000 pixels"):
        ingest_file(path, IngestConfig(sandbox=False, max_image_pixels=5_000_000))


def test_outline_gives_headings_when_fonts_do_not(tmp_path, inline_config):
    """Same size, same weight everywhere: the PDF's bookmarks (outline) say what the headings are."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page()
    lines = ["第一章 总则", *docs.REGULATION[0][1][:3], "第二章 差旅费", docs.REGULATION[1][1][0]]
    y = 72.0
    for line in lines:
        page.insert_text((72, y), line[:38], fontname="china-s", fontsize=11)
        y += 24
    doc.set_toc([[1, "第一章 总则", 1], [1, "第二章 差旅费", 1]])
    path = tmp_path / "outlined.pdf"
    doc.save(path)
    result = ingest_file(path, inline_config)
    assert [(b.text, b.level) for b in result.blocks if b.kind == "heading"] == [("第一章 总则", 1), ("第二章 差旅费", 1)]
    second = next(b for b in result.blocks if b.text.startswith("第五条"))
    assert second.heading_path == ("第二章 差旅费",)


def test_bold_body_size_lines_are_headings(tmp_path, inline_config):
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Maintenance", fontname="hebo", fontsize=10)
    page.insert_text((72, 90), "Clean the air inlets every month and check the fans for noise.", fontname="helv", fontsize=10)
    page.insert_text((72, 120), "Warranty", fontname="hebo", fontsize=10)
    page.insert_text((72, 138), "The warranty covers five years from the date of installation.", fontname="helv", fontsize=10)
    path = tmp_path / "bold.pdf"
    doc.save(path)
    result = ingest_file(path, inline_config)
    assert [b.text for b in result.blocks if b.kind == "heading"] == ["Maintenance", "Warranty"]
    assert result.chunks[0].text.startswith("Maintenance")


def test_table_drawn_as_one_path(tmp_path, inline_config):
    """Many producers stroke a whole grid as one path; it is still found as a table."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 80), "Fault table follows.", fontsize=10)
    shape = page.new_shape()
    for i in range(4):
        shape.draw_line((72, 100 + 20 * i), (372, 100 + 20 * i))
    for x in (72, 222, 372):
        shape.draw_line((x, 100), (x, 160))
    shape.finish(color=(0, 0, 0), width=0.8)
    shape.commit()
    for i, (code, meaning) in enumerate([("Code", "Meaning"), ("E100", "Over-current"), ("E300", "Over-temperature")]):
        page.insert_text((76, 114 + 20 * i), code, fontsize=10)
        page.insert_text((226, 114 + 20 * i), meaning, fontsize=10)
    path = tmp_path / "grid.pdf"
    doc.save(path)
    result = ingest_file(path, inline_config)
    assert [b.text for b in result.blocks if b.kind == "table_row"] == [
        "Code | Meaning",
        "E100 | Over-current",
        "E300 | Over-temperature",
    ]
