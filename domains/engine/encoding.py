"""Turn the bytes of a text file into ``str`` without trusting its name or a declared charset.

Chinese domains arrive as UTF-8, UTF-8 with a BOM (Windows Notepad) and GBK/GB18030
(older Windows tools); binary data renamed to ``.txt`` must be refused, not ingested as
mojibake.
"""
from __future__ import annotations

import codecs

from .errors import UnsupportedType

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# GB2312 and GBK are subsets of GB18030: decoding with the superset never loses a character.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030", "ascii": "utf-8"}
# Control characters allowed in text files.
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")

BINARY_MESSAGE = (
    "This file holds binary data, not text. VSM reads PDF, Word (.docx), HTML, Markdown, "
    "plain-text and image files."
)


def bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark announces, if the data starts with one."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    return None


def looks_binary(data: bytes) -> bool:
    """NUL bytes never occur in text in single-byte or multi-byte Chinese encodings."""
    if bom_encoding(data) in ("utf-16", "utf-32"):
        return False
    return b"\x00" in data


def control_ratio(text: str) -> float:
    """Share of characters that are control codes or decode errors (U+FFFD)."""
    if not text:
        return 0.0
    bad = sum(
        1
        for ch in text
        if ch == "\ufffd" or ((ord(ch) < 32 or 127 <= ord(ch) < 160) and ch not in _TEXT_CONTROLS)
    )
    return bad / len(text)


def detect_encoding(data: bytes) -> str:
    """Name of the codec to decode ``data`` with; raises UnsupportedType for binary data."""
    bom = bom_encoding(data)
    if bom:
        return bom
    if looks_binary(data):
        raise UnsupportedType(BINARY_MESSAGE)
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of a sample is still UTF-8.
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UnsupportedType(BINARY_MESSAGE)
    name = codecs.lookup(best.encoding).name
    return _SUPERSETS.get(name, name)


def decode_bytes(data: bytes, *, max_control_ratio: float = 0.02) -> tuple[str, str]:
    """Decode a whole text file; returns ``(text, encoding)``.

    Detection looks at the first 1 MB (charset detection on 100 MB is slow and the head is
    representative); undecodable bytes later on become U+FFFD and count as binary noise.
    """
    encoding = detect_encoding(data[: 1 << 20])
    if looks_binary(data) and encoding not in ("utf-16", "utf-32"):
        raise UnsupportedType(BINARY_MESSAGE)
    text = data.decode(encoding, errors="replace")
    text = text.removeprefix("\ufeff")
    if control_ratio(text) > max_control_ratio:
        raise UnsupportedType(BINARY_MESSAGE)
    return text, encoding
