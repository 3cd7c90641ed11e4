"""Artifacts on disk under VSM_DATA_DIR: written to a temp name, renamed when whole."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

CHUNK = 1024 * 1024


class FileTooLarge(Exception):
    pass


def documents_dir(slug: str) -> Path:
    return settings.VSM_DATA_DIR / "domains" / slug / "documents"


def relative(path: Path) -> str:
    return str(path.relative_to(settings.VSM_DATA_DIR))


def store_by_hash(slug: str, source: BinaryIO, *, max_bytes: int) -> tuple[Path, str, int]:
    """Copy ``source`` into the domain's documents folder named by its SHA-256.

    The name comes from the content, never from the uploaded file name, so no path a user
    types can reach outside the folder. Returns (path, sha256, size); the same content
    uploaded twice lands on the same path.
    """
    folder = documents_dir(slug)
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: source.read(CHUNK), b""):
                size += len(block)
                if size > max_bytes:
                    raise FileTooLarge(size)
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        final = folder / sha[:2] / sha
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp_name, final)
        return final, sha, size
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
