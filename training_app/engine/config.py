"""Training configuration: one frozen dataclass with commented defaults, plus presets.

The config is stored as JSON on the TrainingRun row and beside the artifacts
(``train_config.json``), so every model version can say exactly how it was trained.
No heavy imports here: the Django side builds and validates configs without torch.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

KINDS = ("sft", "cpt", "judge_sft", "grpo")
METHODS = ("lora", "full")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZATIONS = ("none", "4bit")


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train -------------------------------------------------------------
    kind: str = "sft"                 # "sft" (question→answer), "cpt" (raw text), "judge_sft" (messages),
                                      # "grpo" (entity extraction rewarded by JSON validity and entity F1)
    base_model: str = ""              # a local Hugging Face model folder (config.json + weights + tokenizer)
    method: str = "lora"              # "lora" (adapter only, the default) or "full" (all weights)
    # --- LoRA (defaults from the field: small r, alpha = 2r, light dropout) --------
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"  # peft's "all-linear" (every linear layer but the LM head) or "q_proj,v_proj,…"
    # --- optimisation -----------------------------------------------------------------
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 4               # sequences (examples) per micro-batch
    grad_accum: int = 4               # micro-batches per optimizer step (effective batch = batch_size × grad_accum)
    warmup_ratio: float = 0.1         # share of all steps with a linear warm-up, then linear decay to 0
    weight_decay: float = 0.01        # AdamW decay on matrices only (not on biases / norms)
    max_grad_norm: float = 1.0        # gradient clipping; 0 turns it off
    max_length: int = 512             # tokens per example; longer prompts are cut from the left
    seed: int = 0                     # model/adapter init, data order and dropout all follow it
    grounded: bool = False            # sft: each pair also in the chat's grounded prompt (its passage + another;
                                      # some with another passage only, answered "not covered"), RAFT-style
    mask_history: bool = False        # sft, multi-turn rows: train the last assistant turn only (default:
                                      # every assistant turn; system and user turns are never trained)
    # --- bookkeeping -----------------------------------------------------------------
    save_every_steps: int = 50        # checkpoint every N optimizer steps (0: only at epoch ends)
    log_every_steps: int = 5          # on_progress callback every N optimizer steps (and at the last one)
    keep_best: bool = True            # with eval rows: keep the weights of the epoch with the lowest val loss
    early_stopping_patience: int = 0  # with eval rows: stop after N epochs without val improvement (0: never)
    # --- hardware ---------------------------------------------------------------------
    device: str = "auto"              # "auto" (CUDA > MPS > CPU), "cpu", "cuda", "cuda:1", "mps"
    precision: str = "auto"           # "auto" (bf16 on CUDA that supports it, else fp32), "fp32", "bf16", "fp16"
    quantization: str = "none"        # "4bit" = QLoRA, used only when CUDA and bitsandbytes are present
    gradient_checkpointing: bool = False  # trade compute for activation memory on long sequences
    packing: bool = True              # pack a micro-batch's examples into few rows (no padding compute)
    # --- GRPO (kind "grpo" only; batch_size × grad_accum completions per optimizer step) --
    num_generations: int = 4          # completions sampled per prompt; rewards are compared within the group
    max_new_tokens: int = 64          # completion length cap (a CLUENER answer is ~15-40 Gemma tokens)
    grpo_beta: float = 0.0            # KL penalty toward the base (0: none, trl's default; no reference pass)
    grpo_temperature: float = 1.0     # sampling temperature of the completions (GRPO needs varied answers)
    entity_labels: str = ""           # "a,b,c": labels the model is asked for ("" = CLUENER's ten)
    # --- generation (used by evaluation and chat, stored with the model version) ------
    generation_temperature: float = 0.0  # 0 = greedy; creative domains sample warmer
    preset: str = ""                  # which preset the values came from ("" = plain defaults)

    # ---------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Presets by precision class. Values are overrides of the defaults above; users edit
# them per run. High-precision domains want a larger adapter, a gentler lr and more
# passes; creative domains keep the defaults and sample warmer at generation time.
PRESETS: dict[str, dict[str, Any]] = {
    "high_precision": {"lora_r": 16, "lora_alpha": 32, "learning_rate": 1e-4, "epochs": 6,
                       "generation_temperature": 0.0},
    "customer_service": {"lora_r": 10, "lora_alpha": 20, "learning_rate": 2e-4, "epochs": 4,
                         "generation_temperature": 0.3},
    "creative": {"generation_temperature": 0.9},
}


def config_for(preset: str = "", **overrides: Any) -> TrainConfig:
    """A validated config: defaults, then the preset's values, then ``overrides``."""
    if preset and preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS.get(preset, {}))
    values["preset"] = preset
    values.update(overrides)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
    return TrainConfig(**values)


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {message}")


