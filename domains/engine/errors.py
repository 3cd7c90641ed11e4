"""Why a document could not be ingested, as exceptions a person can act on.

Every failure of the ingestion engine is a ``LoadError``; the Django job stores ``code``
(stable, for translations and the API) and ``str(error)`` (an English sentence that says
what to do). The errors cross the sandbox boundary by class name, so every subclass takes
just the message.
"""
from __future__ import annotations


class LoadError(Exception):
    """A document could not be loaded; the message says why in words a user understands."""

    code = "load_error"

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        # Technical detail (a child's traceback, a library's own message) for the job log.
        self.detail = detail

    def __reduce__(self):  # keep ``detail`` when pickled
        return (_rebuild, (type(self).__name__, self.message, self.detail))


class EmptyFile(LoadError):
    """Zero bytes, or nothing readable in it."""

    code = "empty_file"


class UnsupportedType(LoadError):
    """Not one of the formats VSM reads (or binary data under a text name)."""

    code = "unsupported_type"


class EncryptedPdf(LoadError):
    """A PDF that needs a password to open."""

    code = "encrypted_pdf"


class CorruptFile(LoadError):
    """The bytes claim a format but do not parse as it."""

    code = "corrupt_file"


class TooLarge(LoadError):
    """Over a configured limit: bytes, pages, pixels."""

    code = "too_large"


class ZipBomb(TooLarge):
    """A zip container (DOCX) whose declared contents would inflate beyond the limits."""

    code = "zip_bomb"


class Timeout(LoadError):
    """Parsing ran past its wall-clock limit (crafted PDFs can hang a parser for hours)."""

    code = "timeout"


class MemoryLimit(LoadError):
    """Parsing tried to use more memory than the sandbox allows."""

    code = "memory_limit"


class ParserCrashed(LoadError):
    """The parsing child process died without saying why (a crash in native code)."""

    code = "parser_crashed"


class OcrUnavailable(LoadError):
    """The OCR backend chosen in the config is not installed or failed to start."""

    code = "ocr_unavailable"


ERRORS: dict[str, type[LoadError]] = {
    cls.__name__: cls
    for cls in (
        LoadError,
        EmptyFile,
        UnsupportedType,
        EncryptedPdf,
        CorruptFile,
        TooLarge,
        ZipBomb,
        Timeout,
        MemoryLimit,
        ParserCrashed,
        OcrUnavailable,
    )
}


def _rebuild(name: str, message: str, detail: str = "") -> LoadError:
    """Recreate an error from its class name (used across the process boundary)."""
    return ERRORS.get(name, LoadError)(message, detail=detail)
