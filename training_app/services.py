"""Starting training runs: check what can be checked before a worker spends time on it."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from datasets_app.models import DatasetVersion
from domains import audit
from domains.jobs import enqueue_job
from domains.models import Domain
from training_app.models import ModelVersion, TrainingRun

EMBEDDED_BASE = "embedded:gemma3-270m"


def base_cache_dir() -> Path:
    """Imported base models are shared by every domain (they are public weights)."""
    return settings.VSM_DATA_DIR / "models" / "base"


def check_base_spec(spec: str) -> str:
    """Refuse a base model that cannot work before a job is queued (the job checks again, fully)."""
    spec = (spec or "").strip()
    if not spec:
        raise ValidationError({"base_model": "Choose a base model (embedded:gemma3-270m is the built-in default)."})
    if spec.startswith("embedded:"):
        if spec != EMBEDDED_BASE:
            raise ValidationError({"base_model": f"Unknown embedded model {spec!r}; the built-in one is {EMBEDDED_BASE}."})
        return spec
    looks_local = spec.startswith(("/", "./", "~")) or spec.endswith(".gguf")
    if looks_local:
        path = Path(spec).expanduser()
        if not path.exists():
            raise ValidationError({"base_model": f"{spec} does not exist on this machine."})
        if path.is_dir() and not (path / "config.json").is_file():
            raise ValidationError({"base_model": f"{spec} is a folder without config.json: not a Hugging Face model."})
    return spec


def start_training(*, domain: Domain, dataset_version: DatasetVersion | None, by, kind: str = TrainingRun.Kind.SFT,
                   base_model: str = EMBEDDED_BASE, preset: str = "", overrides: dict | None = None,
                   parent: ModelVersion | None = None, name: str = "") -> TrainingRun:
    """Create a run with a validated config and queue its job."""
    from training_app.engine.config import config_for

    from training_app.engine.model_sources import qualify

    if kind not in TrainingRun.Kind.values:
        raise ValidationError({"kind": f"Unknown training kind {kind!r}; choose one of {', '.join(TrainingRun.Kind.values)}."})
    base_model = qualify(base_model, domain.model_hub)  # a bare id comes from the domain's hub
    if dataset_version is not None and dataset_version.domain_id != domain.pk:
        raise ValidationError({"dataset_version": "That dataset version belongs to another domain."})
    if kind == TrainingRun.Kind.EMBEDDING:
        return _start_embedding(domain=domain, dataset_version=dataset_version, by=by,
                                base_model=base_model if base_model != EMBEDDED_BASE else EMBEDDED_ENCODER,
                                overrides=overrides or {}, parent=parent, name=name)
    if dataset_version is None and kind != TrainingRun.Kind.CPT:
        raise ValidationError({"dataset_version": "Choose a frozen dataset version to train on."})
    needs = {TrainingRun.Kind.GRPO: "entities", TrainingRun.Kind.JUDGE_SFT: "judge"}.get(kind, "qa")
    if dataset_version is not None and kind != TrainingRun.Kind.CPT \
            and not (dataset_version.counts.get(needs) or {}).get("train"):
        what = {"entities": "entity examples", "judge": "judge examples", "qa": "approved QA pairs"}[needs]
        raise ValidationError({"dataset_version": f"That dataset version has no {what} in its train split; "
                                                  f"{TrainingRun.Kind(kind).label} needs them."})
    if parent is not None and parent.domain_id != domain.pk:
        raise ValidationError({"parent": "That model version belongs to another domain."})
    base_model = check_base_spec(base_model)
    try:
        # The two-stage kind stores its fine-tuning config; its pre-training stage derives from it.
        engine_kind = TrainingRun.Kind.SFT if kind == TrainingRun.Kind.CPT_SFT else kind
        config = config_for(preset, **{**(overrides or {}), "kind": str(engine_kind)})
    except (TypeError, ValueError) as exc:
        raise ValidationError({"config": str(exc)}) from None
    with transaction.atomic():
        run = TrainingRun.objects.create(
            domain=domain, kind=kind, name=name[:200], base_model=base_model, dataset_version=dataset_version,
            dataset_hash=dataset_version.content_hash if dataset_version else "", parent=parent,
            config=config.to_dict(), created_by=by if getattr(by, "is_authenticated", False) else None,
        )
        job = enqueue_job(domain=domain, kind="train", params={"run_id": run.pk}, created_by=by)
        TrainingRun.objects.filter(pk=run.pk).update(job=job)
        run.job = job
    return run


# Embedding models ---------------------------------------------------------------------------

EMBEDDED_ENCODER = "embedded:all-minilm-l6-v2"
# Settings of the training form (and the API's LLM-style names) that carry over to an embedding run;
# the LoRA ones mean nothing there. The form only sends settings changed from their defaults.
EMBEDDING_FROM_FORM = {"max_length": "max_seq_length"}


def embedding_overrides(overrides: dict) -> dict:
    """Map training-form settings onto EmbeddingConfig fields; EmbeddingConfig fields pass as they are."""
    from training_app.engine.config import TrainConfig
    from training_app.engine.embedding_config import EmbeddingConfig

    known = set(EmbeddingConfig.__dataclass_fields__)
    out = {}
    for key, value in overrides.items():
        target = EMBEDDING_FROM_FORM.get(key, key)
        if target in known:
            if target != key and target in overrides:
                continue  # the embedding name, given too, wins
            out[target] = value
        elif key in TrainConfig.__dataclass_fields__:
            continue  # an LLM-only setting (lora_r, grad_accum, ...)
        else:
            out[key] = value  # unknown: EmbeddingConfig names it in its error
    return out


def _start_embedding(*, domain: Domain, dataset_version: DatasetVersion | None, by, base_model: str,
                     overrides: dict, parent: ModelVersion | None, name: str) -> TrainingRun:
    """An embedding run: pairs from the version's retrieval examples and QA pairs (TSDAE: the chunks)."""
    from training_app.engine.embedding_config import config_for as embedding_config_for

    try:
        config = embedding_config_for(**embedding_overrides(overrides))
    except (TypeError, ValueError) as exc:
        raise ValidationError({"config": str(exc)}) from None
    if config.objective != "tsdae":
        if dataset_version is None:
            raise ValidationError({"dataset_version": "Choose a frozen dataset version to train on (only the "
                                                      "unsupervised tsdae objective reads the documents alone)."})
        counts = dataset_version.counts or {}
        if not (counts.get("retrieval") or {}).get("train") and not (counts.get("qa") or {}).get("train"):
            raise ValidationError({"dataset_version": "That dataset version has no retrieval examples or QA pairs "
                                                      "in its train split; an embedding model needs them."})
    from domains.models import Chunk

    if config.objective in ("tsdae", "augsbert") and not Chunk.objects.for_domain(domain).exists():
        raise ValidationError({"config": f"objective: {config.objective} reads the domain's chunks, and there are "
                                         f"none yet."})
    base_model = (base_model or "").strip() or EMBEDDED_ENCODER
    if base_model.startswith("embedded:") and base_model != EMBEDDED_ENCODER:
        raise ValidationError({"base_model": f"Unknown embedded embedding model {base_model!r}; the built-in one is "
                                             f"{EMBEDDED_ENCODER}."})
    if not base_model.startswith("embedded:"):
        base_model = check_base_spec(base_model)
    if parent is not None and parent.domain_id != domain.pk:
        raise ValidationError({"parent": "That model version belongs to another domain."})
    if parent is not None and parent.kind != TrainingRun.Kind.EMBEDDING:
        raise ValidationError({"parent": "An embedding run continues from an embedding model version only."})
    with transaction.atomic():
        run = TrainingRun.objects.create(
            domain=domain, kind=TrainingRun.Kind.EMBEDDING, name=name[:200], base_model=base_model,
            dataset_version=dataset_version, dataset_hash=dataset_version.content_hash if dataset_version else "",
            parent=parent, config=config.to_dict(), created_by=by if getattr(by, "is_authenticated", False) else None,
        )
        job = enqueue_job(domain=domain, kind="train", params={"run_id": run.pk}, created_by=by)
        TrainingRun.objects.filter(pk=run.pk).update(job=job)
        run.job = job
    return run


