"""Retrieval pages: the domain's index (build, settings, fusion), hit testing and embedding-model comparison.

Same rules as the other apps' views: the access gate first (viewers read and search, experts
build, change settings and compare), the work in ``inference_app.services``, running jobs as
polled htmx fragments of the same template that stop with 286.
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from domains import access as gate
from domains.forms import apply_errors
from domains.models import Role
from domains.views import _job_fragment
from inference_app import services
from inference_app.forms import ComparisonForm, HitTestForm, IndexSettingsForm
from inference_app.models import EmbeddingComparison, RetrievalIndex

METHOD_LABELS = {"bm25": "BM25", "dense": _("Dense"), "hybrid": _("Hybrid")}


def _respond(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _index(access: gate.Access) -> RetrievalIndex:
    return RetrievalIndex.objects.select_related("job", "model_version", "domain").get(
        pk=services.index_for(access.domain).pk)


def _comparisons(access: gate.Access):
    return EmbeddingComparison.objects.for_domain(access.domain).select_related("job", "created_by")


def _page(request: HttpRequest, access: gate.Access, *, hit_form=None, settings_form=None, compare_form=None,
          status: int = 200) -> HttpResponse:
    index = _index(access)
    hits = None
    hit_form = hit_form or HitTestForm(request.GET or None)
    if hit_form.is_bound and hit_form.is_valid():
        try:
            hits = _hit_columns(services.search(domain=access.domain, query=hit_form.cleaned_data["q"],
                                                k=hit_form.cleaned_data["k"] or 5))
        except ValidationError as exc:
            for message in exc.messages:
                hit_form.add_error(None, message)
    context = {
        "access": access, "domain": access.domain, "index": index, "section": "retrieval",
        "hit_form": hit_form, "hits": hits,
        "settings_form": settings_form or (IndexSettingsForm(initial={"encoder": index.encoder,
                                                                      "dense_enabled": index.dense_enabled,
                                                                      "reranker": index.reranker})
                                           if access.can_write else None),
        "compare_form": compare_form or (ComparisonForm(initial={
            "candidates": "\n".join(services.default_candidates(access.domain))}) if access.can_write else None),
        "comparisons": list(_comparisons(access)[:10]),
        "active_version": services.active_embedding_version(access.domain),
        "queries": len(services.domain_queries(access.domain)),
    }
    if request.htmx and "hits" in request.GET:
        return _respond(request, "inference/retrieval.html#hits", context, status)
    return _respond(request, "inference/retrieval.html", context, status)


def _hit_columns(result: dict) -> dict:
    return {"query": result["query"], "weights": result["weights"], "encoder": result["encoder"],
            "stale": result["stale"], "reranker": result["reranker"],
            "columns": [{"method": m, "label": METHOD_LABELS[m], "rows": rows}
                        for m, rows in result["results"].items()]}


@login_required
@require_GET
def retrieval_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The index card (status, build, settings), hit testing (``?q=``) and model comparisons.

    With htmx and ``?index=1``: the index card (its build poll; 286 once the job is finished).
    """
    access = gate.for_request(request, slug)
    if request.htmx and "index" in request.GET:
        index = _index(access)
        context = {"access": access, "domain": access.domain, "index": index}
        if index.job is None:
            return _respond(request, "inference/retrieval.html#index-card", context)
        return _job_fragment(request, "inference/retrieval.html#index-card", context, index.job)
    return _page(request, access)


@login_required
@require_POST
def retrieval_build(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    services.start_index_build(domain=access.domain, by=request.user, reason="asked on the retrieval page")
    messages.success(request, _("The index is being built; its progress shows below."))
    return redirect(reverse("retrieval", args=[access.domain.slug]))


@login_required
@require_POST
def retrieval_settings(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    form = IndexSettingsForm(request.POST)
    if not form.is_valid():
        return _page(request, access, settings_form=form, status=400)
    try:
        job = services.update_index_settings(domain=access.domain, by=request.user,
                                             encoder=form.cleaned_data["encoder"],
                                             dense_enabled=form.cleaned_data["dense_enabled"],
                                             reranker=form.cleaned_data["reranker"])
    except ValidationError as exc:
        apply_errors(form, exc)
        return _page(request, access, settings_form=form, status=400)
    if job is None:
        messages.info(request, _("Saved; the index did not need a rebuild."))
    else:
        messages.success(request, _("Settings saved; the index is being rebuilt."))
    return redirect(reverse("retrieval", args=[access.domain.slug]))


@login_required
@require_POST
def comparison_start(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    form = ComparisonForm(request.POST)
    if not form.is_valid():
        return _page(request, access, compare_form=form, status=400)
    try:
        comparison = services.start_comparison(domain=access.domain, by=request.user,
                                               candidates=form.cleaned_data["candidates"])
    except ValidationError as exc:
        apply_errors(form, exc)
        return _page(request, access, compare_form=form, status=400)
    messages.success(request, _("Comparison #%(id)s queued.") % {"id": comparison.pk})
    return redirect(reverse("retrieval", args=[access.domain.slug]) + "#comparisons")


@login_required
@require_GET
def comparison_detail(request: HttpRequest, slug: str, pk) -> HttpResponse:
    """One comparison's table (htmx: its polled fragment; 286 once the job is finished)."""
    access = gate.for_request(request, slug)
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such comparison") from None
    comparison = get_object_or_404(_comparisons(access), pk=pk)
    context = {"access": access, "domain": access.domain, "comparison": comparison, "section": "retrieval"}
    if request.htmx and comparison.job is not None:
        return _job_fragment(request, "inference/retrieval.html#comparison", context, comparison.job)
    return _respond(request, "inference/comparison_detail.html", context)
