"""Embedding-model training: fine-tune a sentence-transformers bi-encoder for one domain.

``train_embedding(config, rows, out_dir) -> EmbeddingResult`` does one run end to end with
sentence-transformers' own trainer and losses (see ``EmbeddingConfig`` for the objectives
and strategies). What it adds around the library:

- **Inputs checked first**, with errors that name the row / field / folder.
- **Strategies**: ``bitfit`` trains only ``*.bias`` parameters; ``prefix`` adds
  ``prefix_tokens`` new tokens (``[VSM_P0]`` …) and trains only their input-embedding rows
  (a gradient mask on the embedding matrix, weight decay 0), so every other tensor and every
  other row stays bit-identical to the base. The prefix is prepended to every query and
  passage during training and stored in the saved model's ``prompts`` with
  ``default_prompt_name``: a plain ``SentenceTransformer(model_dir).encode(...)`` (and
  ``encode_query`` / ``encode_document``) applies it by itself; ``encode(..., prompt="")``
  is the only way to bypass it.
- **Publishing**: the final model goes to ``out_dir/model`` through a temp folder + rename,
  with ``vsm_embedding.json`` (objective, strategy, prefix, config) inside it;
  ``out_dir/embedding_config.json`` is written before training and ``out_dir/metrics.json``
  after. ``out_dir/model`` only ever holds a finished model.
- **Cancel and resume**: ``should_stop()`` is polled after every step. A cancelled run
  publishes nothing: it writes a checkpoint under ``out_dir/checkpoints`` (the trainer's
  weights + optimizer + scheduler + RNG + data position) and returns ``model_dir=None``.
  Calling ``train_embedding`` again with the same config and ``out_dir`` resumes from the
  latest checkpoint and ends where an uninterrupted run would. A finished run deletes its
  checkpoints; calling again on a finished ``out_dir`` returns the stored result without
  training (a re-delivered job), and another config on an ``out_dir`` that holds a checkpoint
  or a model is a ValueError (one folder, one run). TSDAE is the exception to resuming: its
  decoder lives in the loss and is not checkpointed, so a TSDAE run restarts from step 0.
- **No training rows in the saved README**: sentence-transformers' model-card callback would
  copy training pairs into the card as examples; it is removed and no card is written.
- **Determinism**: the same seed gives the same weights on CPU (data order, dropout, new
  token rows, the TSDAE decoder's and cross-encoder's new heads all follow it).

Augmented SBERT (``augsbert``): (1) a cross-encoder is trained from the same base folder
(num_labels=1, BinaryCrossEntropyLoss) on gold pairs: each row's positive (label 1) and its
negatives, or one other row's positive when it has none (label 0); it is saved to
``out_dir/cross_encoder`` (a domain reranker the retrieval side may use). (2) Silver
(query, passage) pairs are sampled from the rows' queries × (``texts`` + positives), gold
pairs excluded: BM25 neighbours by default (random sampling mostly finds easy negatives),
topped up at random. (3) The teacher scores them (sigmoid); ≥ ``silver_positive`` becomes a
positive (label 1), ≤ ``silver_negative`` a negative (label 0), the middle is dropped.
(4) The bi-encoder trains with CosineSimilarityLoss on gold + silver pairs with those 1 / 0
labels (the paper's recipe for binary tasks; it uses the silver negatives, which MNRL could
not). The labelled silver set is cached in ``out_dir/silver.json`` so a resumed run skips
the teacher.

TSDAE: sentence-transformers 6.x still ships ``DenoisingAutoEncoderLoss``; it builds its
decoder with ``AutoModelForCausalLM.from_pretrained`` from the encoder's own folder (tied
weights, ``is_decoder`` + cross-attention), which works offline for a local folder. Its old
``DenoisingAutoEncoderDataset`` is deprecated (and needs nltk), so the deletion noise is
made here: words (CJK: single characters) are dropped at ``tsdae_deletion``; each epoch gets
fresh, seeded noise. With strategy ``prefix`` the loss resizes the decoder to the new vocabulary
and ties the encoder to it, so the prefix rows start from the decoder's resize init; the
gradient mask is attached after the tie and still holds every other row fixed.

No Django here; torch / transformers / sentence-transformers are imported inside functions.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .base_models import BaseModelError
from .embedding_config import (DEVICES, OBJECTIVES, SCORED_OBJECTIVES, STRATEGIES,  # noqa: F401 (re-exported)
                               STRATEGY_LEARNING_RATES, SUPERVISED_OBJECTIVES, EmbeddingConfig, config_for)

PREFIX_TOKEN = "[VSM_P{}]"
PREFIX_PROMPT_NAME = "vsm_prefix"
META_FILE = "vsm_embedding.json"
CONFIG_FILE = "embedding_config.json"
SILVER_FILE = "silver.json"
# Config fields that may differ between a run and its resumption: hardware, logging, and the base
# folder's path (workers resolve the run's one base spec to folders that may sit elsewhere).
RESUMABLE_DIFFERENCES = {"device", "precision", "log_every_steps", "save_every_steps", "base_model"}
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_NOISE_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_BM25_TERM = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")


@dataclass
class EmbeddingProgress:
    step: int
    total_steps: int
    epoch: float                  # fractional: 1.5 = half-way through the second epoch
    loss: float                   # loss of the last step
    learning_rate: float
    phase: str = "train"          # "train" (the bi-encoder); augsbert first reports "cross_encoder"
    eta_s: float = 0.0


@dataclass
class EmbeddingResult:
    model_dir: Path | None        # out_dir/model, a sentence-transformers folder; None when cancelled
    objective: str
    strategy: str
    steps: int
    history: list[dict[str, Any]]  # per step: step, epoch, loss, learning_rate
    final_loss: float | None
    elapsed_s: float
    stopped_reason: str           # "completed" | "cancelled"
    silver: dict[str, Any] | None = None  # augsbert: sampled, positive, negative, dropped (+ gold, teacher)
    trained_parameters: int = 0   # parameters that train (prefix: only the prefix rows)
    total_parameters: int = 0
    total_steps: int = 0
    resumed_from_step: int = 0
    checkpoint_dir: Path | None = None  # cancelled: the checkpoint a re-run resumes from
    rows_used: int = 0            # training examples after validation (triplet drops rows without negatives)
    rows_dropped: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("model_dir", "checkpoint_dir"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


# --------------------------------------------------------------------------- inputs
def check_embedding_base(path: str | os.PathLike) -> Path:
    """Fail fast, naming the path, before any model is loaded."""
    if not str(path):
        raise BaseModelError("base_model is empty: give the folder of a sentence-transformers or HF encoder model")
    p = Path(path)
    if not p.exists():
        raise BaseModelError(f"base model folder {str(p)!r} does not exist")
    if not p.is_dir():
        raise BaseModelError(f"base model {str(p)!r} is not a folder")
    if not (p / "modules.json").is_file() and not (p / "config.json").is_file():
        raise BaseModelError(f"{str(p)!r} is not a model folder: neither modules.json (sentence-transformers) "
                             "nor config.json (Hugging Face) is there")
    return p


def _clean_rows(config: EmbeddingConfig, rows: Sequence[dict], texts: Sequence[str]) -> list[dict]:
    """Validate rows/texts for the objective; return normalised row dicts."""
    obj = config.objective
    if obj in SUPERVISED_OBJECTIVES and not rows:
        raise ValueError(f"rows: objective {obj!r} needs training rows (query, positive), got none")
    if obj == "tsdae" and not any(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("texts: objective 'tsdae' trains on raw texts, got none")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}]: must be a string, got {type(t).__name__}")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"rows[{i}]: must be a dict, got {type(r).__name__}")
        for key in ("query", "positive"):
            v = r.get(key)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"rows[{i}].{key}: must be a non-empty string, got {v!r}")
        negs = r.get("negatives") or []
        if not isinstance(negs, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in negs):
            raise ValueError(f"rows[{i}].negatives: must be a list of non-empty strings")
        score = r.get("score")
        if obj in SCORED_OBJECTIVES:
            if score is None:
                raise ValueError(f"rows[{i}].score: objective {obj!r} trains on scored pairs; this row has no score")
            if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
                raise ValueError(f"rows[{i}].score: must be a finite number, got {score!r}")
            if obj == "cosine" and not -1.0 <= score <= 1.0:
                raise ValueError(f"rows[{i}].score: objective 'cosine' regresses the cosine, so the score must be "
                                 f"in [-1, 1], got {score}")
        out.append({"query": r["query"], "positive": r["positive"], "negatives": list(negs),
                    "score": None if score is None else float(score)})
    return out


# --------------------------------------------------------------------------- data
def _noise(text: str, ratio: float, rng: random.Random) -> str:
    """TSDAE deletion noise: drop words (CJK: characters) with probability ``ratio``, keep ≥ 1."""
    toks = _NOISE_TOKEN.findall(text)
    if not toks:
        return text
    kept = [t for t in toks if rng.random() >= ratio] or [toks[rng.randrange(len(toks))]]
    out = kept[0]
    for prev, tok in zip(kept, kept[1:]):
        cjk = re.fullmatch(rf"[{_CJK}]", prev) and re.fullmatch(rf"[{_CJK}]", tok)
        out += tok if cjk else " " + tok
    return out


def _triplet_columns(rows: list[dict], k: int) -> tuple[dict[str, list[str]], int]:
    usable = [r for r in rows if r["negatives"]]
    cols: dict[str, list[str]] = {"anchor": [r["query"] for r in usable], "positive": [r["positive"] for r in usable]}
    for j in range(k):
        cols[f"negative_{j + 1}"] = [r["negatives"][j % len(r["negatives"])] for r in usable]
    return cols, len(rows) - len(usable)


def _columns(config: EmbeddingConfig, rows: list[dict], texts: Sequence[str]) -> tuple[dict[str, list], int]:
    """Dataset columns for the objective (first column = queries, the rest = passages) + rows dropped."""
    obj = config.objective
    if obj == "mnrl":
        return {"anchor": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]}, 0
    if obj == "triplet":
        cols, dropped = _triplet_columns(rows, config.hard_negatives)
        if not cols["anchor"]:
            raise ValueError("rows: objective 'triplet' needs rows with hard negatives; none of the "
                             f"{len(rows)} rows has any (use 'mnrl' or mine negatives first)")
        return cols, dropped
    if obj in SCORED_OBJECTIVES:
        return {"sentence1": [r["query"] for r in rows], "sentence2": [r["positive"] for r in rows],
                "label": [r["score"] for r in rows]}, 0
    if obj == "tsdae":
        clean = [t for t in texts if t.strip()]
        rng = random.Random(config.seed)
        noisy, target = [], []
        for _ in range(config.epochs):  # fresh noise each epoch, all drawn up front (seeded, resumable)
            for t in clean:
                noisy.append(_noise(t, config.tsdae_deletion, rng))
                target.append(t)
        return {"noisy": noisy, "text": target}, 0
    raise AssertionError(obj)


def _terms(text: str) -> list[str]:
    """BM25 terms: lower-cased words; CJK runs as character bigrams (single characters when alone)."""
    out: list[str] = []
    for run in _BM25_TERM.findall(text.lower()):
        if re.match(rf"[{_CJK}]", run):
            out.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
        else:
            out.append(run)
    return out


def _bm25_ranker(passages: list[str], k1: float = 1.5, b: float = 0.75) -> Callable[[str], list[tuple[float, int]]]:
    docs = [_terms(p) for p in passages]
    n = len(docs)
    avg = sum(len(d) for d in docs) / max(n, 1) or 1.0
    postings: dict[str, list[tuple[int, int]]] = {}
    for i, d in enumerate(docs):
        tf: dict[str, int] = {}
        for t in d:
            tf[t] = tf.get(t, 0) + 1
        for t, c in tf.items():
            postings.setdefault(t, []).append((i, c))
    idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in postings.items()}

    def rank(query: str) -> list[tuple[float, int]]:
        scores: dict[int, float] = {}
        for t in set(_terms(query)):
            for i, c in postings.get(t, ()):
                norm = c + k1 * (1 - b + b * len(docs[i]) / avg)
                scores[i] = scores.get(i, 0.0) + idf[t] * c * (k1 + 1) / norm
        return sorted(((s, i) for i, s in scores.items() if s > 0), key=lambda x: (-x[0], x[1]))

    return rank


def sample_silver_pairs(queries: list[str], gold: dict[str, set[str]], passages: list[str], n_pairs: int,
                        method: str, seed: int) -> list[tuple[str, str]]:
    """Up to ``n_pairs`` distinct (query, passage) pairs, never a gold pair, spread evenly over queries."""
    rng = random.Random(seed)
    order = list(range(len(queries)))
    rng.shuffle(order)
    base, extra = divmod(n_pairs, max(len(queries), 1))
    rank = _bm25_ranker(passages) if method == "bm25" else None
    index: dict[str, list[int]] = {}
    for i, p in enumerate(passages):
        index.setdefault(p, []).append(i)
    n = len(passages)
    pairs: list[tuple[str, str]] = []
    for pos, qi in enumerate(order):
        q = queries[qi]
        want = base + (1 if pos < extra else 0)
        if want <= 0:
            continue
        blocked = {i for p in gold.get(q, ()) for i in index.get(p, ())}
        chosen = [i for _, i in rank(q) if i not in blocked][:want] if rank is not None else []
        taken = blocked | set(chosen)
        need = want - len(chosen)
        if need > 0 and n - len(taken) <= 2 * need:  # dense: draw from what is left
            rest = [i for i in range(n) if i not in taken]
            chosen += rng.sample(rest, min(need, len(rest)))
        else:
            while need > 0:  # sparse: rejection sampling, no O(passages) list per query
                i = rng.randrange(n)
                if i not in taken:
                    taken.add(i)
                    chosen.append(i)
                    need -= 1
        pairs.extend((q, passages[i]) for i in chosen)
    return pairs


# --------------------------------------------------------------------------- model
def _load_st(path: Path, device: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(f"could not load a sentence-transformers model from {str(path)!r}: {exc}") from exc


def _hf_model(model):
    hf = model.transformers_model
    if hf is None:
        raise BaseModelError("this embedding model has no transformers backbone (static embeddings?): "
                             "only transformer encoders can be fine-tuned here")
    return hf


def prefix_text(n_tokens: int) -> str:
    return "".join(PREFIX_TOKEN.format(i) for i in range(n_tokens))


def _add_prefix_tokens(model, n_tokens: int, seed: int) -> list[int]:
    """Add the prefix tokens (new rows initialised from random vocabulary rows) and return their ids."""
    import torch

    tok = model.tokenizer
    names = [PREFIX_TOKEN.format(i) for i in range(n_tokens)]
    old = len(tok)
    tok.add_tokens(names, special_tokens=True)
    ids = tok.convert_tokens_to_ids(names)
    hf = _hf_model(model)
    emb = hf.get_input_embeddings()
    if len(tok) > emb.weight.shape[0]:
        hf.resize_token_embeddings(len(tok), mean_resizing=False)
        emb = hf.get_input_embeddings()
        g = torch.Generator().manual_seed(seed)
        src = torch.randint(0, old, (len(ids),), generator=g)
        with torch.no_grad():
            emb.weight[ids] = emb.weight[src].clone()
    return ids


def _apply_prefix_prompts(model, prefix: str) -> None:
    """Prepend the prefix to every prompt the model has, and make it the default for plain encode()."""
    for name, text in list(model.prompts.items()):
        if not (text or "").startswith(prefix):
            model.prompts[name] = prefix + (text or "")
    model.prompts[PREFIX_PROMPT_NAME] = prefix
    if model.default_prompt_name is None:
        model.default_prompt_name = PREFIX_PROMPT_NAME


def _apply_strategy(model, config: EmbeddingConfig, prefix_ids: list[int]) -> int:
    """Set requires_grad per strategy; return how many parameters effectively train."""
    import torch

    params = list(model.named_parameters())
    if config.strategy == "full":
        for _, p in params:
            p.requires_grad_(True)
        return sum(p.numel() for _, p in params)
    for _, p in params:
        p.requires_grad_(False)
    if config.strategy == "bitfit":
        n = 0
        for name, p in params:
            if name.endswith(".bias"):
                p.requires_grad_(True)
                n += p.numel()
        if n == 0:
            raise BaseModelError("strategy 'bitfit': this model has no bias terms to train")
        return n
    # prefix: only the new rows of the input embeddings get a gradient
    weight = _hf_model(model).get_input_embeddings().weight
    weight.requires_grad_(True)
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[prefix_ids] = 1.0
    weight.register_hook(lambda g: g * mask.to(g.device, g.dtype))
    return len(prefix_ids) * weight.shape[1]


def _column_prompts(model, columns: list[str], objective: str) -> dict[str, str] | None:
    """The model's own query / document prompts (and the prefix) per column, as inference applies them."""
    q = model.prompts.get("query") or ""
    d = model.prompts.get("document") or ""
    if objective == "tsdae":
        prompts = {"noisy": d}  # the decoder reconstructs the plain text
    else:
        prompts = {c: (q if i == 0 else d) for i, c in enumerate(c for c in columns if c != "label")}
    prompts = {k: v for k, v in prompts.items() if v}
    return prompts or None