# Exports ------------------------------------------------------------------------------------

EXPORT_OUTTYPES = ("", "f16", "q8_0")
EXPORT_QUANTIZE = ("", "Q4_K_M")


def export_dir(export) -> Path:
    """``VSM_DATA_DIR/domains/<slug>/exports/<id>/``: everything one export writes."""
    return settings.VSM_DATA_DIR / "domains" / export.domain.slug / "exports" / str(export.pk)


def export_source(version: ModelVersion) -> tuple[str, Path, Path | None]:
    """Where an export's merged weights come from, checked on disk.

    ``("merged", folder, None)`` when merged weights are already there, ``("full", folder, None)``
    for a full fine-tune, ``("adapter", adapter, base)`` for a LoRA to merge into its base.
    A ValidationError under ``model_version`` says what is missing.
    """
    data = settings.VSM_DATA_DIR
    n = version.number
    if version.merged_path and (data / version.merged_path / "config.json").is_file():
        return "merged", data / version.merged_path, None
    if not version.adapter_path:
        raise ValidationError({"model_version": f"Model v{n} records no adapter or weights, so there is nothing "
                                                f"to export."})
    folder = data / version.adapter_path
    if (folder / "adapter_config.json").is_file():
        base = Path(version.base_path) if version.base_path else None
        if base is None or not (base / "config.json").is_file():
            raise ValidationError({"model_version": f"The base model of v{n} ({version.base_path or 'not recorded'}) "
                                                    f"is not on this machine, so its adapter cannot be merged. "
                                                    f"Prepare the base model {version.base_model} again (start a "
                                                    f"training run from it), then export."})
        return "adapter", folder, base
    if (folder / "config.json").is_file():
        return "full", folder, None
    raise ValidationError({"model_version": f"The weights of v{n} are missing from the data folder "
                                            f"({version.adapter_path}); restore it from a backup or train again."})


