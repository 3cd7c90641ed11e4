"""The training job: resolve the base model, load the frozen rows, call the engine, record the version.

A retried job (its worker died) finds the run's folder with its checkpoints and the engine
resumes from the last one; cancelling stops within a step and keeps that checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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


def chunk_rows(run: TrainingRun) -> list[dict]:
    """The domain's document chunks as continual pre-training rows, in reading order."""
    texts = Chunk.objects.for_domain(run.domain).order_by("document_id", "ordinal").values_list("text", flat=True)
    return [{"text": t} for t in texts]


def training_rows(run: TrainingRun) -> tuple[list[dict], list[dict]]:
    """(train rows, validation rows) in the engine's shape for the run's kind.

    For the two-stage kind these are the fine-tuning rows; its first stage reads ``chunk_rows``.
    """
    from dataclasses import asdict

    from datasets_app import versions

    if run.kind == TrainingRun.Kind.CPT:
        return chunk_rows(run), []
    version = run.dataset_version
    if run.kind == TrainingRun.Kind.JUDGE_SFT:
        return ([{"messages": r["messages"]} for r in versions.load_judge(version, "train")],
                [{"messages": r["messages"]} for r in versions.load_judge(version, "validation")])
    if run.kind == TrainingRun.Kind.GRPO:
        def entities(split):
            return [{"text": r.text, "spans": [asdict(sp) for sp in r.spans]}
                    for r in versions.load_entities(version, split)]

        return entities("train"), entities("validation")

    def qa(split, grounded: bool = False):
        records = versions.load_qa(version, split)
        rows = [{"question": r.question, "answer": r.answer, "system": r.system,
                 "history": [list(t) for t in r.history]} for r in records]
        if grounded:
            from training_app.engine.data import grounded_rows

            # Two passages and the instructions within max_length tokens (about a character per token
            # for Chinese, fewer for other languages: a safe bound for both).
            budget = max(120, (int(run.config.get("max_length", 512)) - 160) // 2)
            rows += grounded_rows(records, seed=int(run.config.get("seed", 0)), max_passage_chars=budget)
        return rows

    return qa("train", grounded=bool(run.config.get("grounded"))), qa("validation")


@job_handler("train", _("Train a model"))
def train_run(ctx: JobContext) -> dict:
    from training_app.engine.base_models import BaseModelError, resolve_base_model
    from training_app.engine.config import TrainConfig

    run = TrainingRun.objects.select_related("domain", "dataset_version", "parent").filter(
        pk=ctx.params.get("run_id"), domain=ctx.domain).first()
    if run is None:
        ctx.fail("The training run was deleted before it started.")
    if run.kind == TrainingRun.Kind.EMBEDDING:
        from training_app.embedding_tasks import train_embedding_run

        return train_embedding_run(ctx, run)
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
    live = _LiveCurve(ctx, experiment_log(run, out_dir))
    try:
        return _train_stages(ctx, run, config, base, rows, eval_rows, out_dir, live)
    finally:
        live.close_log()


def experiment_log(run: TrainingRun, out_dir: Path):
    """TensorBoard event files under the run folder, and W&B when ``VSM_WANDB`` names a project."""
    from training_app.engine.explog import TB_DIR, ExperimentLog

    return ExperimentLog(Path(out_dir) / TB_DIR, run_name=f"{run.domain.slug}-run-{run.pk}",
                         config={**run.config, "kind": run.kind, "base_model": run.base_model},
                         wandb=getattr(settings, "VSM_WANDB", None))


def _train_stages(ctx: JobContext, run: TrainingRun, config, base, rows, eval_rows, out_dir: Path,
                  live: "_LiveCurve") -> dict:
    if run.kind == TrainingRun.Kind.CPT_SFT:
        # Stage 1 learns the domain's language from its documents; its adapter is merged into the
        # base, and stage 2 fine-tunes on the QA pairs from that merged model. A retried job skips a
        # stage whose result is already on disk (and each stage resumes from its own checkpoints).
        cpt_rows = chunk_rows(run)
        if not cpt_rows:
            ctx.fail("There is nothing to pre-train on: the domain has no document chunks.")
        stage_base = out_dir / "cpt-merged"
        if not (stage_base / "config.json").is_file():
            ctx.log(f"stage 1 of 2: continual pre-training on {len(cpt_rows)} chunk(s)")
            live.stage = "cpt"
            first = _train_or_fail(ctx, config.replace(kind="cpt"), cpt_rows, out_dir / "cpt", (), live)
            if first.stopped_reason == "cancelled":
                TrainingRun.objects.filter(pk=run.pk).update(
                    output_path=os.path.relpath(out_dir, settings.VSM_DATA_DIR), metrics={"stages": {
                        "cpt": {"steps": first.steps, "stopped_reason": "cancelled"}}})
                ctx.log(f"cancelled in stage 1 at step {first.steps}; the last checkpoint is kept")
                raise JobCancelled()
            ctx.progress(0, 0, message=gettext_noop("Merging the pre-trained adapter"))
            from training_app.engine.export import ExportError, merge_adapter

            try:
                merge_adapter(base, Path(first.model_dir), stage_base)
            except ExportError as exc:
                ctx.fail(str(exc))
            (out_dir / "cpt-metrics.json").write_text(json.dumps(first.to_dict(), ensure_ascii=False))
            live.explog.log_history(first.history)
        else:
            ctx.log("stage 1 of 2: continual pre-training already done; reusing its merged model")
        live.load_stage_one(out_dir / "cpt-metrics.json")
        live.stage = "sft"
        ctx.log("stage 2 of 2: fine-tuning on the dataset version")
        base = stage_base
        config = config.replace(base_model=str(stage_base))
        result = _train_or_fail(ctx, config, rows, out_dir / "sft", eval_rows, live)
    else:
        result = _train_or_fail(ctx, config, rows, out_dir, eval_rows, live)

    metrics = result.to_dict()
    live.explog.log_history(result.history, result.val_history, offset=live.offset)
    metrics["experiment_log"] = live.log_info()
    if live.stage_one:
        # One curve for the run page: the fine-tuning steps continue after the pre-training ones.
        metrics["stages"] = {"cpt": live.stage_one}
        metrics["history"] = [h for h in live.history if h.get("stage") == "cpt"] + [
            {**h, "step": live.offset + h["step"], "stage": "sft"} for h in result.history]
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
                metrics={k: metrics.get(k) for k in ("final_train_loss", "best_val_loss", "best_epoch", "steps",
                                                     "tokens_seen", "elapsed_s", "device", "precision")},
            ),
        )
    ctx.log(f"model version v{version.number}: final loss {result.final_train_loss}, "
            f"best validation loss {result.best_val_loss}, {result.elapsed_s:.0f}s on {result.device}")
    return {"run_id": run.pk, "model_version_id": version.pk, "model_version": version.number,
            "final_train_loss": result.final_train_loss, "best_val_loss": result.best_val_loss,
            "steps": result.steps, "resumed_from_step": result.resumed_from_step}


