"""Teacher API keys encrypted at rest (Fernet, with a key derived from SECRET_KEY).

Why: a database dump or a backup must not hand out the domain's paid API keys. The key is
derived from SECRET_KEY, so a leaked database alone is useless; if SECRET_KEY changes, the
stored keys cannot be read any more and the teacher says so (re-enter them), instead of
sending garbage to the provider.
"""
from __future__ import annotations

import base64
import hashlib

from django.conf import settings

_CONTEXT = b"vsm-teacher-keys-v1"


class KeyUnreadable(Exception):
    """A stored key was encrypted under another SECRET_KEY (or the row was tampered with)."""


def _fernet():
    from cryptography.fernet import Fernet

    digest = hashlib.sha256(_CONTEXT + b"\0" + settings.SECRET_KEY.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError) as exc:
        raise KeyUnreadable(
            "A stored teacher key cannot be decrypted (SECRET_KEY changed since it was saved); enter the key again."
        ) from exc


def fingerprint(secret: str) -> str:
    """A short, non-reversible id to tell keys apart in usage tables (never the secret)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]
