"""Documents pages: upload, live ingestion status, page text beside its chunks, re-run, delete, chunking.

Same rules as ``domains.views``: every view starts at the access gate, the workflows are
``domains.services``' (a view parses input, calls the service and shows the outcome), and
htmx requests get a fragment of the same template.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRefresh, HttpResponseStopPolling

from domains import access as gate
from domains import services
from domains.document_outcomes import describe_outcome, error_summary, is_busy
from domains.forms import apply_errors
from domains.forms_documents import ChunkingForm
from domains.models import Chunk, Document, DocumentPage, Job, Role
from domains.views import _job_of

DOCUMENTS_PER_PAGE = 50
PAGES_PER_PAGE = 20


def _decorate(document: Document) -> Document:
    document.busy = is_busy(document)
    document.error_summary = error_summary(document)
    return document


def _document_of(access: gate.Access, pk) -> Document:
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such document") from None
    document = get_object_or_404(
        Document.objects.select_related("domain", "uploaded_by", "last_job"), domain=access.domain, pk=pk
    )
    return _decorate(document)


def _poll_fragment(request: HttpRequest, template: str, context: dict, busy: bool) -> HttpResponse:
    """A polled fragment; once the work is done, status 286 tells htmx to stop polling."""
    if busy:
        response = render(request, template, context)
    else:
        response = HttpResponseStopPolling(render_to_string(template, context, request))
    patch_vary_headers(response, ["HX-Request"])
    return response


# List ---------------------------------------------------------------------------------------


def _document_list_page(request: HttpRequest, access: gate.Access, chunking_form: ChunkingForm | None = None
                        ) -> HttpResponse:
    domain = access.domain
    documents = Document.objects.for_domain(domain).select_related("domain", "uploaded_by", "last_job")
    wanted = request.GET.get("status", "")
    if wanted in Document.Status.values:
        documents = documents.filter(status=wanted)
    else:
        wanted = ""
    page = Paginator(documents, DOCUMENTS_PER_PAGE).get_page(request.GET.get("page"))
    for document in page.object_list:
        _decorate(document)
    counts = dict(
        Document.objects.for_domain(domain).order_by().values_list("status").annotate(n=Count("pk"))
    )
    filters = [("", _("All"), sum(counts.values()))] + [
        (value, label, counts.get(value, 0)) for value, label in Document.Status.choices
    ]
    context = {
        "access": access,
        "domain": domain,
        "page": page,
        "documents": page.object_list,
        "filters": filters,
        "status_filter": wanted,
        "max_upload_mb": settings.VSM_MAX_UPLOAD_MB,
        "max_upload_bytes": settings.VSM_MAX_UPLOAD_MB * 1024 * 1024,
        "chunking_form": chunking_form
        or ChunkingForm(initial={
            "chunk_target_chars": domain.chunk_target_chars, "chunk_overlap_chars": domain.chunk_overlap_chars,
        }),
        "rechunk_job": Job.objects.for_domain(domain).filter(kind="rechunk").select_related("domain").first(),
        "section": "documents",
    }
    template = "domains/document_list.html"
    if request.htmx and request.method == "GET":  # the upload script refreshes the table after its uploads
        template += "#document-table"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_GET
def document_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The domain's documents.

    With htmx: ``?document=<id>`` gives that document's row (its status poll), ``?job=<id>``
    the re-chunking job's box, and no parameter the table (refreshed after uploads).
    """
    access = gate.for_request(request, slug)
    if request.htmx and "document" in request.GET:
        document = _document_of(access, request.GET["document"])
        context = {"document": document, "domain": access.domain, "access": access}
        return _poll_fragment(request, "domains/document_list.html#document-row", context, document.busy)
    if request.htmx and "job" in request.GET:  # the re-chunking job's poll
        job = _job_of(access, request.GET["job"])
        context = {"job": job, "domain": access.domain, "access": access}
        return _poll_fragment(request, "domains/document_list.html#rechunk-job", context, not job.is_finished)
    return _document_list_page(request, access)