def _make_loss(model, objective: str):
    from sentence_transformers.sentence_transformer import losses

    if objective in ("mnrl", "triplet"):
        return losses.MultipleNegativesRankingLoss(model)
    if objective == "cosent":
        return losses.CoSENTLoss(model)
    if objective in ("cosine", "augsbert"):
        return losses.CosineSimilarityLoss(model)
    if objective == "tsdae":
        try:
            return losses.DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
        except (OSError, ValueError) as exc:
            raise BaseModelError(f"TSDAE needs a decoder built from the encoder's own folder "
                                 f"({_hf_model(model).config._name_or_path!r}): {exc}") from exc
    raise AssertionError(objective)


# --------------------------------------------------------------------------- files
def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _publish(tmp: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fresh_tmp(final: Path) -> Path:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
            and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None


def _config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = set(saved) | set(now)
    return sorted(k for k in keys if k not in RESUMABLE_DIFFERENCES and saved.get(k) != now.get(k))


def _finished_run(out: Path, config: EmbeddingConfig) -> EmbeddingResult | None:
    """The stored result when ``out`` already holds this run's published model (a re-delivered job
    does not train twice); a published model of another config is an error, never overwritten."""
    meta_file, metrics_file = out / "model" / META_FILE, out / "metrics.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    diff = _config_differences(meta.get("config", {}), config.to_dict())
    if diff:
        raise ValueError(f"{str(out)!r} already holds a model trained with another config (fields differ: "
                         f"{', '.join(diff)}); use a new output folder")
    if not metrics_file.is_file():
        return None
    data = json.loads(metrics_file.read_text(encoding="utf-8"))
    if data.get("stopped_reason") != "completed":
        return None
    known = {f for f in EmbeddingResult.__dataclass_fields__}
    data = {k: v for k, v in data.items() if k in known}
    for k in ("model_dir", "checkpoint_dir"):
        data[k] = Path(data[k]) if data.get(k) else None
    result = EmbeddingResult(**data)
    result.notes = list(result.notes) + ["already trained: returned the published model"]
    return result


# --------------------------------------------------------------------------- trainer plumbing
def _callback(phase: str, config: EmbeddingConfig, on_progress, should_stop, flags: dict[str, Any],
              epoch_scale: float = 1.0):
    from transformers import TrainerCallback

    class _Hook(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            flags["t0"], flags["step0"] = time.time(), state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            if should_stop is not None and should_stop():
                flags["cancelled"] = True
                control.should_training_stop = True
                control.should_save = True  # leave a checkpoint to resume from
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            step = state.global_step
            if on_progress is not None and (step % config.log_every_steps == 0 or step >= state.max_steps
                                            or flags.get("cancelled")):
                done = max(step - flags.get("step0", 0), 1)
                eta = (state.max_steps - step) * (time.time() - flags.get("t0", time.time())) / done
                on_progress(EmbeddingProgress(step, state.max_steps, round((state.epoch or 0.0) * epoch_scale, 4),
                                              float(logs["loss"]), float(logs.get("learning_rate", 0.0)),
                                              phase, round(max(eta, 0.0), 2)))

    return _Hook()


def _trainer_args(args_cls, config: EmbeddingConfig, output_dir: Path, plan, *, epochs: int, learning_rate: float,
                  weight_decay: float, save_steps: int, **extra):
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=config.batch_size,
        learning_rate=learning_rate, warmup_steps=config.warmup_ratio, weight_decay=weight_decay,
        max_grad_norm=config.max_grad_norm, lr_scheduler_type="linear", logging_strategy="steps",
        logging_steps=1, save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        save_total_limit=1, report_to="none", disable_tqdm=True, seed=config.seed, data_seed=config.seed,
        use_cpu=plan.device == "cpu", bf16=plan.precision == "bf16", fp16=plan.precision == "fp16",
        dataloader_num_workers=0, eval_strategy="no")
    kwargs.update(extra)
    return args_cls(**kwargs)


def _quiet(trainer) -> None:
    """No log printing or progress bars in a worker; and no model-card tracking, which would copy
    training rows (the domain's own questions and passages) into the saved README as examples."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback, trainer.model_card_callback_class):
        trainer.remove_callback(cb)


def _history(log_history: list[dict[str, Any]], epoch_scale: float = 1.0) -> list[dict[str, Any]]:
    out = []
    for h in log_history:
        if "loss" in h and "step" in h:
            out.append({"step": int(h["step"]), "epoch": round(float(h.get("epoch", 0.0)) * epoch_scale, 4),
                        "loss": float(h["loss"]), "learning_rate": float(h.get("learning_rate", 0.0))})
    return out


# --------------------------------------------------------------------------- augmented SBERT
def _gold_ce_pairs(rows: list[dict], k: int, seed: int) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    positives = sorted({r["positive"] for r in rows})
    out: list[tuple[str, str, float]] = []
    for r in rows:
        out.append((r["query"], r["positive"], 1.0))
        if r["negatives"]:
            out.extend((r["query"], n, 0.0) for n in r["negatives"][:k])
        else:
            others = [p for p in positives if p != r["positive"]]
            if others:
                out.append((r["query"], rng.choice(others), 0.0))
    return out


def _augsbert_silver(config: EmbeddingConfig, rows: list[dict], texts: Sequence[str], out: Path, base: Path,
                     plan, on_progress, should_stop) -> tuple[dict[str, Any] | None, bool]:
    """Teacher phase. Returns (silver dict with labelled pairs, cancelled)."""
    cache = out / SILVER_FILE
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if not _config_differences(saved.get("config", {}), config.to_dict()):
            return saved, False

    import transformers
    from sentence_transformers import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from datasets import Dataset

    transformers.set_seed(config.seed)
    try:
        ce = CrossEncoder(str(base), num_labels=1, max_length=config.max_seq_length, device=plan.device,
                          local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(f"could not build a cross-encoder from {str(base)!r}: {exc}") from exc
    gold = _gold_ce_pairs(rows, config.hard_negatives, config.seed)
    ds = Dataset.from_dict({"query": [g[0] for g in gold], "passage": [g[1] for g in gold],
                            "label": [g[2] for g in gold]})
    flags: dict[str, Any] = {}
    args = _trainer_args(CrossEncoderTrainingArguments, config, out / "cross_encoder_checkpoints", plan,
                         epochs=config.cross_encoder_epochs, learning_rate=config.cross_encoder_learning_rate,
                         weight_decay=config.weight_decay, save_steps=0)
    trainer = CrossEncoderTrainer(model=ce, args=args, train_dataset=ds, loss=BinaryCrossEntropyLoss(ce),
                                  callbacks=[_callback("cross_encoder", config, on_progress, should_stop, flags)])
    _quiet(trainer)
    trainer.train()
    shutil.rmtree(out / "cross_encoder_checkpoints", ignore_errors=True)
    if flags.get("cancelled"):
        return None, True
    ce_dir = out / "cross_encoder"
    tmp = _fresh_tmp(ce_dir)
    ce.save(str(tmp), create_model_card=False)
    _publish(tmp, ce_dir)

    queries = list(dict.fromkeys(r["query"] for r in rows))
    gold_map: dict[str, set[str]] = {}
    for r in rows:
        gold_map.setdefault(r["query"], set()).add(r["positive"])
    passages = list(dict.fromkeys([t for t in texts if t.strip()] + [r["positive"] for r in rows]))
    pairs = sample_silver_pairs(queries, gold_map, passages, config.silver_pairs, config.silver_sampling,
                                config.seed)
    scores = ce.predict(pairs, batch_size=max(config.batch_size, 32), show_progress_bar=False,
                        convert_to_numpy=True).tolist() if pairs else []
    pos = [(q, p) for (q, p), s in zip(pairs, scores) if s >= config.silver_positive]
    neg = [(q, p) for (q, p), s in zip(pairs, scores) if s <= config.silver_negative]
    silver = {"sampled": len(pairs), "positive": len(pos), "negative": len(neg),
              "dropped": len(pairs) - len(pos) - len(neg), "gold": len(gold),
              "sampling": config.silver_sampling, "teacher_steps": trainer.state.global_step,
              "teacher_final_loss": (_history(trainer.state.log_history) or [{"loss": None}])[-1]["loss"],
              "cross_encoder_dir": str(ce_dir),
              "score_mean": round(sum(scores) / len(scores), 4) if scores else None,
              "pairs": [[q, p, 1.0] for q, p in pos] + [[q, p, 0.0] for q, p in neg],
              "gold_pairs": [list(g) for g in gold], "config": config.to_dict()}
    _write_json(cache, silver)
    del ce, trainer
    return silver, False


# --------------------------------------------------------------------------- entry points
def train_embedding(config: EmbeddingConfig, rows: Sequence[dict], out_dir: Path | str, *,
                    texts: Sequence[str] = (),
                    on_progress: Callable[[EmbeddingProgress], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> EmbeddingResult:
    """Train an embedding model; see the module docstring for files, cancel/resume and strategies.

    ``rows``: ``{"query", "positive", "negatives": [...], "score": float | None}``; ``texts``: raw
    chunk texts (tsdae trains on them; augsbert samples silver passages from them).
    """
    t_start = time.time()
    clean = _clean_rows(config, rows, texts)
    base = check_embedding_base(config.base_model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finished = _finished_run(out, config)
    if finished is not None:
        return finished
    columns, dropped = ({}, 0) if config.objective == "augsbert" else _columns(config, clean, texts)

    import transformers
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.training_args import BatchSamplers

    from .devices import plan_devices

    plan = plan_devices(config.device, config.precision)
    notes = list(plan.notes)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and (out / CONFIG_FILE).is_file():
        saved = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
        diff = _config_differences(saved, config.to_dict())
        if diff:
            raise ValueError(f"{str(out)!r} holds a checkpoint of a different run (fields differ: "
                             f"{', '.join(diff)}); use a new output folder")
    if ckpt is None or config.objective == "tsdae" or not (out / CONFIG_FILE).is_file():
        if ckpt is not None:
            notes.append(f"{ckpt.name} not resumable ({'tsdae' if config.objective == 'tsdae' else 'no config'})"
                         "; training from step 0")
        ckpt = None
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a fresh run never mixes in stale checkpoints
    _write_json(out / CONFIG_FILE, config.to_dict())

    silver = None
    if config.objective == "augsbert":
        silver, cancelled = _augsbert_silver(config, clean, texts, out, base, plan, on_progress, should_stop)
        if cancelled:
            result = EmbeddingResult(None, config.objective, config.strategy, 0, [], None,
                                     round(time.time() - t_start, 3), "cancelled", None, device=plan.device,
                                     precision=plan.precision, notes=notes + ["cancelled while training the "
                                                                               "cross-encoder teacher"])
            _write_json(out / "metrics.json", result.to_dict())
            return result
        labelled = [tuple(g) for g in silver["gold_pairs"]] + [tuple(p) for p in silver["pairs"]]
        columns = {"sentence1": [x[0] for x in labelled], "sentence2": [x[1] for x in labelled],
                   "label": [float(x[2]) for x in labelled]}

    transformers.set_seed(config.seed)
    model = _load_st(base, plan.device)
    hf = _hf_model(model)
    limit = getattr(hf.config, "max_position_embeddings", None)
    model.max_seq_length = min(config.max_seq_length, limit) if isinstance(limit, int) and limit > 0 \
        else config.max_seq_length
    prefix_ids: list[int] = []
    if config.strategy == "prefix":
        prefix_ids = _add_prefix_tokens(model, config.prefix_tokens, config.seed)
        _apply_prefix_prompts(model, prefix_text(config.prefix_tokens))
    loss = _make_loss(model, config.objective)  # TSDAE ties the encoder to its decoder here: strategy after
    trained = _apply_strategy(model, config, prefix_ids)
    total_params = sum(p.numel() for p in model.parameters())

    dataset = Dataset.from_dict(columns)
    epoch_scale = float(config.epochs) if config.objective == "tsdae" else 1.0
    in_batch = config.objective in ("mnrl", "triplet")
    flags: dict[str, Any] = {}
    args = _trainer_args(
        SentenceTransformerTrainingArguments, config, out / "checkpoints", plan,
        epochs=1 if config.objective == "tsdae" else config.epochs, learning_rate=config.learning_rate,
        weight_decay=0.0 if config.strategy == "prefix" else config.weight_decay,
        save_steps=config.save_every_steps,
        batch_sampler=BatchSamplers.NO_DUPLICATES if in_batch else BatchSamplers.BATCH_SAMPLER,
        prompts=_column_prompts(model, list(columns), config.objective))
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss,
        callbacks=[_callback("train", config, on_progress, should_stop, flags, epoch_scale)])
    _quiet(trainer)
    resumed_from = 0
    if ckpt is not None:
        resumed_from = int(ckpt.name.split("-")[-1])
        notes.append(f"resumed from {ckpt.name}")
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    state = trainer.state
    history = _history(state.log_history, epoch_scale)
    cancelled = bool(flags.get("cancelled"))

    model_dir: Path | None = None
    checkpoint_dir: Path | None = None
    if cancelled:
        checkpoint_dir = latest_checkpoint(out)
        notes.append("cancelled: nothing published" + (f"; resume from {checkpoint_dir.name}"
                                                        if checkpoint_dir else ""))
    else:
        model_dir = out / "model"
        tmp = _fresh_tmp(model_dir)
        model.save(str(tmp), create_model_card=False)
        meta = {"format": 1, "objective": config.objective, "strategy": config.strategy,
                "base_model": str(base), "prefix": prefix_text(config.prefix_tokens) if prefix_ids else "",
                "prefix_tokens": [PREFIX_TOKEN.format(i) for i in range(len(prefix_ids))],
                "trained_parameters": trained, "steps": state.global_step, "config": config.to_dict()}
        _write_json(tmp / META_FILE, meta)
        _publish(tmp, model_dir)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)

    if silver is not None:
        silver = {k: v for k, v in silver.items() if k not in ("pairs", "gold_pairs", "config")}
    if dropped:
        notes.append(f"{dropped} row(s) without hard negatives were left out (objective 'triplet')")
    result = EmbeddingResult(
        model_dir=model_dir, objective=config.objective, strategy=config.strategy, steps=state.global_step,
        history=history, final_loss=history[-1]["loss"] if history else None,
        elapsed_s=round(time.time() - t_start, 3), stopped_reason="cancelled" if cancelled else "completed",
        silver=silver, trained_parameters=trained, total_parameters=total_params, total_steps=state.max_steps,
        resumed_from_step=resumed_from, checkpoint_dir=checkpoint_dir,
        rows_used=len(dataset) // (config.epochs if config.objective == "tsdae" else 1),
        rows_dropped=dropped, device=plan.device, precision=plan.precision, notes=notes)
    _write_json(out / "metrics.json", result.to_dict())
    return result


def load_embedding_model(path: Path | str, device: str = "cpu"):
    """A SentenceTransformer for a trained (or any) model folder.

    Prefix-trained models carry their prefix as the default prompt, so ``.encode`` applies
    it; should the saved prompts have been lost, ``vsm_embedding.json`` restores them here.
    """
    p = check_embedding_base(path)
    if device == "auto":
        from .devices import detect_device

        device = detect_device("auto")[0]
    model = _load_st(p, device)
    meta_file = p / META_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("strategy") == "prefix" and meta.get("prefix"):
            _apply_prefix_prompts(model, meta["prefix"])
    return model
