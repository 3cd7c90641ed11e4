"""Dataset pages: datasets with their recipes, imports and freezes; frozen versions and downloads.

Same rules as ``domains.views``: every view starts at the access gate (viewers read,
experts act, owners manage), the workflows are ``datasets_app.services`` / ``versions``'
(a view parses the form, calls the workflow and shows the outcome), and the recipe jobs'
progress is a polled htmx fragment of the same template that stops with status 286.
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from datasets_app import services
from datasets_app.forms import (
    AddPairForm,
    DatasetForm,
    FreezeForm,
    ImportForm,
    RecipeForm,
)
from datasets_app.models import (
    DatasetVersion,
    EntityExample,
    JudgeExample,
    QADataset,
    QAPair,
    RetrievalExample,
)
from datasets_app.tasks import RECIPE_KINDS
from datasets_app.versions import (
    EXPORT_FORMATS,
    KINDS,
    SPLITS,
    VersionFilesMissing,
    export_version,
    freeze_dataset,
    trainable_pairs,
)
from domains import access as gate
from domains.models import Job, Role
from domains.views import _job_fragment, _job_of

RECENT_JOBS = 8

# Names of the quality filters and recipe skips (datasets_app.engine.filters, tasks), as people read them.
FILTER_LABELS = {
    "answer_too_short": gettext_lazy("Answer too short"),
    "answer_too_long": gettext_lazy("Answer too long"),
    "question_length": gettext_lazy("Question too short or long"),
    "passage_length": gettext_lazy("Passage too short"),
    "refusal": gettext_lazy("Teacher refused"),
    "meaningless": gettext_lazy("Meaningless"),
    "ungrounded_number": gettext_lazy("Number not in the passage"),
    "ungrounded_terms": gettext_lazy("Terms not in the passage"),
    "context_dependent": gettext_lazy("Needs the passage to make sense"),
    "instruction_in_question": gettext_lazy("Instruction in the question"),
    "duplicate": gettext_lazy("Duplicate"),
    "near_duplicate": gettext_lazy("Near duplicate"),
    "embedding_duplicate": gettext_lazy("Same meaning as another question"),
    "teacher_failed": gettext_lazy("Teacher failed (retried next run)"),
    "no_hard_negative": gettext_lazy("No hard negative found"),
    "sentence_too_long": gettext_lazy("Sentence too long"),
    "overlapping_entity": gettext_lazy("Overlapping entity"),
    "no_negative_passage": gettext_lazy("No negative passage"),
    "teacher_disagrees": gettext_lazy("Teacher disagrees with the label"),
}
RECIPE_HELP = {
    "qa": gettext_lazy("Questions and answers from each chunk; they wait for review."),
    "dialogue": gettext_lazy("Multi-turn conversations of follow-up questions on each chunk (pairs per chunk = "
                             "turns); reviewed like pairs, trained on every answer."),
    "paraphrase": gettext_lazy("Other wordings of approved questions, with the same answer."),
    "retrieval": gettext_lazy("Query → passage examples with mined hard negatives, from approved pairs."),
    "entities": gettext_lazy("Typed entity spans per sentence, for the extraction model."),
    "judge": gettext_lazy("Is this passage enough to answer? Examples for the judge model, from approved pairs."),
}


# Helpers ------------------------------------------------------------------------------------


def _pk(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Http404(f"No such {what}") from None


def _dataset_of(access: gate.Access, pk) -> QADataset:
    return get_object_or_404(QADataset.objects.select_related("domain"), domain=access.domain,
                             pk=_pk(pk, "dataset"))


def _version_of(access: gate.Access, pk) -> DatasetVersion:
    return get_object_or_404(DatasetVersion.objects.select_related("domain", "dataset", "created_by"),
                             domain=access.domain, pk=_pk(pk, "version"))


def _status_counts() -> dict:
    counts = {f"n_{value}": Count("pairs", filter=Q(pairs__status=value), distinct=True)
              for value in QAPair.Status.values}
    return {"n_total": Count("pairs", distinct=True), **counts}


def _bars(counts: dict, labels: dict | None = None) -> list[dict]:
    """Rows of a horizontal bar chart: label, value and width in % of the largest value."""
    items = sorted(((k, int(v or 0)) for k, v in (counts or {}).items()), key=lambda kv: (-kv[1], kv[0]))
    top = max((v for _k, v in items), default=0) or 1
    return [{"key": k, "label": (labels or {}).get(k, k.replace("_", " ")), "value": v,
             "width": round(100 * v / top, 1)} for k, v in items]


def _decorate_job(job: Job) -> Job:
    """What the recipe-job card shows: filter rejections as bars and the teacher's usage per key."""
    result = job.result or {}
    job.filter_bars = _bars(result.get("filters") or {}, FILTER_LABELS)
    job.rejected_total = sum(b["value"] for b in job.filter_bars)
    usage = result.get("usage") or {}
    job.usage_rows = [
        {"key": key, **{f: int((stats or {}).get(f) or 0) for f in
                        ("requests", "successes", "failures", "prompt_tokens", "completion_tokens")},
         "set_aside": (stats or {}).get("set_aside") or ""}
        for key, stats in sorted((usage.get("keys") or {}).items())
    ]
    job.usage_totals = usage.get("totals") or {}
    job.recipe = next((name for name, kind in RECIPE_KINDS.items() if kind == job.kind), "")
    return job


