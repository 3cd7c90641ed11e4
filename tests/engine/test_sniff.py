"""The type comes from the bytes, never from the name; bad files get a sentence that says why."""
from __future__ import annotations

import shutil
import zipfile

import pytest

from domains.engine.config import IngestConfig, OcrConfig
from domains.engine.encoding import decode_bytes
from domains.engine.errors import (
    CorruptFile,
    EmptyFile,
    LoadError,
    TooLarge,
    UnsupportedType,
    ZipBomb,
)
from domains.engine.sniff import sniff

from . import docs

HTML = "<!DOCTYPE html><html><body><h1>故障代码</h1><p>E100 过流</p></body></html>"
MARKDOWN = "# 猪场消毒规程\n\n进场人员必须淋浴更衣。\n"
TEXT = "第一条 为规范学校经费报销管理，制定本办法。\n"


@pytest.mark.parametrize(
    "name, payload, kind",
    [
        ("page.html", HTML.encode(), "html"),
        ("notes.txt", HTML.encode(), "html"),  # an HTML page saved as .txt is still HTML
        ("guide.md", MARKDOWN.encode(), "markdown"),
        ("guide.txt", MARKDOWN.encode(), "markdown"),  # "# heading" lines are Markdown
        ("rules.txt", TEXT.encode(), "text"),
        ("rules.md", TEXT.encode(), "markdown"),  # the name only breaks the Markdown/text tie
        ("gbk.txt", TEXT.encode("gbk"), "text"),
        ("bom.txt", b"\xef\xbb\xbf" + TEXT.encode(), "text"),
        ("utf16.txt", TEXT.encode("utf-16"), "text"),
        ("scan.png", docs.png_bytes(), "image"),
        ("scan.dat", docs.png_bytes(), "image"),
    ],
)
def test_detects_kind_from_content(tmp_path, name, payload, kind):
    path = tmp_path / name
    path.write_bytes(payload)
    assert sniff(path, name=name) == kind


def test_pdf_and_docx_detected_whatever_their_names(corpus, tmp_path):
    pdf = tmp_path / "report.docx"
    shutil.copy(corpus["regulation.pdf"], pdf)
    word = tmp_path / "report.pdf"
    shutil.copy(corpus["regulation.docx"], word)
    assert sniff(pdf) == "pdf"
    assert sniff(word) == "docx"


@pytest.mark.parametrize(
    "payload, error, words",
    [
        (b"", EmptyFile, "empty"),
        (b"   \n\t\n", EmptyFile, "whitespace"),
        (b"\x7fELF\x02\x01\x01" + bytes(200), UnsupportedType, "executable"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(200), UnsupportedType, ".docx"),
        (bytes(range(256)) * 20, UnsupportedType, "binary"),
        (b"{\\rtf1\\ansi hello}", UnsupportedType, "RTF"),
        (b"PK\x03\x04garbage that is not a zip", CorruptFile, "zip"),
    ],
)
def test_refuses_with_a_reason(tmp_path, payload, error, words):
    path = tmp_path / "upload.txt"
    path.write_bytes(payload)
    with pytest.raises(error) as caught:
        sniff(path)
    assert words.lower() in str(caught.value).lower()
    assert isinstance(caught.value, LoadError)


def test_binary_disguised_as_text_is_refused(tmp_path):
    path = tmp_path / "rules.txt"
    # Mostly text-like bytes, but with NULs and control codes: not a text file.
    path.write_bytes(b"header\x00\x01\x02\x03" * 500)
    with pytest.raises(UnsupportedType, match="binary"):
        sniff(path)


def test_image_refused_when_ocr_is_off(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(docs.png_bytes())
    with pytest.raises(UnsupportedType, match="OCR"):
        sniff(path, IngestConfig(ocr=OcrConfig(enabled=False)))


def test_too_large_refused_before_reading(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(TEXT.encode() * 100)
    with pytest.raises(TooLarge, match="limit"):
        sniff(path, IngestConfig(max_bytes=1000))


@pytest.mark.parametrize(
    "member, words",
    [("xl/workbook.xml", "Excel"), ("ppt/presentation.xml", "PowerPoint"), ("data.csv", "zip archive")],
)
def test_other_zips_are_named(tmp_path, member, words):
    path = tmp_path / "upload.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, "x")
    with pytest.raises(UnsupportedType, match=words):
        sniff(path)


def test_zip_with_too_many_entries_is_refused_before_parsing(tmp_path):
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(30):
            zf.writestr(f"word/part{i}.xml", "x")
    with pytest.raises(ZipBomb, match="entries"):
        sniff(path, IngestConfig(zip_max_entries=10))


@pytest.mark.parametrize(
    "encoding, prefix",
    [("utf-8", b""), ("gbk", b""), ("gb18030", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16", b"")],
)
def test_decodes_common_chinese_encodings(encoding, prefix):
    text = "第三条 报销金额3000元及以上的需签订协议。\n第四条 报销人应当对报销内容的真实性负责。\n"
    decoded, used = decode_bytes(prefix + text.encode(encoding))
    assert decoded == text
    assert used in {"utf-8", "utf-8-sig", "gb18030", "utf-16"}


def test_decode_refuses_noise():
    with pytest.raises(UnsupportedType):
        decode_bytes(bytes(range(1, 32)) * 200)