class _LiveCurve:
    """Reports each progress step to the Job (the run page draws the live loss curve from it).

    In a two-stage run the fine-tuning steps continue the pre-training curve (their step numbers
    are offset by stage 1's steps, and each point says its stage).
    """

    def __init__(self, ctx: JobContext, explog):
        self.ctx = ctx
        self.explog = explog
        self.stage = ""
        self.stage_one: dict | None = None
        self.offset = 0
        self.history: list[dict] = []
        self.val_history: list[dict] = []

    def load_stage_one(self, path: Path) -> None:
        if not path.is_file():
            return
        done = json.loads(path.read_text())
        self.stage_one = {k: done.get(k) for k in ("steps", "final_train_loss", "elapsed_s", "tokens_seen")}
        self.offset = int(done.get("steps") or 0)
        self.history = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "stage": "cpt"}
                        for h in done.get("history", [])]

    def log_info(self) -> dict:
        info = {"tensorboard": os.path.relpath(self.explog.log_dir, settings.VSM_DATA_DIR)}
        if self.explog.wandb_url:
            info["wandb_url"] = self.explog.wandb_url
        return info

    def close_log(self) -> None:
        self.explog.close()
        for error in self.explog.errors:
            self.ctx.log(f"experiment log: {error}")

    def __call__(self, p) -> None:
        point = {"step": self.offset + p.step, "epoch": round(p.epoch, 3), "loss": p.loss}
        self.explog.log_progress(self.offset + p.step, p)
        if self.stage:
            point["stage"] = self.stage
        self.history.append(point)
        if p.val_loss is not None:
            self.val_history.append({"epoch": round(p.epoch), "val_loss": p.val_loss})
        message = {"cpt": gettext_noop("Continual pre-training (stage 1 of 2)"),
                   "sft": gettext_noop("Fine-tuning (stage 2 of 2)")}.get(self.stage, gettext_noop("Training"))
        self.ctx.progress(p.step, p.total_steps, message=message)
        # The last 200 points keep the Job row small.
        self.ctx.report(step=p.step, total_steps=p.total_steps, epoch=round(p.epoch, 3), loss=p.loss,
                        learning_rate=p.learning_rate, tokens_per_s=round(p.tokens_per_s, 1), eta_s=round(p.eta_s),
                        history=self.history[-200:], val_history=self.val_history,
                        **({"stage": self.stage} if self.stage else {}),
                        **({"val_loss": p.val_loss} if p.val_loss is not None else {}))


def _train_or_fail(ctx: JobContext, config, rows, out_dir, eval_rows, on_progress):
    from training_app.engine import launch
    from training_app.engine.base_models import BaseModelError
    from training_app.engine.sft import train

    processes = launch.wants_data_parallel(config)
    try:
        if processes > 1:  # several GPUs: one process each, through accelerate launch
            ctx.log(f"data-parallel over {processes} GPUs (accelerate launch)")
            return launch.train_data_parallel(config, rows, out_dir, num_processes=processes, eval_rows=eval_rows,
                                              on_progress=on_progress, should_stop=ctx.should_stop)
        return train(config, rows, out_dir, eval_rows=eval_rows, on_progress=on_progress,
                     should_stop=ctx.should_stop)
    except BaseModelError as exc:
        ctx.fail(str(exc))
    except RuntimeError as exc:
        if processes > 1:
            ctx.fail(str(exc))
        raise


from training_app import evaluation_tasks, export_tasks, hub_tasks  # noqa: E402,F401
