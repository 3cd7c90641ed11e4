"""Job handlers of the domains app (adapters: load rows, call the engine, write back)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from domains import storage
from domains.jobs import JobCancelled, JobContext, LeaseLost, job_handler
from domains.models import Chunk, Document, DocumentPage, Domain
from domains.signals import chunks_added, chunks_removed


@job_handler("selfcheck", _("Worker check"))
def selfcheck(ctx: JobContext) -> dict:
    """Walk through N steps on a worker so an operator sees the queue, progress and cancel work."""
    steps = int(ctx.params.get("steps", 10))
    delay = float(ctx.params.get("step_seconds", 0.5))
    ctx.log(f"worker check: {steps} steps of {delay}s")
    for step in range(1, steps + 1):
        time.sleep(delay)
        # A fixed message (translated where it is shown); the step count is in the progress fields.
        ctx.progress(step, steps, message=gettext_noop("Checking the worker"))
    return {"steps": steps}


# Documents ----------------------------------------------------------------------------------


def ingest_config(domain: Domain):
    """The engine's config for a domain: platform limits from settings, chunking from the domain."""
    from domains.engine.chunker import ChunkConfig
    from domains.engine.config import IngestConfig, OcrConfig

    return IngestConfig(
        max_bytes=settings.VSM_MAX_UPLOAD_MB * 1024 * 1024,
        max_pages=settings.VSM_MAX_PDF_PAGES,
        ocr=OcrConfig(backend=settings.VSM_OCR_BACKEND),
        chunk=ChunkConfig(target_chars=domain.chunk_target_chars, overlap_chars=domain.chunk_overlap_chars),
    )


def _blocks_path(document: Document):
    return document.domain.data_dir / "blocks" / f"{document.content_hash}.json"


def _save_blocks(document: Document, blocks) -> None:
    storage.write_json_atomic(_blocks_path(document), [asdict(b) for b in blocks])


def _load_blocks(document: Document):
    from domains.engine.loaders import Block

    path = _blocks_path(document)
    if not path.exists():
        return None
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [Block(**{**row, "heading_path": tuple(row.get("heading_path") or ())}) for row in rows]


def _replace_chunks(document: Document, chunks) -> int:
    """Swap a document's chunks in one transaction, telling listeners which chunks went away."""
    with transaction.atomic():
        old = list(document.chunks.values_list("pk", flat=True))
        if old:
            chunks_removed.send(sender=Document, document=document, chunk_ids=old)
            document.chunks.all().delete()
        created = Chunk.objects.bulk_create(
            Chunk(
                domain_id=document.domain_id, document=document, ordinal=c.ordinal, text=c.text,
                heading_path=list(c.heading_path), page_start=c.page_start, page_end=c.page_end,
                char_start=c.char_start, char_end=c.char_end, length=c.length, content_hash=c.sha256,
            )
            for c in chunks
        )
        Document.objects.filter(pk=document.pk).update(chunk_count=len(chunks))
        chunks_added.send(sender=Document, document=document, chunk_ids=[c.pk for c in created if c.pk])
    return len(chunks)


def _fail_document(document_id: int, message: str, code: str) -> None:
    Document.objects.filter(pk=document_id).update(status=Document.Status.FAILED, error=message, error_code=code)


@job_handler("ingest", _("Read document"))
def ingest(ctx: JobContext) -> dict:
    """Read one stored document (OCR where needed), clean it, chunk it, and keep pages and chunks."""
    from domains.engine.errors import LoadError
    from domains.engine.ingest import ingest_file

    document = Document.objects.select_related("domain").filter(
        pk=ctx.params.get("document_id"), domain=ctx.domain
    ).first()
    if document is None:
        ctx.fail("The document was deleted before it could be read.")
    if not document.path or not document.path.exists():
        _fail_document(document.pk, "The stored file is missing; upload the document again.", "missing_file")
        ctx.fail("The stored file is missing; upload the document again.")
    Document.objects.filter(pk=document.pk).update(status=Document.Status.PROCESSING, error="", error_code="")
    ctx.log(f"reading {document.filename} ({document.kind or 'unknown type'}, {document.size_bytes} bytes)")
    try:
        result = ingest_file(
            document.path, ingest_config(document.domain), name=document.filename,
            on_page=lambda done, total: ctx.progress(done, total, message=gettext_noop("Reading pages")),
        )
    except LoadError as exc:
        if exc.detail:
            ctx.log(exc.detail[-2000:])
        _fail_document(document.pk, exc.message, exc.code)
        ctx.fail(exc.message)
    except JobCancelled:
        _fail_document(document.pk, "Reading was cancelled; press Re-run to read it again.", "cancelled")
        raise
    except LeaseLost:
        raise
    except Exception as exc:
        _fail_document(document.pk, f"The document could not be read ({type(exc).__name__}).", "internal_error")
        raise
    ctx.check_cancelled()
    _save_blocks(document, result.blocks)
    with transaction.atomic():
        document.pages.all().delete()
        pages = [
            DocumentPage(document=document, number=p.number, text=p.text, ocr=p.ocr, ocr_confidence=p.ocr_confidence)
            for p in result.pages
        ] or [DocumentPage(document=document, number=1, text=result.text)]  # formats without pages: one view
        DocumentPage.objects.bulk_create(pages)
        count = _replace_chunks(document, result.chunks)
        ocr_pages = [p.number for p in result.pages if p.ocr]
        confidences = [p.ocr_confidence for p in result.pages if p.ocr and p.ocr_confidence is not None]
        Document.objects.filter(pk=document.pk).update(
            status=Document.Status.READY, kind=result.kind, page_count=len(result.pages) or None, ocr_pages=ocr_pages,
            ocr_confidence=sum(confidences) / len(confidences) if confidences else None,
            warnings=list(result.warnings), ingested_at=timezone.now(), error="", error_code="",
        )
    for warning in result.warnings:
        ctx.log(f"warning: {warning}")
    ctx.log(f"{len(result.pages)} page(s), {len(ocr_pages)} by OCR, {count} chunk(s)")
    return {"document_id": document.pk, "pages": len(result.pages), "ocr_pages": len(ocr_pages), "chunks": count}


@job_handler("rechunk", _("Re-chunk documents"))
def rechunk(ctx: JobContext) -> dict:
    """Re-chunk every ready document of the domain with its current settings, from the kept blocks."""
    from domains.engine.chunker import chunk

    domain = Domain.objects.get(pk=ctx.domain.pk)
    config = ingest_config(domain).chunk
    documents = list(Document.objects.for_domain(domain).filter(status=Document.Status.READY).order_by("pk"))
    total_chunks, missing = 0, []
    for done, document in enumerate(documents, start=1):
        blocks = _load_blocks(document)
        if blocks is None:
            missing.append(document.filename)
            ctx.log(f"{document.filename}: its read text is not kept; re-run the document to re-chunk it")
        else:
            total_chunks += _replace_chunks(document, chunk(blocks, config))
        ctx.progress(done, len(documents), message=gettext_noop("Re-chunking documents"))
    ctx.log(f"{len(documents)} document(s), {total_chunks} chunk(s) of {config.target_chars} characters")
    return {"documents": len(documents), "chunks": total_chunks, "not_rechunked": missing}
