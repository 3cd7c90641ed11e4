"""The training job: resolve the base model, load the frozen rows, call the engine, record the version.

A retried job (its worker died) finds the run's folder with its checkpoints and the engine
resumes from the last one; cancelling stops within a step and keeps that checkpoint.
"""
from __future__ import annotations

import logging
import os

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from domains.jobs import JobCancelled, JobContext, job_handler
from domains.models import Chunk
from training_app.models import ModelVersion, TrainingRun
from training_app.services import base_cache_dir

logger = logging.getLogger("vsm.training")


def run_dir(run: TrainingRun):
    return settings.VSM_DATA_DIR / "domains" / run.domain.slug / "runs" / str(run.pk)


def training_rows(run: TrainingRun) -> tuple[list[dict], list[dict]]:
    """(train rows, validation rows) in the engine's shape for the run's kind."""
    from datasets_app import versions

    if run.kind == TrainingRun.Kind.CPT:
        texts = Chunk.objects.for_domain(run.domain).order_by("document_id", "ordinal").values_list("text", flat=True)
        return [{"text": t} for t in texts], []
    version = run.dataset_version
    if run.kind == TrainingRun.Kind.JUDGE_SFT:
        return ([{"messages": r["messages"]} for r in versions.load_judge(version, "train")],
                [{"messages": r["messages"]} for r in versions.load_judge(version, "validation")])

    def qa(split):
        return [{"question": r.question, "answer": r.answer, "system": r.system,
                 "history": [list(t) for t in r.history]} for r in versions.load_qa(version, split)]

    return qa("train"), qa("validation")


@job_handler("train", _("Train a model"))
def train_run(ctx: JobContext) -> dict:
    from training_app.engine.base_models import BaseModelError, resolve_base_model
    from training_app.engine.config import TrainConfig
    from training_app.engine.sft import train

    run = TrainingRun.objects.select_related("domain", "dataset_version").filter(
        pk=ctx.params.get("run_id"), domain=ctx.domain).first()
    if run is None:
        ctx.fail("The training run was deleted before it started.")
    ctx.progress(0, 0, message=gettext_noop("Preparing the base model"))
    try:
        base = resolve_base_model(run.base_model, base_cache_dir())
    except BaseModelError as exc:
        ctx.fail(str(exc))
    ctx.log(f"base model {run.base_model} → {base}")
    try:
        rows, eval_rows = training_rows(run)
    except Exception as exc:  # a dataset version whose files went missing, and the like
        ctx.fail(f"The training data could not be read: {exc}")
    if not rows:
        ctx.fail("There is nothing to train on: the dataset version's train split is empty.")
    config = TrainConfig.from_dict({**run.config, "base_model": str(base)})
    out_dir = run_dir(run)
    ctx.log(f"{len(rows)} training row(s), {len(eval_rows)} validation row(s), {config.epochs} epoch(s), "
            f"{config.method} r={config.lora_r} lr={config.learning_rate}")

    history: list[dict] = []
    val_history: list[dict] = []

    def on_progress(p) -> None:
        history.append({"step": p.step, "epoch": round(p.epoch, 3), "loss": p.loss})
        if p.val_loss is not None:
            val_history.append({"epoch": round(p.epoch), "val_loss": p.val_loss})
        ctx.progress(p.step, p.total_steps, message=gettext_noop("Training"))
        # The run page draws the live loss curve from these (the last 200 points keep the row small).
        ctx.report(step=p.step, total_steps=p.total_steps, epoch=round(p.epoch, 3), loss=p.loss,
                   learning_rate=p.learning_rate, tokens_per_s=round(p.tokens_per_s, 1), eta_s=round(p.eta_s),
                   history=history[-200:], val_history=val_history,
                   **({"val_loss": p.val_loss} if p.val_loss is not None else {}))

    try:
        result = train(config, rows, out_dir, eval_rows=eval_rows, on_progress=on_progress,
                       should_stop=ctx.should_stop)
    except BaseModelError as exc:
        ctx.fail(str(exc))
    metrics = result.to_dict()
    TrainingRun.objects.filter(pk=run.pk).update(output_path=os.path.relpath(out_dir, settings.VSM_DATA_DIR),
                                                 metrics=metrics)
    if result.stopped_reason == "cancelled":
        ctx.log(f"cancelled at step {result.steps}; the last checkpoint is kept")
        raise JobCancelled()
    with transaction.atomic():
        version, _created = ModelVersion.objects.get_or_create(
            run=run,
            defaults=dict(
                domain=run.domain, number=ModelVersion.next_number(run.domain), kind=run.kind, parent=run.parent,
                base_model=run.base_model, base_path=str(base), dataset_hash=run.dataset_hash, config=run.config,
                adapter_path=os.path.relpath(result.model_dir, settings.VSM_DATA_DIR) if result.model_dir else "",
                metrics={k: metrics[k] for k in ("final_train_loss", "best_val_loss", "best_epoch", "steps",
                                                 "tokens_seen", "elapsed_s", "device", "precision")},
            ),
        )
    ctx.log(f"model version v{version.number}: final loss {result.final_train_loss}, "
            f"best validation loss {result.best_val_loss}, {result.elapsed_s:.0f}s on {result.device}")
    return {"run_id": run.pk, "model_version_id": version.pk, "model_version": version.number,
            "final_train_loss": result.final_train_loss, "best_val_loss": result.best_val_loss,
            "steps": result.steps, "resumed_from_step": result.resumed_from_step}