def _recipe_jobs(dataset: QADataset):
    jobs = (Job.objects.for_domain(dataset.domain)
            .filter(kind__in=list(RECIPE_KINDS.values()), params__dataset_id=dataset.pk)
            .select_related("domain", "created_by")[:RECENT_JOBS])
    return [_decorate_job(job) for job in jobs]


def _detail_page(request: HttpRequest, access: gate.Access, dataset: QADataset, *, status: int = 200,
                 **forms) -> HttpResponse:
    """The dataset page; a form that failed comes back in ``forms`` with its errors (and outcomes)."""
    domain = access.domain
    counts = QADataset.objects.filter(pk=dataset.pk).aggregate(
        **_status_counts(), n_held_out=Count("pairs", filter=Q(pairs__held_out=True)))
    examples = {
        "retrieval": RetrievalExample.objects.filter(dataset=dataset).count(),
        "entities": EntityExample.objects.filter(dataset=dataset).count(),
        "judge": JudgeExample.objects.filter(dataset=dataset).count(),
    }
    status_rows = [(value, label, counts.get(f"n_{value}", 0)) for value, label in QAPair.Status.choices]
    context = {
        "access": access,
        "domain": domain,
        "dataset": dataset,
        "counts": counts,
        "status_rows": status_rows,
        "examples": examples,
        "trainable": trainable_pairs(dataset).count(),
        "versions": DatasetVersion.objects.filter(dataset=dataset).select_related("domain", "created_by"),
        "jobs": _recipe_jobs(dataset),
        "recipe_help": [(name, RECIPE_HELP.get(name, "")) for name in RECIPE_KINDS],
        "section": "datasets",
    }
    if access.can_write:
        context.update({
            "recipe_form": forms.get("recipe_form") or RecipeForm(domain=domain),
            "add_form": forms.get("add_form") or AddPairForm(),
            "import_form": forms.get("import_form") or ImportForm(),
            "freeze_form": forms.get("freeze_form") or FreezeForm(),
            "import_outcome": forms.get("import_outcome"),
        })
    response = render(request, "datasets/dataset_detail.html", context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


# Datasets -----------------------------------------------------------------------------------


def _list_page(request: HttpRequest, access: gate.Access, form: DatasetForm | None = None) -> HttpResponse:
    QADataset.default_for(access.domain)  # every domain starts with "main"
    versions = Count("versions", distinct=True)
    datasets = QADataset.objects.for_domain(access.domain).annotate(**_status_counts(), n_versions=versions)
    context = {
        "access": access,
        "domain": access.domain,
        "datasets": datasets,
        "statuses": QAPair.Status.choices,
        "form": form or (DatasetForm(domain=access.domain) if access.can_write else None),
        "section": "datasets",
    }
    return render(request, "datasets/dataset_list.html", context)


@login_required
@require_GET
def dataset_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The domain's datasets with their pairs per review state."""
    access = gate.for_request(request, slug)
    return _list_page(request, access)


@login_required
@require_POST
def dataset_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Experts and owners add a named dataset beside "main" (as the API allows)."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    form = DatasetForm(request.POST, domain=access.domain)
    if not form.is_valid():
        return _list_page(request, access, form)
    dataset = QADataset.objects.create(domain=access.domain, **form.cleaned_data)
    messages.success(request, _("Dataset “%(name)s” created.") % {"name": dataset.name})
    return redirect(dataset)


@login_required
@require_GET
def dataset_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One dataset: counts, recipes with their live jobs, add/import, freeze, versions.

    With htmx and ``?job=<id>``: that recipe job's card (its progress poll; 286 once finished).
    """
    access = gate.for_request(request, slug)
    dataset = _dataset_of(access, pk)
    if request.htmx and "job" in request.GET:
        job = _job_of(access, request.GET["job"])
        if job.kind not in RECIPE_KINDS.values() or (job.params or {}).get("dataset_id") != dataset.pk:
            raise Http404("No such recipe job")
        context = {"job": _decorate_job(job), "domain": access.domain, "dataset": dataset, "access": access}
        return _job_fragment(request, "datasets/dataset_detail.html#recipe-job", context, job)
    return _detail_page(request, access, dataset)


@login_required
@require_POST
def dataset_recipe(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Start a recipe on the dataset; it runs as a job whose progress shows on the dataset page."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    dataset = _dataset_of(access, pk)
    form = RecipeForm(request.POST, domain=access.domain)
    if not form.is_valid():
        return _detail_page(request, access, dataset, recipe_form=form)
    values = form.cleaned_data
    job = services.start_recipe(dataset=dataset, recipe=values["recipe"], teacher=values["teacher"], by=request.user,
                                per_chunk=values["per_chunk"], variants=values["variants"],
                                document_ids=[d.pk for d in values["documents"]])
    messages.success(request, _("%(job)s #%(id)s queued. Its progress shows below.")
                     % {"job": job.get_kind_display(), "id": job.pk})
    return redirect(f"{dataset.get_absolute_url()}#job-{job.pk}")


@login_required
@require_POST
def dataset_add(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """An expert's own question–answer pair."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    dataset = _dataset_of(access, pk)
    form = AddPairForm(request.POST)
    if form.is_valid():
        try:
            pair = services.add_pair(dataset=dataset, by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if pair.status == QAPair.Status.APPROVED:
                messages.success(request, _("Pair added and approved."))
            else:
                messages.success(request, _("Pair added; it waits for review."))
            return redirect(dataset)
    return _detail_page(request, access, dataset, add_form=form)


@login_required
@require_POST
def dataset_import(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Import pairs from a file; shows how many were added, skipped as duplicates and refused (by line)."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    dataset = _dataset_of(access, pk)
    form = ImportForm(request.POST, request.FILES)
    if getattr(request, "vsm_oversized", []):
        form = ImportForm(request.POST)
        form.is_valid()
        form.add_error("file", _("The file is larger than the upload limit."))
        return _detail_page(request, access, dataset, import_form=form, status=400)
    if not form.is_valid():
        return _detail_page(request, access, dataset, import_form=form, status=400)
    upload = form.cleaned_data["file"]
    outcome = services.import_file(dataset=dataset, by=request.user, data=upload.read(),
                                   filename=upload.name or "upload", fmt=form.cleaned_data["format"],
                                   approve=form.cleaned_data["approve"])
    if outcome.file_error:
        form.add_error("file", _("This file could not be read, so nothing was imported: %(reason)s")
                       % {"reason": outcome.file_error})
        return _detail_page(request, access, dataset, import_form=form, import_outcome=outcome, status=400)
    return _detail_page(request, access, dataset, import_form=ImportForm(), import_outcome=outcome)


@login_required
@require_POST
def dataset_freeze(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Freeze the approved pairs into an immutable version; unchanged data gives the existing one back."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    dataset = _dataset_of(access, pk)
    form = FreezeForm(request.POST)
    if form.is_valid():
        try:
            outcome = freeze_dataset(dataset=dataset, by=request.user, note=form.cleaned_data["note"] or "",
                                     seed=form.cleaned_data["seed"],
                                     validation_fraction=form.cleaned_data["validation_percent"] / 100)
        except ValueError:
            form.add_error(None, _("There are no approved pairs to freeze yet; approve some in the review "
                                   "queue first."))
        else:
            version = outcome.version
            if outcome.created:
                messages.success(request, _("Version %(n)s frozen.") % {"n": version.number})
            else:
                messages.info(request, _("Nothing changed since version %(n)s (same approved data and split); "
                                         "that version is shown.") % {"n": version.number})
            return redirect(version)
    return _detail_page(request, access, dataset, freeze_form=form)


# Versions -----------------------------------------------------------------------------------


@login_required
@require_GET
def version_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """A frozen version: what is in it, how it was split, and its downloads."""
    access = gate.for_request(request, slug)
    version = _version_of(access, pk)
    counts = version.counts or {}
    kind_labels = {"qa": _("QA pairs"), "retrieval": _("Retrieval examples"), "entities": _("Entity examples"),
                   "judge": _("Judge examples")}
    split_rows = [
        {"kind": kind, "label": kind_labels[kind], "splits": [int((counts.get(kind) or {}).get(s, 0)) for s in SPLITS],
         "total": sum(int(v) for v in (counts.get(kind) or {}).values())}
        for kind in KINDS
    ]
    stats = version.stats or {}
    coverage = stats.get("chunk_coverage")
    context = {
        "access": access,
        "domain": access.domain,
        "version": version,
        "dataset": version.dataset,
        "splits": SPLITS,
        "split_rows": split_rows,
        "stats": stats,
        "coverage_percent": round(100 * coverage, 1) if coverage is not None else None,
        "document_bars": _bars(stats.get("per_document") or {}, {"": _("(unknown document)")}),
        "formats": list(EXPORT_FORMATS.items()),
        "download_splits": [*SPLITS, "all"],
        "files_present": version.path.exists(),
        "section": "datasets",
    }
    return render(request, "datasets/version_detail.html", context)


@login_required
@require_GET
def version_download(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One export of a version (``?format=&split=``, by default Alpaca, train) as an attachment."""
    access = gate.for_request(request, slug)
    version = _version_of(access, pk)
    fmt = request.GET.get("format") or "alpaca"
    split = request.GET.get("split") or "train"
    context = {"access": access, "domain": access.domain, "version": version, "section": "datasets"}
    if fmt not in EXPORT_FORMATS or split not in (*SPLITS, "all"):
        context["error"] = _("Unknown format or split. Formats: %(formats)s. Splits: %(splits)s.") % {
            "formats": ", ".join(EXPORT_FORMATS), "splits": ", ".join((*SPLITS, "all"))}
        return render(request, "datasets/version_error.html", context, status=400)
    try:
        export = export_version(version, fmt, split)
    except VersionFilesMissing:
        context["error"] = _("The files of this version are missing from the data folder (%(path)s). "
                             "Restore the data folder from a backup, or freeze the dataset again.") % {
            "path": version.storage_path}
        return render(request, "datasets/version_error.html", context, status=410)
    response = HttpResponse(export.data, content_type=export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    response["Cache-Control"] = "private, no-store"
    return response
