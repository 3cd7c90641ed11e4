"""Decide what a file is from its bytes, never from its name.

Uploads arrive renamed, mislabelled or hostile (an executable called ``rules.txt``); the
type decides which parser touches the bytes, so it must come from the content. Only the
harmless Markdown-versus-plain-text tie may use the file name as a hint.
"""
from __future__ import annotations

import os
import re
import zipfile
from typing import TYPE_CHECKING, Literal

from .encoding import BINARY_MESSAGE, bom_encoding, detect_encoding
from .errors import CorruptFile, EmptyFile, TooLarge, UnsupportedType, ZipBomb
from .zipcheck import declared_entry_count

if TYPE_CHECKING:
    from .config import IngestConfig

Kind = Literal["pdf", "docx", "html", "markdown", "text", "image"]
KINDS: tuple[str, ...] = ("pdf", "docx", "html", "markdown", "text", "image")

_HEAD = 65_536

# Formats we recognise only to refuse them with a useful sentence.
_REFUSED: tuple[tuple[bytes, int, str], ...] = (
    (b"\x7fELF", 0, "an executable program (ELF)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "a legacy Office file (.doc/.xls/.ppt); save it as .docx"),
    (b"{\\rtf", 0, "an RTF document; save it as .docx or PDF"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive"),
    (b"Rar!\x1a\x07", 0, "a RAR archive"),
    (b"\xfd7zXZ\x00", 0, "an xz archive"),
    (b"\x28\xb5\x2f\xfd", 0, "a zstd archive"),
    (b"SQLite format 3\x00", 0, "an SQLite database"),
    (b"%!PS", 0, "a PostScript file; convert it to PDF"),
    (b"ftyp", 4, "an audio/video file"),
    (b"ID3", 0, "an MP3 file"),
    (b"OggS", 0, "an Ogg audio file"),
)

_IMAGES: tuple[tuple[bytes, int], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"\xff\xd8\xff", 0),
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"II*\x00", 0),
    (b"MM\x00*", 0),
)

_HTML_DOC = re.compile(r"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]", re.IGNORECASE)
_HTML_BLOCK = re.compile(r"</(p|div|table|tr|li|h[1-6]|section|article)>", re.IGNORECASE)
_MD_SIGNS = re.compile(
    r"^(#{1,6}[ \t]+\S|```|~~~|\|?[ \t]*:?-{3,}:?[ \t]*\|)",
    re.MULTILINE,
)


def _starts(head: bytes, magic: bytes, offset: int) -> bool:
    return head[offset : offset + len(magic)] == magic


def _zip_kind(path: str | os.PathLike[str], config: IngestConfig) -> str:
    """DOCX is a zip holding word/document.xml; other zips are refused by name."""
    count = declared_entry_count(path)
    if count is None:
        raise CorruptFile("The file starts like a zip/Word container but its directory is unreadable.")
    if count > config.zip_max_entries:
        raise ZipBomb(
            f"This archive declares {count:,} entries (limit {config.zip_max_entries:,}); "
            "it looks like a zip bomb and was not opened."
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptFile(f"The file is not a readable zip/Word container ({exc}).") from exc
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        raise UnsupportedType("Excel workbooks (.xlsx) are not supported; export the sheet as PDF or CSV text.")
    if "ppt/presentation.xml" in names:
        raise UnsupportedType("PowerPoint files (.pptx) are not supported; export them as PDF.")
    if "mimetype" in names or "content.xml" in names:
        raise UnsupportedType("OpenDocument files are not supported; save as .docx or PDF.")
    raise UnsupportedType("This is a zip archive, not a document; upload the documents inside it one by one.")


def _text_kind(head_text: str, name: str | None) -> str:
    """HTML, Markdown or plain text, judged on the first 64 KB of decoded text."""
    probe = head_text.lstrip()[:4096]
    if _HTML_DOC.search(probe):
        return "html"
    if _MD_SIGNS.search(head_text):
        return "markdown"
    if probe.startswith("<") and len(_HTML_BLOCK.findall(head_text)) >= 2:
        return "html"
    if name and name.lower().endswith((".md", ".markdown")):
        return "markdown"
    return "text"


def sniff(path: str | os.PathLike[str], config: IngestConfig | None = None, *, name: str | None = None) -> str:
    """Return the kind of document at ``path`` (one of ``KINDS``) or raise a LoadError.

    ``name``: the original upload name, used only to call a plain-text file Markdown.
    """
    if config is None:
        from .config import IngestConfig

        config = IngestConfig()
    if not os.path.isfile(path):
        raise UnsupportedType("This is not a regular file.")
    size = os.path.getsize(path)
    if size == 0:
        raise EmptyFile("The file is empty (0 bytes).")
    if size > config.max_bytes:
        raise TooLarge(
            f"The file is {size / 1048576:,.1f} MB; the limit is {config.max_bytes / 1048576:,.1f} MB."
        )
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    # The PDF header may follow a little junk (the spec allows up to 1 KB of it).
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path, config)
    for magic, offset, what in _REFUSED:
        if _starts(head, magic, offset):
            raise UnsupportedType(f"This file is {what}, which VSM does not read.")
    is_image = (
        any(_starts(head, magic, off) for magic, off in _IMAGES)
        or (head.startswith(b"RIFF") and _starts(head, b"WEBP", 8))
        or (head.startswith(b"BM") and len(head) >= 6 and int.from_bytes(head[2:6], "little") == size)
    )
    if is_image:
        if not config.ocr.enabled:
            raise UnsupportedType("This is an image; reading images needs OCR, which is switched off.")
        return "image"
    if b"\x00" in head and bom_encoding(head) not in ("utf-16", "utf-32"):
        raise UnsupportedType(BINARY_MESSAGE)
    encoding = detect_encoding(head)
    head_text = head.decode(encoding, errors="ignore")
    if not head_text.strip() and size <= _HEAD:
        raise EmptyFile("The file holds only whitespace.")
    return _text_kind(head_text, name)