# Upload -------------------------------------------------------------------------------------


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@login_required
@require_POST
def document_upload(request: HttpRequest, slug: str) -> HttpResponse:
    """Store the posted files (field ``files``) and queue their ingestion.

    The upload script sends one file per request with ``Accept: application/json`` and
    gets the outcomes as JSON; a plain form post gets them as messages on the list page.
    """
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    files = request.FILES.getlist("files")
    oversized = getattr(request, "vsm_oversized", [])
    if not files and not oversized:
        error = _("Choose one or more files to upload.")
        if _wants_json(request):
            return JsonResponse({"error": error, "results": []}, status=400)
        messages.error(request, error)
        return redirect("document-list", access.domain.slug)
    outcomes = services.upload_documents(
        domain=access.domain, files=files, uploaded_by=request.user, oversized=oversized
    )
    reports = [describe_outcome(outcome) for outcome in outcomes]
    if _wants_json(request):
        return JsonResponse({"results": [report.as_json() for report in reports]})
    level = {"uploaded": messages.SUCCESS, "duplicate": messages.INFO, "refused": messages.ERROR}
    for report in reports:
        text = report.message
        if report.document is not None:  # a link to the new, existing or unreadable document
            text = format_html('{} <a href="{}">{}</a>', text, report.document.get_absolute_url(), _("Open"))
        messages.add_message(request, level[report.outcome], text)
    return redirect("document-list", access.domain.slug)


# Detail -------------------------------------------------------------------------------------


@dataclass
class PageRow:
    """One page's text with the chunks that start on it."""

    page: DocumentPage | None
    chunks: list[Chunk]


def _page_rows(document: Document, page_numbers: list[int], last: bool) -> list[PageRow]:
    """Rows for the pages shown; chunks are placed beside the page they start on."""
    pages = {p.number: p for p in DocumentPage.objects.filter(document=document, number__in=page_numbers)}
    chunks = Chunk.objects.filter(document=document, page_start__in=page_numbers).order_by("ordinal")
    by_page: dict[int, list[Chunk]] = {}
    for chunk in chunks:
        by_page.setdefault(chunk.page_start, []).append(chunk)
    rows = [PageRow(pages[n], by_page.get(n, [])) for n in page_numbers if n in pages]
    if last:  # chunks whose page is unknown, or names a page that is not kept, close the list
        kept = DocumentPage.objects.filter(document=document).values("number")
        stray = list(Chunk.objects.filter(document=document).exclude(page_start__in=kept).order_by("ordinal"))
        if stray:
            rows.append(PageRow(None, stray))
    return rows


@login_required
@require_GET
def document_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One document: what it is, why it failed, OCR, and each page's text beside its chunks.

    With htmx (the status panel's poll while it is being read): the panel, and once the
    work is done a full refresh so the pages and chunks appear.
    """
    access = gate.for_request(request, slug)
    document = _document_of(access, pk)
    context = {"access": access, "domain": access.domain, "document": document, "section": "documents"}
    if request.htmx:
        if document.busy:
            response = render(request, "domains/document_detail.html#document-panel", context)
        else:
            response = HttpResponseClientRefresh()
        patch_vary_headers(response, ["HX-Request"])
        return response
    numbers = list(DocumentPage.objects.filter(document=document).values_list("number", flat=True))
    page = Paginator(numbers, PAGES_PER_PAGE).get_page(request.GET.get("page"))
    context.update({
        "page": page,
        "rows": _page_rows(document, list(page.object_list), last=not page.has_next()),
    })
    response = render(request, "domains/document_detail.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_POST
def document_reingest(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Read the document again from its stored file."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    document = _document_of(access, pk)
    try:
        services.reingest_document(document=document, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, _("Reading “%(name)s” again. Its progress shows below.") % {"name": document.filename})
    return redirect(document)


@login_required
@require_POST
def document_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Delete the document with its pages, chunks and stored file."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    document = _document_of(access, pk)
    services.delete_document(document=document)
    messages.success(
        request,
        _("“%(name)s” deleted. Datasets built from it are marked stale; reviewed question–answer pairs are kept.")
        % {"name": document.filename},
    )
    return redirect("document-list", access.domain.slug)


# Chunking -----------------------------------------------------------------------------------


@login_required
@require_POST
def document_chunking(request: HttpRequest, slug: str) -> HttpResponse:
    """Change the domain's chunk size and overlap; ready documents are re-chunked by a job."""
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    form = ChunkingForm(request.POST)
    if form.is_valid():
        try:
            job = services.update_chunking(
                domain=access.domain,
                target_chars=form.cleaned_data["chunk_target_chars"],
                overlap_chars=form.cleaned_data["chunk_overlap_chars"],
                by=request.user,
            )
        except ValidationError as exc:
            access.domain.refresh_from_db(fields=["chunk_target_chars", "chunk_overlap_chars"])
            apply_errors(form, exc)
        else:
            if job is None:
                messages.success(request, _("Chunk settings saved. Documents read from now on use them."))
            else:
                messages.success(request, _("Chunk settings saved. The ready documents are being re-chunked."))
            return redirect("document-list", access.domain.slug)
    return _document_list_page(request, access, chunking_form=form)
