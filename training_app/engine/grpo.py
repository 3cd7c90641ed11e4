"""GRPO for entity extraction: trl's ``GRPOTrainer`` with a LoRA adapter.

``train_grpo(config, rows, out_dir) -> TrainResult`` (also reached through
``sft.train`` when ``config.kind == "grpo"``). Each row is an entity example
``{"text", "spans": [{"label", "start", "end", "mention"}, ...]}``; the model is asked
for the sentence's entities as JSON (``entities.entity_messages``), samples
``num_generations`` answers per sentence, and is rewarded by two functions:
``json_reward`` (a clean, valid object) and ``f1_reward`` (entity F1 against the
sentence's gold spans). GRPO compares the answers of one sentence with each other, so
a model that already writes the format (a short SFT warm-up, see
``bench/grpo_cluener.py``) learns from the F1 differences; a model that never writes
valid JSON gets all-zero groups and learns nothing.

Batching: ``batch_size`` completions per micro-batch, ``grad_accum`` micro-batches per
optimizer step, so one step samples ``batch_size × grad_accum / num_generations``
sentences (``validate`` insists it divides). trl drops the sentences that do not fill a
last whole step of an epoch.

Checkpoints are the Trainer's own (``out_dir/checkpoints/checkpoint-N``: adapter,
optimizer, scheduler, RNG, trainer state incl. the log history) every
``save_every_steps`` steps and at the end; a second call on the same ``out_dir``
resumes from the last complete one. Cancelling (``should_stop``) finishes the current
step, checkpoints it and returns ``stopped_reason="cancelled"`` with no adapter.

No Django here; torch / transformers / trl / peft are imported inside functions.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import TrainConfig
from .entities import CLUENER_LABELS, corpus_f1, entity_messages, extract_entities, f1_reward, \
    gold_from_spans, json_reward, parse_entities
from .sft import Progress, TrainResult, _atomic_dir, _commit_dir, _config_differences, _load_model, \
    _write_json, check_base_model, load_tokenizer

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
RUN_CONFIG = "vsm_train_config.json"  # written into each checkpoint once it is complete


def entity_labels(config: TrainConfig) -> tuple[str, ...]:
    """The labels a run asks for: ``config.entity_labels`` or CLUENER's ten."""
    if config.entity_labels.strip():
        return tuple(x.strip() for x in config.entity_labels.split(","))
    return CLUENER_LABELS


def _check_rows(rows: Sequence[Any], what: str) -> None:
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping) or not isinstance(r.get("text"), str):
            raise ValueError(f"{what} row {i}: grpo rows need a 'text' string and a 'spans' list")
        spans = r.get("spans") or []
        if not isinstance(spans, list):
            raise ValueError(f"{what} row {i}: 'spans' must be a list")
        for s in spans:
            if not isinstance(s, Mapping) or not isinstance(s.get("label"), str) or not isinstance(
                    s.get("mention"), str):
                raise ValueError(f"{what} row {i}: a span needs 'label' and 'mention' strings, got {s!r}")


def latest_trainer_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint whose save finished (our config file is written after the Trainer's)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if CHECKPOINT_RE.match(p.name) and (p / RUN_CONFIG).is_file()
            and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1))) if done else None


def _history_entry(log: Mapping[str, Any]) -> dict[str, Any]:
    """One optimizer step's record from the Trainer's log (trl adds the reward metrics)."""
    keep = {"step": "step", "epoch": "epoch", "loss": "loss", "learning_rate": "learning_rate",
            "tokens_per_s": "tokens_per_s", "reward": "reward", "reward_std": "reward_std",
            "rewards/json_reward/mean": "json_reward", "rewards/f1_reward/mean": "f1_reward",
            "completions/mean_length": "completion_length", "step_time": "step_s"}
    out = {}
    for src, dst in keep.items():
        v = log.get(src)
        if v is not None:
            out[dst] = round(v, 6) if isinstance(v, float) else v
    return out


