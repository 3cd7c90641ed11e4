"""Starting training runs: check what can be checked before a worker spends time on it."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from datasets_app.models import DatasetVersion
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

    if kind not in TrainingRun.Kind.values:
        raise ValidationError({"kind": f"Unknown training kind {kind!r}; choose one of {', '.join(TrainingRun.Kind.values)}."})
    if dataset_version is not None and dataset_version.domain_id != domain.pk:
        raise ValidationError({"dataset_version": "That dataset version belongs to another domain."})
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
