"""Embedding-model training configuration: one frozen dataclass with commented defaults.

Stored as JSON on the TrainingRun row and beside the artifacts (``embedding_config.json``,
and inside the saved model as part of ``vsm_embedding.json``), so every embedding model
version can say how it was trained. No heavy imports here: the Django side builds and
validates configs without torch.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

from training_app.engine.config import _check, check_field_types

OBJECTIVES = ("mnrl", "triplet", "cosent", "cosine", "tsdae", "augsbert")
SUPERVISED_OBJECTIVES = ("mnrl", "triplet", "cosent", "cosine", "augsbert")  # need rows
SCORED_OBJECTIVES = ("cosent", "cosine")                                   # need row scores
STRATEGIES = ("full", "bitfit", "prefix")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SILVER_SAMPLING = ("bm25", "random")

# Learning rates that suit each strategy (config_for fills them in unless one is given):
# full fine-tuning moves every weight and wants the usual small rate; BitFit (biases only)
# and prefix tuning (a few embedding rows only) move few parameters and need a much larger one.
STRATEGY_LEARNING_RATES: dict[str, float] = {"full": 2e-5, "bitfit": 1e-3, "prefix": 1e-3}


@dataclass(frozen=True)
class EmbeddingConfig:
    # --- what to train -------------------------------------------------------------
    base_model: str = ""              # a local sentence-transformers folder (modules.json) or a plain HF
                                      # encoder folder (config.json; mean pooling is added); the job
                                      # resolves "embedded:…" specs and hub ids to folders first
    objective: str = "mnrl"           # "mnrl": MultipleNegativesRankingLoss on (query, positive), in-batch
                                      #   negatives (the default; batches never hold the same text twice);
                                      # "triplet": the same loss with each row's hard negative(s) as extra
                                      #   columns (in-batch negatives AND the mined one; beats TripletLoss's
                                      #   single margin on retrieval); rows without negatives are dropped;
                                      # "cosent": CoSENTLoss on (query, positive, score) rows;
                                      # "cosine": CosineSimilarityLoss on (query, positive, score), score in [-1, 1];
                                      # "tsdae": unsupervised denoising auto-encoder on raw texts (no rows);
                                      # "augsbert": Augmented SBERT (cross-encoder teacher labels silver pairs)
    strategy: str = "full"            # "full": every weight trains;
                                      # "bitfit": only bias terms train (every parameter named *.bias, in the
                                      #   transformer and in any Dense head; LayerNorm weights stay frozen);
                                      # "prefix": only the input-embedding rows of prefix_tokens new tokens
                                      #   ([VSM_P0]…) train; they are prepended to queries and passages at
                                      #   training and, through the saved model's prompts, at inference
    prefix_tokens: int = 8            # strategy "prefix": how many new tokens
    # --- optimisation -----------------------------------------------------------------
    epochs: int = 1
    batch_size: int = 16              # rows per step; for MNRL larger = more in-batch negatives per query
    learning_rate: float = 2e-5       # full fine-tuning; bitfit / prefix want ~1e-3 (see config_for)
    warmup_ratio: float = 0.1         # share of all steps with a linear warm-up, then linear decay to 0
    weight_decay: float = 0.01        # AdamW decay on matrices (not biases / norms); 0 for "prefix", whose
                                      # single trainable matrix must not decay in its frozen rows
    max_grad_norm: float = 1.0        # gradient clipping; 0 turns it off
    max_seq_length: int = 256         # tokens per text (capped at the model's position limit)
    seed: int = 0                     # data order, dropout, new-token and head init all follow it
    hard_negatives: int = 1           # objective "triplet": negative columns per row (a row with fewer
                                      # negatives repeats its own); also gold negatives per row for augsbert
    tsdae_deletion: float = 0.6       # objective "tsdae": share of words (CJK: characters) deleted as noise
    # --- Augmented SBERT (objective "augsbert") ---------------------------------------
    cross_encoder_epochs: int = 1     # the teacher cross-encoder, trained from base_model on gold pairs
    cross_encoder_learning_rate: float = 2e-5  # the teacher is always fully fine-tuned
    silver_pairs: int = 2000          # (query, passage) pairs sampled for the teacher to label
    silver_sampling: str = "bm25"     # "bm25": each query's lexical neighbours among texts + positives
                                      # (topped up at random when too few share a term); "random"
    silver_positive: float = 0.85     # teacher score ≥ this → positive silver pair (label 1)
    silver_negative: float = 0.2      # teacher score ≤ this → negative silver pair (label 0); the middle is dropped
    # --- bookkeeping -----------------------------------------------------------------
    log_every_steps: int = 5          # on_progress every N steps (and at the last one); history keeps every step
    save_every_steps: int = 0         # checkpoint every N steps under out_dir/checkpoints (0: none while
                                      # training; a cancelled run always leaves one, to resume from)
    # --- hardware ---------------------------------------------------------------------
    device: str = "auto"              # "auto" (CUDA > MPS > CPU), "cpu", "cuda", "mps"
    precision: str = "auto"           # "auto" (bf16 on CUDA that supports it, else fp32), "fp32", "bf16", "fp16"

    # ---------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmbeddingConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EmbeddingConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "EmbeddingConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "EmbeddingConfig":
        return dataclasses.replace(self, **changes)


def config_for(**overrides: Any) -> EmbeddingConfig:
    """A validated config: defaults, then the learning rate that suits ``strategy``, then ``overrides``."""
    values: dict[str, Any] = {}
    strategy = overrides.get("strategy", "full")
    if strategy in STRATEGY_LEARNING_RATES:
        values["learning_rate"] = STRATEGY_LEARNING_RATES[strategy]
    values.update(overrides)
    known = {f.name for f in fields(EmbeddingConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown EmbeddingConfig field(s): {', '.join(unknown)}")
    return EmbeddingConfig(**values)


def validate(c: EmbeddingConfig) -> None:
    """Raise ValueError naming the first bad field (types first, then ranges)."""
    check_field_types(c)
    _check(c.objective in OBJECTIVES, "objective", f"must be one of {', '.join(OBJECTIVES)}, got {c.objective!r}")
    _check(c.strategy in STRATEGIES, "strategy", f"must be one of {', '.join(STRATEGIES)}, got {c.strategy!r}")
    _check(1 <= c.prefix_tokens <= 256, "prefix_tokens", "must be between 1 and 256")
    _check(1 <= c.epochs <= 1000, "epochs", "must be between 1 and 1000")
    _check(1 <= c.batch_size <= 65536, "batch_size", "must be between 1 and 65536")
    if c.objective == "mnrl":
        _check(c.batch_size >= 2, "batch_size", "must be at least 2 for mnrl: the other rows of a batch are "
               "its negatives")
    _check(0.0 < c.learning_rate <= 1.0, "learning_rate", f"must be in (0, 1], got {c.learning_rate}")
    _check(0.0 <= c.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
    _check(0.0 <= c.weight_decay < 1.0, "weight_decay", "must be in [0, 1)")
    _check(c.max_grad_norm >= 0.0, "max_grad_norm", "must be 0 (off) or positive")
    _check(8 <= c.max_seq_length <= 32768, "max_seq_length", "must be between 8 and 32768")
    if c.strategy == "prefix":
        _check(c.prefix_tokens < c.max_seq_length, "prefix_tokens", "must leave room in max_seq_length for the text")
    _check(c.seed >= 0, "seed", "must be 0 or positive")
    _check(1 <= c.hard_negatives <= 64, "hard_negatives", "must be between 1 and 64")
    _check(0.0 < c.tsdae_deletion < 1.0, "tsdae_deletion", "must be in (0, 1)")
    _check(1 <= c.cross_encoder_epochs <= 1000, "cross_encoder_epochs", "must be between 1 and 1000")
    _check(0.0 < c.cross_encoder_learning_rate <= 1.0, "cross_encoder_learning_rate", "must be in (0, 1]")
    _check(1 <= c.silver_pairs <= 10_000_000, "silver_pairs", "must be between 1 and 10,000,000")
    _check(c.silver_sampling in SILVER_SAMPLING, "silver_sampling",
           f"must be one of {', '.join(SILVER_SAMPLING)}, got {c.silver_sampling!r}")
    _check(0.0 <= c.silver_positive <= 1.0, "silver_positive", "must be in [0, 1] (a sigmoid score)")
    _check(0.0 <= c.silver_negative <= 1.0, "silver_negative", "must be in [0, 1] (a sigmoid score)")
    _check(c.silver_negative < c.silver_positive, "silver_negative", "must be below silver_positive")
    _check(c.log_every_steps >= 1, "log_every_steps", "must be at least 1")
    _check(c.save_every_steps >= 0, "save_every_steps", "must be 0 (none) or positive")
    _check(c.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}, got {c.device!r}")
    _check(c.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}, got {c.precision!r}")