def _make_callback(*, config: TrainConfig, on_progress, should_stop, t_session: dict[str, Any]):
    from transformers import TrainerCallback

    class VSMProgress(TrainerCallback):
        """Progress reports, cancellation, and a complete-marker in every checkpoint."""

        def __init__(self) -> None:
            self.cancelled = False

        def on_train_begin(self, args, state, control, **kw):
            t_session.update(t0=time.time(), tokens0=state.num_input_tokens_seen, step0=state.global_step)

        def on_step_end(self, args, state, control, **kw):
            if should_stop is not None and should_stop():
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = True  # keep the step just done
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:
                return control
            elapsed = max(time.time() - t_session["t0"], 1e-9)
            tps = (state.num_input_tokens_seen - t_session["tokens0"]) / elapsed
            # The Trainer appended this step's log just before calling us: enrich it in place so
            # the throughput is kept in the checkpoints' log history too.
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1]["tokens_per_s"] = round(tps, 2)
            step, total = state.global_step, state.max_steps
            if on_progress is not None and (step % config.log_every_steps == 0 or step == total):
                done = max(step - t_session["step0"], 1)
                eta = (total - step) * elapsed / done
                on_progress(Progress(step, total, float(state.epoch or 0.0), float(logs["loss"]),
                                     float(logs.get("learning_rate") or 0.0), tps, eta))
            return control

        def on_save(self, args, state, control, **kw):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                _write_json(ckpt / RUN_CONFIG, config.to_dict())
            return control

    return VSMProgress()


def evaluate_f1(model, tokenizer, rows: Sequence[Mapping[str, Any]], labels: Sequence[str] = CLUENER_LABELS, *,
                max_new_tokens: int = 64, batch_size: int = 8) -> dict[str, Any]:
    """Greedy entity F1 (micro) and the valid-JSON rate of ``model`` on entity rows."""
    texts = [str(r["text"]) for r in rows]
    answers = extract_entities(model, tokenizer, texts, labels, max_new_tokens=max_new_tokens,
                               batch_size=batch_size)
    preds = [parse_entities(a) for a in answers]
    golds = [gold_from_spans(r.get("spans") or (), labels) for r in rows]
    scores = corpus_f1(preds, golds)
    scores["valid_json"] = sum(p is not None for p in preds) / max(len(preds), 1)
    scores["n"] = len(rows)
    return {**scores, "answers": answers}


