"""Training pages: runs (start one, follow it live, its loss curve) and the model versions they make.

Same rules as ``domains.views`` and ``datasets_app.views``: every view starts at the access
gate (viewers read, experts start and cancel runs, owners promote models), the workflow is
``training_app.services.start_training`` (a view parses the form, calls it and shows the
outcome), and a running job's numbers are a polled htmx fragment of the same template that
stops with status 286. The loss curve is an inline SVG drawn here, so it needs no JavaScript.
"""
from __future__ import annotations

import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from datasets_app.models import DatasetVersion
from domains import access as gate
from domains.forms import apply_errors
from domains.models import Role
from domains.views import _job_fragment
from training_app.engine.hub import HUB_LABELS
from training_app.forms import EDITABLE, ModelExportForm, TrainingStartForm
from training_app.models import HubCredential, ModelExport, ModelVersion, TrainingRun
from training_app.services import start_export, start_training

# Config fields shown first on the run and model pages (the rest follow in the config's order).
MAIN_CONFIG = ("kind", "method", "preset", *EDITABLE, "lora_dropout", "warmup_ratio", "weight_decay", "seed",
               "device", "precision", "quantization", "generation_temperature")
LINEAGE_LIMIT = 50


# Helpers ------------------------------------------------------------------------------------


def _pk(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Http404(f"No such {what}") from None


def _runs(access: gate.Access):
    return TrainingRun.objects.for_domain(access.domain).select_related(
        "domain", "dataset_version", "dataset_version__dataset", "job", "created_by", "model_version")


def _run_of(access: gate.Access, pk) -> TrainingRun:
    return get_object_or_404(_runs(access), pk=_pk(pk, "training run"))


def _model_of(access: gate.Access, pk) -> ModelVersion:
    return get_object_or_404(ModelVersion.objects.for_domain(access.domain).select_related("domain", "run", "parent"),
                             pk=_pk(pk, "model version"))


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _duration(seconds) -> str:
    """12s, 3m 05s, 1h 02m."""
    seconds = _number(seconds)
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(h)dh %(m)02dm") % {"h": hours, "m": minutes}
    if minutes:
        return _("%(m)dm %(s)02ds") % {"m": minutes, "s": secs}
    return _("%(s)ds") % {"s": secs}


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = _nice_step(hi - lo, count)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + step * 1e-6 and len(ticks) < 50:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _tick_label(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def loss_plot(history, val_history=None, *, width: int = 640, height: int = 260) -> dict | None:
    """Geometry of the loss-curve SVG: a polyline of the train loss per step, points of the validation loss.

    ``history`` holds per-step dicts (step, epoch, loss, …), ``val_history`` per-epoch dicts
    (epoch, step?, val_loss). None when there is nothing to draw.
    """
    train = [(float(h["step"]), _number(h.get("loss"))) for h in history or ()
             if isinstance(h, dict) and _number(h.get("step")) is not None]
    train = [(x, y) for x, y in train if y is not None]
    epoch_end = {}  # epoch → last step in it, to place validation points that carry no step
    for h in history or ():
        if isinstance(h, dict) and _number(h.get("epoch")) is not None and _number(h.get("step")) is not None:
            epoch_end[math.ceil(h["epoch"] - 1e-9)] = max(epoch_end.get(math.ceil(h["epoch"] - 1e-9), 0), h["step"])
    val = []
    for v in val_history or ():
        if not isinstance(v, dict) or _number(v.get("val_loss")) is None:
            continue
        x = _number(v.get("step"))
        if x is None and _number(v.get("epoch")) is not None:
            x = epoch_end.get(int(v["epoch"]))
        if x is not None:
            val.append((float(x), float(v["val_loss"]), v.get("epoch")))
    if not train and not val:
        return None
    left, right, top, bottom = 56, 16, 14, 40
    xs = [x for x, _y in train] + [x for x, _y, _e in val]
    ys = [y for _x, y in train] + [y for _x, y, _e in val]
    x_lo, x_hi = min(0.0, min(xs)), max(xs)
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.08 or max(abs(y_hi) * 0.1, 0.1)
    y_lo, y_hi = max(0.0, y_lo - pad) if y_lo >= 0 else y_lo - pad, y_hi + pad
    x0, x1, y0, y1 = left, width - right, top, height - bottom

    def px(x):
        return round(x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0), 2)

    def py(y):
        return round(y1 - (y - y_lo) / (y_hi - y_lo) * (y1 - y0), 2)

    # A two-stage run (pre-training, then fine-tuning) marks where its second stage begins.
    stage_start = next((float(h["step"]) for h in history or () if isinstance(h, dict) and h.get("stage") == "sft"
                        and _number(h.get("step")) is not None), None)
    if not any(isinstance(h, dict) and h.get("stage") == "cpt" for h in history or ()):
        stage_start = None
    x_ticks = [t for t in _ticks(x_lo, x_hi, 6) if x_lo <= t <= x_hi and t == int(t)] or [x_lo, x_hi]
    y_ticks = [t for t in _ticks(y_lo, y_hi, 5) if y_lo <= t <= y_hi]
    return {
        "width": width, "height": height, "x0": x0, "x1": x1, "y0": y0, "y1": y1,
        "points": " ".join(f"{px(x)},{py(y)}" for x, y in train),
        "n_points": len(train),
        "last": {"x": px(train[-1][0]), "y": py(train[-1][1]), "loss": train[-1][1]} if train else None,
        "val_points": [{"x": px(x), "y": py(y), "loss": y, "epoch": e} for x, y, e in val],
        "x_ticks": [{"x": px(t), "label": _tick_label(t)} for t in x_ticks],
        "y_ticks": [{"y": py(t), "label": _tick_label(t)} for t in y_ticks],
        "label_x": round((x0 + x1) / 2, 2), "label_y": height - 6,
        "stage_x": px(stage_start - 0.5) if stage_start is not None else None,
    }


def score_histogram(distribution, *, bins: int = 20, width: int = 560, height: int = 180) -> dict | None:
    """Geometry of an SVG histogram: cosine scores of (query, positive) against (query, top negatives).

    A threshold that separates the two matters in production (below it: "not covered"), so the
    best separating threshold is drawn as a dashed line. None when there is nothing to draw.
    """
    if not isinstance(distribution, dict):
        return None
    pos = [float(v) for v in distribution.get("positive") or () if _number(v) is not None]
    neg = [float(v) for v in distribution.get("negative") or () if _number(v) is not None]
    if not pos and not neg:
        return None
    values = pos + neg
    # Zoom on where the scores are (cosines of one model often all sit between 0.7 and 1).
    pad = max((max(values) - min(values)) * 0.05, 0.01)
    lo, hi = min(values) - pad, max(values) + pad
    span = hi - lo
    step = span / bins

    def counts(xs):
        out = [0] * bins
        for x in xs:
            out[min(bins - 1, int((x - lo) / step))] += 1
        return [c / max(len(xs), 1) for c in out]  # shares, so lists of different sizes compare

    cp, cn = counts(pos), counts(neg)
    top = max(cp + cn) or 1.0
    left, right, y_top, bottom = 40, 12, 10, 34
    x0, x1, y0, y1 = left, width - right, y_top, height - bottom
    bar = (x1 - x0) / bins

    def rects(shares, offset):
        return [{"x": round(x0 + i * bar + offset, 2), "w": round(bar / 2 - 1, 2),
                 "y": round(y1 - share / top * (y1 - y0), 2), "h": round(share / top * (y1 - y0), 2)}
                for i, share in enumerate(shares) if share > 0]

    threshold = _number(distribution.get("threshold"))
    ticks = [t for t in _ticks(lo, hi, 5) if lo <= t <= hi]
    return {
        "width": width, "height": height, "x0": x0, "x1": x1, "y0": y0, "y1": y1,
        "positive": rects(cp, 0.5), "negative": rects(cn, bar / 2),
        "threshold_x": round(x0 + (threshold - lo) / span * (x1 - x0), 2) if threshold is not None else None,
        "threshold": threshold, "n_positive": len(pos), "n_negative": len(neg),
        "separation": _number(distribution.get("separation")),
        "x_ticks": [{"x": round(x0 + (t - lo) / span * (x1 - x0), 2), "label": _tick_label(t)} for t in ticks],
        "label_y": height - 4,
    }


def retrieval_report(metrics: dict) -> dict | None:
    """The model page's view of an embedding version's evaluation: its table and one histogram per model."""
    evaluation = (metrics or {}).get("retrieval")
    if not isinstance(evaluation, dict) or not evaluation.get("table"):
        return None
    plots = [{"name": name, "plot": score_histogram(dist)}
             for name, dist in (evaluation.get("distributions") or {}).items()]
    return {**evaluation, "plots": [p for p in plots if p["plot"]]}


def _live(run: TrainingRun) -> dict:
    """What the run's job reports while it runs (job.result), else the run's final metrics."""
    job = run.job
    result = (job.result or {}) if job is not None else {}
    metrics = run.metrics or {}
    history = metrics.get("history") or result.get("history") or []
    val_history = metrics.get("val_history") or result.get("val_history") or []
    final = _number(metrics.get("final_train_loss"))
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    return {
        "step": result.get("step", metrics.get("steps")),
        "total_steps": result.get("total_steps"),
        "epoch": result.get("epoch"),
        "loss": _number(result.get("loss")) if final is None else final,
        "learning_rate": _number(result.get("learning_rate", last.get("learning_rate"))),
        "tokens_per_s": _number(result.get("tokens_per_s", last.get("tokens_per_s"))),
        "eta": _duration(result.get("eta_s")) if job is not None and not job.is_finished else "",
        "val_loss": _number(result.get("val_loss", metrics.get("best_val_loss"))),
        "best_val_loss": _number(metrics.get("best_val_loss", result.get("best_val_loss"))),
        "elapsed": _duration(metrics.get("elapsed_s")),
        "plot": loss_plot(history, val_history),
    }


def _decorate(run: TrainingRun) -> TrainingRun:
    run.live = _live(run)
    try:
        run.model = run.model_version
    except ModelVersion.DoesNotExist:
        run.model = None
    return run


def _config_rows(config: dict) -> list[tuple[str, object]]:
    config = config or {}
    first = [(k, config[k]) for k in MAIN_CONFIG if k in config]
    return first + [(k, v) for k, v in config.items() if k not in MAIN_CONFIG]


def _respond(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


# Runs ---------------------------------------------------------------------------------------


def _list_page(request: HttpRequest, access: gate.Access, form: TrainingStartForm | None = None,
               status: int = 200) -> HttpResponse:
    runs = [_decorate(run) for run in _runs(access)[:100]]
    context = {
        "access": access,
        "domain": access.domain,
        "runs": runs,
        "form": form or (TrainingStartForm(domain=access.domain) if access.can_write else None),
        "has_versions": DatasetVersion.objects.for_domain(access.domain).exists(),
        "section": "training",
    }
    return _respond(request, "training/run_list.html", context, status)


@login_required
@require_GET
def training_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The domain's training runs with their live progress, and the form to start one.

    With htmx and ``?run=<id>``: that run's row (its progress poll; 286 once finished).
    """
    access = gate.for_request(request, slug)
    if request.htmx and "run" in request.GET:
        run = _run_of(access, request.GET["run"])
        context = {"run": _decorate(run), "domain": access.domain, "access": access}
        if run.job is None:
            return _respond(request, "training/run_list.html#run-row", context)
        return _job_fragment(request, "training/run_list.html#run-row", context, run.job)
    return _list_page(request, access)


@login_required
@require_POST
def training_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a run on a frozen dataset version; it trains as a job whose progress shows on the run's page."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    form = TrainingStartForm(request.POST, domain=access.domain)
    if not form.is_valid():
        return _list_page(request, access, form, status=400)
    values = form.cleaned_data
    try:
        run = start_training(domain=access.domain, dataset_version=values["dataset_version"], by=request.user,
                             kind=values["kind"], base_model=values["base_model"], preset=values["preset"] or "",
                             overrides=form.overrides(), name=values.get("name") or "")
    except ValidationError as exc:
        form.show_service_error(exc)
        return _list_page(request, access, form, status=400)
    messages.success(request, _("Training run #%(id)s queued. Its progress shows below.") % {"id": run.pk})
    return redirect(reverse("training-detail", args=[access.domain.slug, run.pk]))


@login_required
@require_GET
def training_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One run: its config, data, live progress and loss curve, log tail and resulting model version.

    With htmx and ``?live=1``: the live panel only (its poll; 286 once the job is finished).
    """
    access = gate.for_request(request, slug)
    run = _decorate(_run_of(access, pk))
    context = {"access": access, "domain": access.domain, "run": run, "job": run.job, "section": "training"}
    if request.htmx and "live" in request.GET:
        if run.job is None:
            return _respond(request, "training/run_detail.html#run-live", context)
        return _job_fragment(request, "training/run_detail.html#run-live", context, run.job)
    context["config_rows"] = _config_rows(run.config)
    context["tensorboard"] = _tensorboard_dir(run)
    context["wandb_url"] = ((run.metrics or {}).get("experiment_log") or {}).get("wandb_url", "")
    return _respond(request, "training/run_detail.html", context)


def _tensorboard_dir(run: TrainingRun):
    """The run's TensorBoard folder when it holds event files (the path comes from the run, never the
    request, and must stay inside the data folder)."""
    from pathlib import Path

    from django.conf import settings

    rel = ((run.metrics or {}).get("experiment_log") or {}).get("tensorboard")
    if not rel:
        return None
    root = Path(settings.VSM_DATA_DIR).resolve()
    folder = (root / rel).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir() or not any(folder.glob("**/events.out.tfevents.*")):
        return None
    return folder


@login_required
@require_GET
def training_tensorboard(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The run's TensorBoard event files as a zip (``tensorboard --logdir`` on the unpacked folder)."""
    import io
    import zipfile

    access = gate.for_request(request, slug)
    run = _run_of(access, pk)
    folder = _tensorboard_dir(run)
    if folder is None:
        raise Http404("This run has no TensorBoard event files")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.glob("**/events.out.tfevents.*")):
            zf.write(f, f"{access.domain.slug}-run-{run.pk}/{f.relative_to(folder)}")
    response = HttpResponse(buf.getvalue(), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{access.domain.slug}-run-{run.pk}-tensorboard.zip"'
    response["Cache-Control"] = "private, no-store"
    return response


# Model versions -----------------------------------------------------------------------------


@login_required
@require_GET
def model_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The domain's model versions, newest first, with the active one per kind marked."""
    access = gate.for_request(request, slug)
    models = ModelVersion.objects.for_domain(access.domain).select_related("domain", "run", "parent") \
        .order_by("-number")
    context = {"access": access, "domain": access.domain, "models": models, "section": "training"}
    return _respond(request, "training/model_list.html", context)


def _lineage(model: ModelVersion) -> list[ModelVersion]:
    """The parent chain, nearest first (a cycle or a very long chain stops the walk)."""
    chain, seen, parent = [], {model.pk}, model.parent
    while parent is not None and parent.pk not in seen and len(chain) < LINEAGE_LIMIT:
        chain.append(parent)
        seen.add(parent.pk)
        parent = parent.parent
    return chain


def _exports(access: gate.Access, model: ModelVersion):
    return ModelExport.objects.for_domain(access.domain).filter(model_version=model).select_related(
        "domain", "model_version", "job", "job__domain", "created_by")


@login_required
@require_GET
def model_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One model version: config, metrics, lineage (parents, run, dataset version), artifact paths and exports.

    With htmx and ``?export=<id>``: that export's row (its progress poll; 286 once finished).
    """
    access = gate.for_request(request, slug)
    model = _model_of(access, pk)
    if request.htmx and "export" in request.GET:
        export = get_object_or_404(_exports(access, model), pk=_pk(request.GET["export"], "export"))
        context = {"export": export, "domain": access.domain, "access": access, "model": model}
        if export.job is None:
            return _respond(request, "training/model_detail.html#export-row", context)
        return _job_fragment(request, "training/model_detail.html#export-row", context, export.job)
    return _model_page(request, access, model)


def _model_page(request: HttpRequest, access: gate.Access, model: ModelVersion,
                export_form: ModelExportForm | None = None, status: int = 200) -> HttpResponse:
    dataset_version = None
    if model.dataset_hash:
        dataset_version = DatasetVersion.objects.for_domain(access.domain).select_related("dataset") \
            .filter(content_hash=model.dataset_hash).order_by("-created_at").first()
    metrics = {k: v for k, v in (model.metrics or {}).items() if k not in ("history", "val_history", "retrieval")}
    run = model.run
    context = {
        "access": access,
        "domain": access.domain,
        "model": model,
        "run": run,
        "lineage": _lineage(model),
        "dataset_version": dataset_version,
        "config_rows": _config_rows(model.config),
        "metric_rows": sorted(metrics.items()),
        "elapsed": _duration(metrics.get("elapsed_s")),
        "children": ModelVersion.objects.for_domain(access.domain).filter(parent=model).order_by("number"),
        "artifacts": [(label, value) for label, value in (
            (_("Base model folder"), model.base_path),
            (_("Adapter"), model.adapter_path),
            (_("Merged weights"), model.merged_path),
            (_("Run folder"), run.output_path if run else ""),
        ) if value],
        "retrieval": retrieval_report(model.metrics),
        "gate": _gate(model) if access.is_owner and not model.is_active else None,
        "promotions": model.promotions.select_related("by", "previous")[:20],
        "evaluations": model.evaluations.select_related("job", "dataset_version")[:10],
        "exports": _exports(access, model)[:50],
        "hub_tokens": (list(HubCredential.objects.filter(domain=access.domain).order_by("hub"))
                       if access.is_owner else []),
        "hubs": HUB_LABELS.items(),
        "exportable": True,
        "embedding": model.kind == TrainingRun.Kind.EMBEDDING,
        "export_form": export_form or (ModelExportForm() if access.can_write
                                       and model.kind != TrainingRun.Kind.EMBEDDING else None),
        "section": "training",
    }
    return _respond(request, "training/model_detail.html", context, status)


def _gate(model: ModelVersion):
    from training_app.promotion import gate_for

    return gate_for(model)


@login_required
@require_POST
def model_promote(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Owners make this the domain's active model of its kind (the previous one steps down)."""
    from training_app.promotion import promote_version

    access = gate.for_request(request, slug, min_role=Role.OWNER)
    model = _model_of(access, pk)
    try:
        promotion = promote_version(version=model, by=request.user, force=request.POST.get("force") == "1",
                                    reason=request.POST.get("reason", ""))
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect(reverse("model-detail", args=[access.domain.slug, model.pk]) + "#gate")
    if promotion.forced:
        messages.warning(request, _("Model v%(n)s is now the active model, forced past the gate.") % {"n": model.number})
    else:
        messages.success(request, _("Model v%(n)s is now the active model.") % {"n": model.number})
    return redirect(reverse("model-detail", args=[access.domain.slug, model.pk]))


@login_required
@require_POST
def model_demote(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Owners take this version out of service; no model of its kind is active until another is promoted."""
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    from training_app.promotion import demote_version

    model = demote_version(version=_model_of(access, pk), by=request.user)
    messages.info(request, _("Model v%(n)s is no longer active.") % {"n": model.number})
    return redirect(reverse("model-detail", args=[access.domain.slug, model.pk]))


# Exports ------------------------------------------------------------------------------------


@login_required
@require_POST
def model_export_start(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Experts export a model version (merged safetensors, GGUF, Q4_K_M, Modelfile, archive) as a job."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    model = _model_of(access, pk)
    if model.kind == TrainingRun.Kind.EMBEDDING:  # one format: ONNX, float32 and int8
        try:
            export = start_export(domain=access.domain, model_version=model, by=request.user, onnx=True)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(reverse("model-detail", args=[access.domain.slug, model.pk]) + "#exports")
        messages.success(request, _("Export #%(id)s queued. Its progress shows below.") % {"id": export.pk})
        return redirect(reverse("model-detail", args=[access.domain.slug, model.pk]) + "#exports")
    form = ModelExportForm(request.POST)
    if not form.is_valid():
        return _model_page(request, access, model, form, status=400)
    values = form.cleaned_data
    try:
        export = start_export(domain=access.domain, model_version=model, by=request.user, merged=values["merged"],
                              gguf_outtype=values["gguf_outtype"], quantize=values["quantize"],
                              modelfile=values["modelfile"])
    except ValidationError as exc:
        apply_errors(form, exc)
        return _model_page(request, access, model, form, status=400)
    messages.success(request, _("Export #%(id)s queued. Its progress shows below.") % {"id": export.pk})
    return redirect(reverse("model-detail", args=[access.domain.slug, model.pk]) + "#exports")


@login_required
@require_POST
def export_push(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Owners push a finished export to a model hub with their token (kept encrypted for the next push)."""
    from training_app.hub_tasks import start_hub_push

    access = gate.for_request(request, slug, min_role=Role.OWNER)
    export = get_object_or_404(ModelExport.objects.for_domain(access.domain).select_related("model_version", "job"),
                               pk=_pk(pk, "export"))
    back = reverse("model-detail", args=[access.domain.slug, export.model_version_id]) + "#exports"
    try:
        push = start_hub_push(domain=access.domain, export=export, by=request.user,
                              repo_id=request.POST.get("repo_id", ""), private=request.POST.get("private") == "on",
                              token=request.POST.get("token", ""), hub=request.POST.get("hub") or "huggingface")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(back)
    messages.success(request, _("Push #%(id)s to %(repo)s queued.") % {"id": push.pk, "repo": push.repo_id})
    return redirect(back)


@login_required
@require_GET
def export_download(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One produced file of an export (``?file=`` archive, merged, gguf, quantized or modelfile; the archive
    by default), streamed as an attachment. The path comes from the export row, never from the request."""
    access = gate.for_request(request, slug)
    export = get_object_or_404(ModelExport.objects.for_domain(access.domain), pk=_pk(pk, "export"))
    name = request.GET.get("file") or "archive"
    path = export.artifact_file(name) if name in ModelExport.ARTIFACTS else None
    if path is None:
        raise Http404("No such file in this export")
    response = FileResponse(open(path, "rb"), as_attachment=True, filename=export.files[name]["name"],
                            content_type="application/octet-stream")
    response["Cache-Control"] = "private, no-store"
    return response
