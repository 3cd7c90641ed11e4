"""Refuse zip bombs before anything is inflated (DOCX is a zip container).

The declared sizes in the central directory are trustworthy as an upper bound: Python's
``zipfile`` never yields more bytes than an entry declares (it stops there and the CRC check
fails), so checking them is enough to bound what python-docx will inflate.
"""
from __future__ import annotations

import os
import struct
import zipfile

from .errors import CorruptFile, ZipBomb

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"


def declared_entry_count(path: str | os.PathLike[str]) -> int | None:
    """Entry count from the end-of-central-directory record, read without parsing entries.

    Lets us refuse an archive with millions of entries before ``zipfile`` builds an object
    for each of them. ``None`` when there is no readable record (not a zip, or corrupt).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        tail_len = min(size, 65_536 + 22)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        pos = tail.rfind(_EOCD)
        if pos < 0 or pos + 22 > len(tail):
            return None
        (count,) = struct.unpack("<H", tail[pos + 10 : pos + 12])
        if count != 0xFFFF:
            return count
        # Zip64: the locator sits just before the classic record and points at the real one.
        loc = pos - 20
        if loc < 0 or tail[loc : loc + 4] != _EOCD64_LOCATOR:
            return None
        (offset,) = struct.unpack("<Q", tail[loc + 8 : loc + 16])
        fh.seek(offset)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != _EOCD64:
            return None
        (count64,) = struct.unpack("<Q", record[32:40])
        return count64


def check_zip(
    path: str | os.PathLike[str],
    *,
    max_entries: int,
    max_entry_bytes: int,
    max_total_bytes: int,
    max_ratio: float,
    min_ratio_bytes: int = 1024 * 1024,
) -> list[str]:
    """Raise ZipBomb when the declared contents exceed the limits; returns the entry names.

    ``min_ratio_bytes``: small parts (a 5 KB styles.xml) legitimately compress 100:1, so the
    ratio is only judged for entries that inflate to more than this.
    """
    count = declared_entry_count(path)
    if count is not None and count > max_entries:
        raise ZipBomb(
            f"This archive declares {count:,} entries (limit {max_entries:,}); "
            "it looks like a zip bomb and was not opened."
        )
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptFile(f"The file is not a readable zip/Word container ({exc}).") from exc
    if len(infos) > max_entries:
        raise ZipBomb(f"This archive holds {len(infos):,} entries (limit {max_entries:,}).")
    total = 0
    for info in infos:
        declared = info.file_size
        if declared > max_entry_bytes:
            raise ZipBomb(
                f"Part '{info.filename}' would inflate to {declared:,} bytes "
                f"(limit {max_entry_bytes:,}); the file looks like a zip bomb."
            )
        if declared > min_ratio_bytes:
            ratio = declared / max(info.compress_size, 1)
            if ratio > max_ratio:
                raise ZipBomb(
                    f"Part '{info.filename}' is compressed {ratio:,.0f}:1 (limit {max_ratio:,.0f}:1); "
                    "the file looks like a zip bomb."
                )
        total += declared
        if total > max_total_bytes:
            raise ZipBomb(
                f"The parts of this archive would inflate to more than {max_total_bytes:,} bytes; "
                "the file looks like a zip bomb."
            )
    return [info.filename for info in infos]