def embedding_export_source(version: ModelVersion) -> Path:
    """The sentence-transformers folder of an embedding version, checked on disk."""
    folder = settings.VSM_DATA_DIR / version.adapter_path if version.adapter_path else None
    if folder is None or not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
        raise ValidationError({"model_version": f"The weights of embedding model v{version.number} are missing from "
                                                f"the data folder ({version.adapter_path or 'not recorded'}); "
                                                f"restore it from a backup or train again."})
    return folder


def start_export(*, domain: Domain, model_version: ModelVersion, by, merged: bool = True,
                 gguf_outtype: str = "f16", quantize: str = "Q4_K_M", modelfile: bool = True, onnx: bool = False):
    """Check the formats and that the version's weights are on disk, then create the export and queue its job.

    Embedding versions export to ONNX (float32 and int8) only; language models to the other formats."""
    from training_app.models import ModelExport, TrainingRun

    if model_version.domain_id != domain.pk:
        raise ValidationError({"model_version": "That model version belongs to another domain."})
    if model_version.kind == TrainingRun.Kind.EMBEDDING:
        embedding_export_source(model_version)
        merged, gguf_outtype, quantize, modelfile, onnx = False, "", "", False, True
    elif onnx:
        raise ValidationError({"onnx": "ONNX export is for embedding models; export a language model as "
                                       "safetensors or GGUF."})
    gguf_outtype, quantize = gguf_outtype or "", quantize or ""
    if gguf_outtype not in EXPORT_OUTTYPES:
        raise ValidationError({"gguf_outtype": f"GGUF type must be f16 or q8_0 (or none), not {gguf_outtype!r}."})
    if quantize not in EXPORT_QUANTIZE:
        raise ValidationError({"quantize": f"Quantization must be Q4_K_M (or none), not {quantize!r}."})
    errors = {}
    if quantize and not gguf_outtype:
        errors["quantize"] = "Quantizing needs a GGUF: choose a GGUF type too."
    if modelfile and not gguf_outtype:
        errors["modelfile"] = "An Ollama Modelfile needs a GGUF: choose a GGUF type too."
    if errors:
        raise ValidationError(errors)
    if not merged and not gguf_outtype and not onnx:
        raise ValidationError("Choose at least one format: merged safetensors or GGUF.")
    if not onnx:
        export_source(model_version)
    with transaction.atomic():
        export = ModelExport.objects.create(
            domain=domain, model_version=model_version, merged=bool(merged), gguf_outtype=gguf_outtype,
            quantize=quantize, modelfile=bool(modelfile), onnx=bool(onnx),
            created_by=by if getattr(by, "is_authenticated", False) else None,
        )
        job = enqueue_job(domain=domain, kind="export", params={"export_id": export.pk}, created_by=by)
        export.job = job
        export.output_path = str(export_dir(export).relative_to(settings.VSM_DATA_DIR))
        ModelExport.objects.filter(pk=export.pk).update(job=job, output_path=export.output_path)
        formats = [f for f, on in (("safetensors", merged), (f"gguf-{gguf_outtype}", gguf_outtype),
                                   (quantize, quantize), ("modelfile", modelfile), ("onnx", onnx)) if on]
        audit.record(domain=domain, by=by, action="export.start", target=f"model v{model_version.number}",
                     summary=", ".join(formats), export=export.pk, formats=formats)
    return export
