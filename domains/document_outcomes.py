"""Documents in words: why one failed, whether it is still being read, what an upload did.

Shared by the browser views and the API so both tell a person the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from domains.models import Document
from domains.services import UploadOutcome

# A short, translated name for each stable error code that the ingestion engine and the job
# store in ``Document.error_code``; the English sentence in ``Document.error`` gives the details.
ERROR_SUMMARIES = {
    "load_error": gettext_lazy("The document could not be read."),
    "empty_file": gettext_lazy("The file is empty."),
    "unsupported_type": gettext_lazy("VSM does not read this type of file."),
    "encrypted_pdf": gettext_lazy("The PDF is protected by a password."),
    "corrupt_file": gettext_lazy("The file is damaged."),
    "too_large": gettext_lazy("The file is over a size limit."),
    "zip_bomb": gettext_lazy("The file would unpack to far more data than a document holds."),
    "timeout": gettext_lazy("Reading the file took too long."),
    "memory_limit": gettext_lazy("Reading the file needed too much memory."),
    "parser_crashed": gettext_lazy("The reader stopped unexpectedly on this file."),
    "ocr_unavailable": gettext_lazy("Text recognition (OCR) is not available on this server."),
    "missing_file": gettext_lazy("The stored file is missing."),
    "cancelled": gettext_lazy("Reading was cancelled."),
    "internal_error": gettext_lazy("The document could not be read."),
}


def error_summary(document: Document) -> str:
    """The translated one-line reason a document failed ('' when it did not)."""
    if document.status != Document.Status.FAILED:
        return ""
    return str(ERROR_SUMMARIES.get(document.error_code, ERROR_SUMMARIES["load_error"]))


def is_busy(document: Document) -> bool:
    """Still being read: its ingest job is queued or running (its row and panel poll meanwhile)."""
    job = document.last_job
    return job is not None and not job.is_finished


@dataclass(frozen=True)
class UploadReport:
    """One file's outcome: ``uploaded``, ``duplicate`` or ``refused``, with a sentence saying so."""

    filename: str
    outcome: str
    message: str
    document: Document | None = None

    def as_json(self) -> dict:
        document = self.document
        return {
            "filename": self.filename,
            "outcome": self.outcome,
            "message": self.message,
            "document": None if document is None else {
                "id": document.pk,
                "filename": document.filename,
                "status": document.status,
                "url": document.get_absolute_url(),
            },
        }


def describe_outcome(outcome: UploadOutcome) -> UploadReport:
    """Say what happened to one uploaded file, for the person who uploaded it."""
    document = outcome.document
    if outcome.error or document is None:
        return UploadReport(outcome.filename, "refused", outcome.error or _("The file could not be stored."))
    if outcome.duplicate:
        message = _("%(name)s was already uploaded as “%(existing)s”.") % {
            "name": outcome.filename, "existing": document.filename,
        }
        return UploadReport(outcome.filename, "duplicate", message, document)
    if document.status == Document.Status.FAILED:
        message = _("%(name)s was refused: %(summary)s %(reason)s") % {
            "name": outcome.filename, "summary": error_summary(document), "reason": document.error,
        }
        return UploadReport(outcome.filename, "refused", message, document)
    message = _("%(name)s uploaded; it is being read now.") % {"name": outcome.filename}
    return UploadReport(outcome.filename, "uploaded", message, document)
