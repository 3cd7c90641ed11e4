"""Experiment logs of a training run: TensorBoard event files, and Weights & Biases when configured.

``ExperimentLog(log_dir, run_name=…, config=…)`` writes scalars under ``log_dir`` (``tensorboard
--logdir <log_dir>`` shows them) as the run reports progress, and mirrors them to a W&B run when
``wandb`` settings are given (project, optional entity and mode; ``mode="offline"`` writes the
W&B run files under ``log_dir`` without a network). Every kind of run reports the same
``Progress``-like records (step, loss, learning rate, tokens/s, validation loss), so one writer
serves SFT, GRPO, embedding and data-parallel runs. ``log_history`` fills in the steps that
progress reports skipped (they come every ``log_every_steps``), from the run's own history.

A failure to log never fails training: the first error is kept in ``errors`` and logging stops.
No Django here.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

TB_DIR = "tensorboard"  # the folder under a run's output folder


def progress_scalars(p: Any) -> dict[str, float]:
    """The scalars of one progress report (``sft.Progress``, ``EmbeddingProgress``, or a dict)."""
    get = p.get if isinstance(p, dict) else (lambda k: getattr(p, k, None))
    names = {"loss": "train/loss", "learning_rate": "train/learning_rate", "tokens_per_s": "train/tokens_per_s",
             "val_loss": "eval/loss", "epoch": "train/epoch", "reward": "train/reward"}
    out = {}
    for key, tag in names.items():
        v = get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[tag] = float(v)
    return out


class ExperimentLog:
    def __init__(self, log_dir: str | os.PathLike, *, run_name: str, config: dict[str, Any] | None = None,
                 wandb: dict[str, Any] | None = None):
        self.log_dir = Path(log_dir)
        self.run_name = run_name
        self.errors: list[str] = []
        self.wandb_url = ""
        self._written: set[tuple[str, int]] = set()
        self._tb = None
        self._wandb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(log_dir=str(self.log_dir), flush_secs=10)
            if config:
                self._tb.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(config.items())), 0)
        except Exception as exc:  # tensorboard missing, a read-only folder
            self.errors.append(f"TensorBoard: {exc}")
        if wandb and wandb.get("project"):
            try:
                import wandb as wb

                self._wandb = wb.init(project=wandb["project"], entity=wandb.get("entity") or None,
                                      name=run_name, config=config or {}, dir=str(self.log_dir),
                                      mode=wandb.get("mode") or "online", reinit="create_new")
                self.wandb_url = getattr(self._wandb, "url", "") or ""
            except Exception as exc:  # not installed, no network, a bad key
                self.errors.append(f"Weights & Biases: {type(exc).__name__}: {exc}")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        fresh = {k: v for k, v in scalars.items() if (k, int(step)) not in self._written}
        if not fresh:
            return
        self._written.update((k, int(step)) for k in fresh)
        if self._tb is not None:
            try:
                for tag, value in fresh.items():
                    self._tb.add_scalar(tag, value, int(step))
            except Exception as exc:
                self.errors.append(f"TensorBoard: {exc}")
                self._tb = None
        if self._wandb is not None:
            try:
                self._wandb.log(dict(fresh), step=int(step))
            except Exception as exc:
                self.errors.append(f"Weights & Biases: {exc}")
                self._wandb = None

    def log_progress(self, step: int, p: Any) -> None:
        self.log(step, progress_scalars(p))

    def log_history(self, history: Iterable[dict[str, Any]], val_history: Iterable[dict[str, Any]] = (),
                    *, offset: int = 0) -> None:
        """Every optimizer step of a finished (or stopped) run; steps already written are skipped."""
        for h in history:
            if "step" in h:
                self.log(offset + int(h["step"]), progress_scalars(h))
        for v in val_history:
            if v.get("step") is not None and v.get("val_loss") is not None:
                self.log(offset + int(v["step"]), {"eval/loss": float(v["val_loss"])})

    def event_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("events.out.tfevents.*"))

    def close(self) -> None:
        if self._tb is not None:
            try:
                self._tb.flush()
                self._tb.close()
            except Exception as exc:
                self.errors.append(f"TensorBoard: {exc}")
            self._tb = None
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as exc:
                self.errors.append(f"Weights & Biases: {exc}")
            self._wandb = None


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """The scalars in a folder's event files, ``{tag: [(step, value), …]}`` (for tests and pages)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags().get("scalars", [])}
