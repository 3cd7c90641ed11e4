"""Data-parallel training through `accelerate launch`: two processes (gloo on the CPU here, NCCL
on GPUs) must train exactly what one process trains, report progress, stop on cancel, resume."""
from __future__ import annotations

from pathlib import Path

import pytest

from training_app.engine.config import config_for
from training_app.engine.launch import train_data_parallel, wants_data_parallel
from training_app.engine.sft import train

# 8 rows, 2 per micro-batch, 2 micro-batches per step (2 steps an epoch): each process takes one a step.
EXACT = dict(learning_rate=5e-3, batch_size=2, grad_accum=2, lora_dropout=0.0, epochs=2, warmup_ratio=0.0,
             save_every_steps=0, log_every_steps=1)


def _tensors(model_dir: str):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "adapter_model.safetensors"))


def test_two_processes_train_the_same_adapter_as_one(tiny_qwen, qa_rows, tmp_path):
    import torch

    cfg = config_for(base_model=tiny_qwen, **EXACT)
    one = train(cfg, qa_rows, tmp_path / "one")
    seen = []
    two = train_data_parallel(cfg, qa_rows, tmp_path / "two", num_processes=2, on_progress=seen.append,
                              timeout=300)
    assert two.stopped_reason == "completed" and two.steps == one.steps == 4
    assert "data-parallel over 2 processes" in two.notes
    assert [p.step for p in seen] == list(range(1, 5)) and seen[-1].total_steps == 4
    # the same losses and the same weights (float sums in another order: allclose, not equal)
    assert [h["loss"] for h in two.history] == pytest.approx([h["loss"] for h in one.history], rel=1e-4)
    a, b = _tensors(one.model_dir), _tensors(two.model_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert two.tokens_seen == one.tokens_seen


def test_a_cancelled_launch_keeps_its_checkpoint_and_resumes(tiny_qwen, qa_rows, tmp_path):
    cfg = config_for(base_model=tiny_qwen, **{**EXACT, "epochs": 40, "save_every_steps": 2})
    seen = []
    first = train_data_parallel(cfg, qa_rows, tmp_path / "run", num_processes=2, on_progress=seen.append,
                                should_stop=lambda: len(seen) >= 3, timeout=300)
    assert first.stopped_reason == "cancelled" and first.model_dir is None and 3 <= first.steps < 80
    again = train_data_parallel(cfg, qa_rows, tmp_path / "run", num_processes=2, timeout=300)
    assert again.stopped_reason == "completed" and again.steps == 80 and again.resumed_from_step >= 2
    assert (Path(again.model_dir) / "adapter_config.json").is_file()


def test_launch_refuses_bad_input_before_starting_processes(tiny_qwen, tmp_path):
    with pytest.raises(Exception, match="does not exist|config.json"):
        train_data_parallel(config_for(base_model=str(tmp_path / "nope")), [{"question": "q", "answer": "a"}],
                            tmp_path / "x", num_processes=2)
    with pytest.raises(ValueError, match="at least 2"):
        train_data_parallel(config_for(base_model=tiny_qwen), [{"question": "q", "answer": "a"}], tmp_path / "y",
                            num_processes=1)
    # this machine has no GPUs, so runs stay in one process
    assert wants_data_parallel(config_for(base_model=tiny_qwen)) == 1


def test_a_launch_that_fails_for_a_moment_is_started_once_more(tiny_qwen, qa_rows, tmp_path, monkeypatch):
    """The first launch dies (as when its rendezvous port is taken); the second, on a fresh port,
    trains the run. Two failures raise with both attempts' own lines."""
    from training_app.engine import launch

    real = launch._launch_once
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return 1, ["[rank0]: DistNetworkError: address already in use"]
        return real(*args, **kwargs)

    monkeypatch.setattr(launch, "_launch_once", flaky)
    cfg = config_for(base_model=tiny_qwen, **EXACT)
    result = train_data_parallel(cfg, qa_rows, tmp_path / "run", num_processes=2, timeout=300)
    assert len(calls) == 2 and result.stopped_reason == "completed" and result.steps == 4

    monkeypatch.setattr(launch, "_launch_once", lambda *a, **k: (1, [f"rank0 died {len(calls)}"]))
    with pytest.raises(RuntimeError, match=r"(?s)attempt 1 \(exit 1\).*rank0 died.*attempt 2 \(exit 1\)"):
        train_data_parallel(cfg, qa_rows, tmp_path / "again", num_processes=2, timeout=300)