def check_field_types(c: Any) -> None:
    """Every field of a config dataclass has the type of its default (numbers finite); ValueError names it."""
    for f in fields(c):
        value = getattr(c, f.name)
        default = f.default
        if isinstance(default, bool):
            _check(isinstance(value, bool), f.name, f"must be true or false, got {value!r}")
        elif isinstance(default, int):
            _check(isinstance(value, int) and not isinstance(value, bool), f.name,
                   f"must be an integer, got {value!r}")
        elif isinstance(default, float):
            _check(isinstance(value, (int, float)) and not isinstance(value, bool), f.name,
                   f"must be a number, got {value!r}")
            _check(value == value and abs(value) != float("inf"), f.name, f"must be finite, got {value!r}")
        elif isinstance(default, str):
            _check(isinstance(value, str), f.name, f"must be a string, got {value!r}")


def validate(c: TrainConfig) -> None:
    """Raise ValueError naming the first bad field (types first, then ranges)."""
    check_field_types(c)
    _check(c.kind in KINDS, "kind", f"must be one of {', '.join(KINDS)}, got {c.kind!r}")
    _check(c.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {c.method!r}")
    _check(c.lora_r >= 1, "lora_r", "must be at least 1")
    _check(c.lora_alpha >= 1, "lora_alpha", "must be at least 1")
    _check(0.0 <= c.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
    _check(bool(c.target_modules.strip()), "target_modules", "must not be empty")
    _check(0.0 < c.learning_rate <= 1.0, "learning_rate", f"must be in (0, 1], got {c.learning_rate}")
    _check(1 <= c.epochs <= 1000, "epochs", "must be between 1 and 1000")
    _check(1 <= c.batch_size <= 4096, "batch_size", "must be between 1 and 4096")
    _check(1 <= c.grad_accum <= 4096, "grad_accum", "must be between 1 and 4096")
    _check(0.0 <= c.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
    _check(0.0 <= c.weight_decay < 1.0, "weight_decay", "must be in [0, 1)")
    _check(c.max_grad_norm >= 0.0, "max_grad_norm", "must be 0 (off) or positive")
    _check(8 <= c.max_length <= 131072, "max_length", "must be between 8 and 131072")
    _check(c.seed >= 0, "seed", "must be 0 or positive")
    _check(c.save_every_steps >= 0, "save_every_steps", "must be 0 (epoch ends only) or positive")
    _check(c.log_every_steps >= 1, "log_every_steps", "must be at least 1")
    _check(c.early_stopping_patience >= 0, "early_stopping_patience", "must be 0 (off) or positive")
    _check(c.device.split(":")[0] in DEVICES, "device",
           f"must be one of {', '.join(DEVICES)} (or cuda:N), got {c.device!r}")
    if ":" in c.device:
        _check(c.device.startswith("cuda:") and c.device[5:].isdigit(), "device",
               f"only cuda takes an index (cuda:N), got {c.device!r}")
    _check(c.precision in PRECISIONS, "precision",
           f"must be one of {', '.join(PRECISIONS)}, got {c.precision!r}")
    _check(c.quantization in QUANTIZATIONS, "quantization",
           f"must be one of {', '.join(QUANTIZATIONS)}, got {c.quantization!r}")
    _check(not (c.quantization == "4bit" and c.method == "full"), "quantization",
           "4-bit (QLoRA) needs method 'lora'; full fine-tuning cannot train quantized weights")
    _check(0.0 <= c.generation_temperature <= 2.0, "generation_temperature", "must be in [0, 2]")
    _check(2 <= c.num_generations <= 64, "num_generations", "must be between 2 and 64 (GRPO compares a group)")
    _check(1 <= c.max_new_tokens <= 4096, "max_new_tokens", "must be between 1 and 4096")
    _check(0.0 <= c.grpo_beta <= 10.0, "grpo_beta", "must be in [0, 10]")
    _check(0.0 < c.grpo_temperature <= 2.0, "grpo_temperature", "must be in (0, 2]: GRPO samples")
    labels = [x.strip() for x in c.entity_labels.split(",")] if c.entity_labels.strip() else []
    _check(all(labels) and len(set(labels)) == len(labels), "entity_labels",
           "must be comma-separated, non-empty, distinct labels (or empty for CLUENER's ten)")
    if c.kind == "grpo":
        _check(c.method == "lora", "method", "GRPO trains a LoRA adapter; use method 'lora'")
        _check((c.batch_size * c.grad_accum) % c.num_generations == 0, "num_generations",
               f"must divide batch_size × grad_accum ({c.batch_size} × {c.grad_accum} completions per "
               f"step) so every step holds whole groups, got {c.num_generations}")
        _check(c.max_new_tokens < c.max_length, "max_new_tokens", "must be smaller than max_length "
               "(prompt and completion share it)")
    _check(c.preset == "" or c.preset in PRESETS, "preset", f"unknown preset {c.preset!r}")
