"""The supervised training engine on tiny local models: it learns, resumes, cancels."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from training_app.engine.config import PRESETS, TrainConfig, config_for
from training_app.engine.devices import plan_devices
from training_app.engine.sft import BaseModelError, Progress, generate_answers, train

from .conftest import QA

# A memorisation recipe for the tiny model: high lr, one micro-batch per step.
FAST = dict(learning_rate=1e-2, batch_size=8, grad_accum=1, lora_alpha=32, lora_dropout=0.0,
            warmup_ratio=0.05, save_every_steps=0, log_every_steps=1)


def _adapter_tensors(model_dir: str):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "adapter_model.safetensors"))


# --------------------------------------------------------------------------- config
def test_defaults_presets_and_overrides():
    c = TrainConfig()
    assert (c.kind, c.method, c.lora_r, c.lora_alpha, c.lora_dropout, c.target_modules) == \
        ("sft", "lora", 8, 16, 0.05, "all-linear")
    assert (c.learning_rate, c.epochs, c.grad_accum, c.warmup_ratio, c.weight_decay, c.max_length) == \
        (2e-4, 3, 4, 0.1, 0.01, 512)
    hp = config_for("high_precision", base_model="/m")
    assert (hp.lora_r, hp.learning_rate, hp.epochs, hp.preset) == (16, 1e-4, 6, "high_precision")
    cs = config_for("customer_service", epochs=5)
    assert (cs.lora_r, cs.learning_rate, cs.epochs) == (10, 2e-4, 5)
    assert config_for("creative").generation_temperature > config_for("").generation_temperature
    assert set(PRESETS) == {"high_precision", "customer_service", "creative"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 9  # type: ignore[misc]


@pytest.mark.parametrize("overrides, field", [
    ({"lora_r": 0}, "lora_r"), ({"learning_rate": -1.0}, "learning_rate"), ({"kind": "rlhf"}, "kind"),
    ({"method": "qlora"}, "method"), ({"epochs": "3"}, "epochs"), ({"packing": 1}, "packing"),
    ({"device": "tpu"}, "device"), ({"precision": "int8"}, "precision"), ({"max_length": 4}, "max_length"),
    ({"warmup_ratio": 1.5}, "warmup_ratio"), ({"quantization": "4bit", "method": "full"}, "quantization"),
])
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        config_for(**overrides)


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(ValueError, match="unknown TrainConfig field.*lora_rank"):
        config_for(lora_rank=8)
    with pytest.raises(ValueError, match="preset: unknown preset 'legal'"):
        config_for("legal")


def test_json_round_trip():
    c = config_for("high_precision", base_model="/models/gemma", seed=7, packing=False)
    text = c.to_json()
    assert json.loads(text)["lora_r"] == 16
    assert TrainConfig.from_json(text) == c
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_json(json.dumps({**json.loads(text), "extra": 1}))


def test_device_plan_on_this_machine_never_requires_a_gpu():
    import torch

    plan = plan_devices("auto", "auto", "4bit", "lora")
    if not torch.cuda.is_available():
        assert plan.device in ("cpu", "mps") and plan.precision == "fp32" and plan.quantization == "none"
        assert any("4-bit" in n for n in plan.notes)
        assert plan_devices("cpu", "bf16").precision == "fp32"
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            plan_devices("cuda")
    else:  # pragma: no cover - GPU machines
        assert plan.device == "cuda"


# --------------------------------------------------------------------------- base model errors
def test_missing_or_broken_base_model_fails_before_any_work(tmp_path):
    out = tmp_path / "out"
    cfg = config_for(base_model=str(tmp_path / "nope"))
    with pytest.raises(BaseModelError, match="does not exist"):
        train(cfg, QA, out)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BaseModelError, match="config.json is missing"):
        train(config_for(base_model=str(empty)), QA, out)
    (empty / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(BaseModelError, match="holds no weights"):
        train(config_for(base_model=str(empty)), QA, out)
    with pytest.raises(BaseModelError, match="base_model is empty"):
        train(config_for(), QA, out)
    assert not out.exists()


# --------------------------------------------------------------------------- learning
def test_lora_memorises_the_set_and_answers_exactly(tiny_qwen, qa_rows, tmp_path):
    """Loss falling is not enough (a 0.26 loss once answered 0 of 3): greedy answers must be exact."""
    seen: list[Progress] = []
    cfg = config_for(base_model=tiny_qwen, epochs=40, **FAST)
    r = train(cfg, qa_rows, tmp_path / "run", on_progress=seen.append)
    assert r.stopped_reason == "completed" and r.steps == r.total_steps == 40 and r.epochs_completed == 40
    first, last = r.history[0]["loss"], r.final_train_loss
    assert first > 4.0 and last < 0.3 and last < first / 10
    assert r.trainable_params < r.total_params / 5  # only the adapter trained
    assert r.rows_truncated == r.rows_dropped == 0 and r.device.split(":")[0] in ("cpu", "cuda", "mps")
    assert seen and seen[-1].step == 40 and seen[-1].eta_s == 0.0 and all(p.tokens_per_s > 0 for p in seen)
    assert max(p.learning_rate for p in seen) == pytest.approx(1e-2, rel=0.1)
    out = Path(r.output_dir)
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "adapter" / "tokenizer.json").is_file()
    assert TrainConfig.from_json((out / "train_config.json").read_text()) == cfg
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 40 and {"step", "loss", "learning_rate", "tokens_per_s"} <= set(
        metrics["history"][0])
    answers = generate_answers(r.model_dir, tiny_qwen, [q["question"] for q in qa_rows], max_new_tokens=32)
    assert answers == [q["answer"] for q in qa_rows]
    # the untrained base does not know them
    assert generate_answers(tiny_qwen, None, [qa_rows[0]["question"]], max_new_tokens=16) != [qa_rows[0]["answer"]]


def test_plain_template_and_full_fine_tuning_also_learn(tiny_qwen_plain, qa_rows, tmp_path):
    cfg = config_for(base_model=tiny_qwen_plain, method="full", epochs=25, **{**FAST, "learning_rate": 3e-3})
    r = train(cfg, qa_rows, tmp_path / "full")
    assert r.model_dir.endswith("model") and r.trainable_params == r.total_params
    assert r.final_train_loss < 0.3
    answers = generate_answers(r.model_dir, None, [q["question"] for q in qa_rows[:4]], max_new_tokens=32)
    assert answers == [q["answer"] for q in qa_rows[:4]]


def test_gemma_memorises_too(tiny_gemma, qa_rows, tmp_path):
    """Gemma 3 layout: embedding scaling, sliding-window layer, final-logit soft-capping."""
    r = train(config_for(base_model=tiny_gemma, epochs=40, **FAST), qa_rows, tmp_path / "g")
    assert r.final_train_loss < 0.4 < 4.0 < r.history[0]["loss"]
    answers = generate_answers(r.model_dir, tiny_gemma, [q["question"] for q in qa_rows], max_new_tokens=32)
    assert answers == [q["answer"] for q in qa_rows]


def test_judge_and_cpt_kinds_train(tiny_qwen, tiny_gemma, tmp_path):
    judge = [{"messages": [{"role": "system", "content": "Judge."},
                           {"role": "user", "content": q["question"] + " / " + q["answer"]},
                           {"role": "assistant", "content": "<think>ok</think>correct"}]} for q in QA]
    r = train(config_for(base_model=tiny_qwen, kind="judge_sft", epochs=15, **FAST), judge, tmp_path / "j")
    assert r.final_train_loss < 0.2 < r.history[0]["loss"]
    asked = [{"question": judge[k]["messages"][1]["content"], "system": "Judge."} for k in (0, 5)]
    assert generate_answers(r.model_dir, tiny_qwen, asked, 32) == ["<think>ok</think>correct"] * 2
    texts = [{"text": q["question"] + q["answer"]} for q in QA]
    r2 = train(config_for(base_model=tiny_gemma, kind="cpt", epochs=4, **FAST), texts, tmp_path / "c")
    assert r2.data["label_tokens"] == r2.data["tokens"]
    assert r2.final_train_loss < r2.history[0]["loss"] - 1.0


# --------------------------------------------------------------------------- resume / cancel
class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(tiny_qwen, qa_rows, tmp_path):
    """4 steps an epoch × 3 epochs; checkpoints every 3 steps and at epoch ends; the run
    'dies' at step 7 (after checkpoint 6) and the second call continues from step 6.
    LoRA dropout is on, so the RNG state must be restored too."""
    cfg = config_for(base_model=tiny_qwen, epochs=3, batch_size=2, grad_accum=1, learning_rate=5e-3,
                     lora_dropout=0.1, save_every_steps=3, log_every_steps=1)
    ref = train(cfg, qa_rows, tmp_path / "ref")

    def die_at_7(p: Progress):
        if p.step == 7:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, qa_rows, tmp_path / "run", on_progress=die_at_7)
    assert not (tmp_path / "run" / "adapter").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == \
        ["step-00000004", "step-00000006"]
    res = train(cfg, qa_rows, tmp_path / "run")
    assert res.resumed_from_step == 6 and res.steps == ref.steps == 12
    assert [h["step"] for h in res.history] == list(range(1, 13))
    assert [h["loss"] for h in res.history] == pytest.approx([h["loss"] for h in ref.history], rel=1e-5)
    a, b = _adapter_tensors(ref.model_dir), _adapter_tensors(res.model_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k
    # a different config in the same folder is refused rather than silently mixed
    with pytest.raises(ValueError, match="different run.*learning_rate"):
        train(cfg.replace(learning_rate=1e-3), qa_rows, tmp_path / "run")


def test_cancel_stops_within_a_step_keeps_a_checkpoint_and_resumes(tiny_qwen, qa_rows, tmp_path):
    cfg = config_for(base_model=tiny_qwen, epochs=2, batch_size=2, grad_accum=1, save_every_steps=0,
                     log_every_steps=1)
    calls = {"n": 0}

    def stop_after_3() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    r = train(cfg, qa_rows, tmp_path / "run", should_stop=stop_after_3)
    assert r.stopped_reason == "cancelled" and r.steps == 3 and r.model_dir is None
    assert (tmp_path / "run" / "checkpoints" / "step-00000003" / "state.json").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["stopped_reason"] == "cancelled"
    r2 = train(cfg, qa_rows, tmp_path / "run")
    assert r2.resumed_from_step == 3 and r2.steps == 8 and r2.stopped_reason == "completed"
    assert Path(r2.model_dir, "adapter_model.safetensors").is_file()


def test_validation_keep_best_and_early_stopping(tiny_qwen, qa_rows, tmp_path, monkeypatch):
    """Validation runs each epoch; with scripted val losses (3.0, 2.0, 2.5, 2.6) and
    patience 2, training stops after epoch 4 and keeps epoch 2's weights."""
    import torch

    from training_app.engine import sft

    scripted = iter([3.0, 2.0, 2.5, 2.6, 9.9])
    snapshots = {}
    real_eval = sft.evaluate_loss

    def fake_eval(model, examples, **kw):
        real_eval(model, examples, **kw)  # the real path runs too
        val = next(scripted)
        snapshots[val] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return val

    monkeypatch.setattr(sft, "evaluate_loss", fake_eval)
    vals: list[float] = []
    cfg = config_for(base_model=tiny_qwen, epochs=6, early_stopping_patience=2, **FAST)
    r = train(cfg, qa_rows[:6], tmp_path / "run", eval_rows=qa_rows[6:],
              on_progress=lambda p: p.val_loss is not None and vals.append(p.val_loss))
    assert r.stopped_reason == "early_stopping" and r.epochs_completed == 4
    assert [v["val_loss"] for v in r.val_history] == vals == [3.0, 2.0, 2.5, 2.6]
    assert r.best_val_loss == 2.0 and r.best_epoch == 2
    saved = _adapter_tensors(r.model_dir)
    best = snapshots[2.0]
    for name, t in best.items():
        key = name.replace(".default", "")
        assert torch.equal(saved[key], t), name