def train_grpo(config: TrainConfig, rows: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike, *,
               eval_rows: Iterable[Mapping[str, Any]] = (),
               on_progress: Callable[[Progress], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """GRPO-train a LoRA adapter on ``config.base_model`` for entity extraction.

    With ``eval_rows``, the finished adapter's greedy entity F1 on them is measured and
    recorded in ``val_history`` (one entry: precision, recall, f1, valid_json).
    """
    if config.kind != "grpo":
        raise ValueError(f"kind: train_grpo trains kind 'grpo', got {config.kind!r}")
    base_path = check_base_model(config.base_model)
    rows = list(rows)
    eval_rows = list(eval_rows)
    if not rows:
        raise ValueError("no training rows")
    _check_rows(rows, "training")
    _check_rows(eval_rows, "validation")

    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from .data import has_chat_template, plain_prompt_text, prompt_ids, stop_token_ids
    from .devices import plan_devices

    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_devices(config.device, config.precision, config.quantization, config.method)
    notes = list(plan.notes)
    labels = entity_labels(config)
    tokenizer = load_tokenizer(base_path)
    chat = has_chat_template(tokenizer)

    # Prompts: the chat messages (trl renders them with the template, as data.prompt_ids does)
    # or, without a template, the plain "Question: …\nAnswer:" text. Prompts too long to leave
    # room for a whole completion within max_length are dropped (trl does not truncate).
    records, dropped = [], 0
    for r in rows:
        msgs = entity_messages(r["text"], labels)
        if len(prompt_ids(tokenizer, msgs)) + config.max_new_tokens > config.max_length:
            dropped += 1
            continue
        records.append({"prompt": msgs if chat else plain_prompt_text(msgs),
                        "gold": json.dumps(gold_from_spans(r.get("spans") or (), labels), ensure_ascii=False)})
    per_step = config.batch_size * config.grad_accum // config.num_generations
    if len(records) < per_step:
        raise ValueError(f"{len(records)} usable row(s) ({dropped} too long for max_length={config.max_length}); "
                         f"one GRPO step needs {per_step} (batch_size × grad_accum / num_generations)")
    steps_per_epoch = len(records) // per_step
    if len(records) % per_step:
        notes.append(f"{len(records) % per_step} row(s) per epoch do not fill a whole step and are skipped")

    model = _load_model(base_path, plan)
    stops = stop_token_ids(tokenizer)
    if stops:  # completions end on any end-of-turn token, in generation and in trl's masking
        model.generation_config.eos_token_id = stops
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules if config.target_modules == "all-linear" else
                      [t.strip() for t in config.target_modules.split(",") if t.strip()],
                      bias="none", task_type="CAUSAL_LM")

    ckpt = latest_trainer_checkpoint(out)
    if ckpt is not None:
        saved = json.loads((ckpt / RUN_CONFIG).read_text(encoding="utf-8"))
        diff = _config_differences(saved, config.to_dict())
        if diff:
            raise ValueError(f"{str(out)!r} holds a checkpoint of a different run (fields differ: "
                             f"{', '.join(diff)}); use a new output folder")
        notes.append(f"resumed from checkpoint {ckpt.name}")
    _write_json(out / "train_config.json", config.to_dict())

    args = GRPOConfig(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio,  # < 1: a share of all steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device == "cpu",
        gradient_checkpointing=config.gradient_checkpointing,
        num_generations=config.num_generations,
        max_completion_length=config.max_new_tokens,
        temperature=config.grpo_temperature,
        beta=config.grpo_beta,
        logging_steps=1,
        save_strategy="steps" if config.save_every_steps else "epoch",
        save_steps=config.save_every_steps or 500,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    session: dict[str, Any] = {"t0": time.time(), "tokens0": 0, "step0": 0}
    callback = _make_callback(config=config, on_progress=on_progress, should_stop=should_stop, t_session=session)
    trainer = GRPOTrainer(model=model, reward_funcs=[json_reward, f1_reward], args=args,
                          train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                          callbacks=[callback], peft_config=lora)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes through on_progress, not stdout
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in trainer.model.parameters())
    resumed_from = 0
    if ckpt is not None:
        resumed_from = int(json.loads((ckpt / "trainer_state.json").read_text())["global_step"])

    stopped = ""
    if should_stop is not None and should_stop():
        stopped = "cancelled"  # asked to stop before the first step: train nothing
        if ckpt is not None:  # report where the kept checkpoint stands
            from transformers import TrainerState

            trainer.state = TrainerState.load_from_json(str(ckpt / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
        if callback.cancelled:
            stopped = "cancelled"
    state = trainer.state

    history = [_history_entry(h) for h in state.log_history if "loss" in h and "step" in h]
    val_history: list[dict[str, Any]] = []
    model_dir: Path | None = None
    if stopped != "cancelled":
        peft_model = trainer.model
        if eval_rows:
            scores = evaluate_f1(peft_model, tokenizer, eval_rows, labels, max_new_tokens=config.max_new_tokens,
                                 batch_size=config.batch_size)
            val_history.append({"epoch": round(float(state.epoch or 0.0), 4), "step": state.global_step,
                                **{k: scores[k] for k in ("precision", "recall", "f1", "valid_json", "n")}})
        model_dir = out / "adapter"
        tmp = _atomic_dir(model_dir)
        peft_model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _write_json(tmp / "train_config.json", config.to_dict())
        _commit_dir(tmp, model_dir)
        if not history and resumed_from:
            notes.append("the checkpoint was already at the last step; nothing left to train")
    # trl writes a model card into the checkpoints folder; it is not an artifact of ours.
    card = out / "checkpoints" / "README.md"
    if card.is_file():
        card.unlink()
    shutil.rmtree(out / "checkpoints" / "completions", ignore_errors=True)

    total_steps = int(state.max_steps or steps_per_epoch * config.epochs)
    result = TrainResult(
        output_dir=str(out), model_dir=str(model_dir) if model_dir else None, steps=int(state.global_step),
        total_steps=total_steps, epochs_completed=int(math.floor((state.epoch or 0.0) + 1e-9)),
        final_train_loss=history[-1]["loss"] if history else None, best_val_loss=None, best_epoch=None,
        history=history, val_history=val_history, resumed_from_step=resumed_from,
        stopped_reason=stopped or "completed", rows_truncated=0, rows_dropped=dropped, device=plan.device,
        precision=plan.precision, quantization=plan.quantization, method=config.method,
        trainable_params=n_trainable, total_params=n_total, tokens_seen=int(state.num_input_tokens_seen or 0),
        elapsed_s=round(time.time() - t_start, 3),
        data={"rows": len(rows), "prompts": len(records), "prompts_per_step": per_step,
              "steps_per_epoch": steps_per_epoch, "labels": list(labels), "template": "chat" if chat else "plain",
              "final_reward": history[-1].get("reward") if history else None},
        notes=notes)
    _write_json(out / "metrics.json", result.to_dict())
    return result
