"""Experiment logs: TensorBoard event files that TensorBoard reads back, W&B offline runs, no crash on failure."""
from __future__ import annotations

import pytest

from training_app.engine.explog import ExperimentLog, progress_scalars, read_scalars
from training_app.engine.sft import Progress


def test_progress_and_history_become_scalars_once_per_step(tmp_path):
    log = ExperimentLog(tmp_path / "tb", run_name="finance-run-1", config={"lr": 0.01})
    log.log_progress(2, Progress(2, 4, 0.5, 1.5, 0.01, 100.0, 3.0))
    log.log_progress(4, Progress(4, 4, 1.0, 1.0, 0.005, 110.0, 0.0, val_loss=1.2))
    # the history fills the steps progress skipped; step 2 and 4 are not written twice
    log.log_history([{"step": s, "loss": 2.0 - s * 0.25, "learning_rate": 0.01} for s in (1, 2, 3, 4)],
                    [{"epoch": 1, "step": 4, "val_loss": 9.9}])
    log.close()
    assert log.errors == [] and len(log.event_files()) == 1
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["train/loss"] == [(1, 1.75), (2, 1.5), (3, 1.25), (4, 1.0)]
    assert scalars["eval/loss"] == [(4, pytest.approx(1.2))]
    assert [s for s, _ in scalars["train/tokens_per_s"]] == [2, 4]


def test_non_numbers_are_not_logged():
    assert progress_scalars({"loss": float("nan"), "learning_rate": True, "val_loss": None, "epoch": 1}) == \
        {"train/epoch": 1.0}


def test_a_folder_that_cannot_be_written_is_an_error_not_a_crash(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    log = ExperimentLog(blocker / "tb", run_name="r")
    log.log(1, {"train/loss": 1.0})
    log.close()
    assert log.errors and "TensorBoard" in log.errors[0]


def test_weights_and_biases_offline_run_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = ExperimentLog(tmp_path / "tb", run_name="finance-run-2", config={"lr": 0.01},
                        wandb={"project": "vsm-test", "mode": "offline"})
    log.log(1, {"train/loss": 2.0})
    log.log(2, {"train/loss": 1.5})
    log.close()
    assert log.errors == []
    runs = list((tmp_path / "tb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