def test_real_validation_loss_is_reported(tiny_qwen, qa_rows, tmp_path):
    r = train(config_for(base_model=tiny_qwen, epochs=2, **FAST), qa_rows[:6], tmp_path / "v",
              eval_rows=qa_rows[6:])
    assert len(r.val_history) == 2 and all(v["val_loss"] > 0 for v in r.val_history)
    assert r.best_val_loss == min(v["val_loss"] for v in r.val_history)


# --------------------------------------------------------------------------- house rules
def test_engine_modules_do_not_import_django_or_torch_at_import_time():
    code = ("import sys; import training_app.engine.config, training_app.engine.data, "
            "training_app.engine.devices, training_app.engine.sft; "
            "bad = [m for m in ('django', 'torch', 'transformers', 'peft') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------- the real default
@pytest.mark.slow
def test_real_embedded_gemma_lora_steps(embedded_gemma, tmp_path_factory, qa_rows):
    """A few LoRA steps on the embedded Gemma 3 270M (imported from its GGUF, ~2 min on
    2 cores): the answer-only loss equals the model's own full-vocabulary loss, and it falls."""
    import torch
    from transformers import AutoModelForCausalLM

    from training_app.engine.data import collate, encode_rows
    from training_app.engine.sft import batch_loss_sum, load_tokenizer

    base = embedded_gemma
    tok = load_tokenizer(base)
    examples, _ = encode_rows("sft", qa_rows[:2], tok, 128)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    with torch.no_grad():
        ex = examples[0]
        own = float(model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss)
        mine = float(batch_loss_sum(model, collate([ex], packing=True, max_length=128, pad_id=0), "cpu"))
    assert mine / ex.n_targets == pytest.approx(own, rel=1e-4)
    del model

    cfg = config_for(base_model=str(base), epochs=3, batch_size=4, grad_accum=1, learning_rate=1e-3,
                     max_length=128, save_every_steps=0, warmup_ratio=0.0)
    r = train(cfg, qa_rows[:4], tmp_path_factory.mktemp("real-run"))
    assert r.steps == 3 and r.final_train_loss < r.history[0]["loss"]
    assert Path(r.model_dir, "adapter_model.safetensors").is_file()
