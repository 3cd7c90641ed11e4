"""Supervised training of causal LMs (sft, cpt, judge_sft): LoRA or full fine-tuning.

``train(config, rows, out_dir) -> TrainResult`` does one run end to end and is safe to
call again on the same ``out_dir``: it resumes from the last checkpoint (weights,
optimizer, scheduler, RNG states, data position), so a worker killed mid-run loses
at most ``save_every_steps`` steps and the resumed run ends where an uninterrupted
one would.

Speed: the loss is computed from the decoder's hidden states at the positions whose
next token carries a label only; the LM head (262k rows for Gemma 3) is never applied
to prompt or padding positions. Micro-batches are packed (see ``data.py``), so no
compute goes to padding either.

No Django here; torch / transformers / peft are imported inside functions.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .base_models import BaseModelError  # one error type for every base-model problem
from .config import TrainConfig
from .data import IGNORE, DataStats, Example, collate, encode_rows, epoch_plan, prompt_ids, \
    question_messages, stop_token_ids

# Config fields that may change between a run and its resumption (hardware, logging):
# everything else must match the checkpoint, or the resumed run would be another run.
RESUMABLE_DIFFERENCES = {"device", "precision", "quantization", "gradient_checkpointing",
                         "log_every_steps", "save_every_steps", "generation_temperature"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Above this many logits elements per chunk, the LM head + loss is recomputed in the
# backward pass chunk by chunk instead of keeping [targets × vocab] logits alive.
LOGITS_CHUNK_ELEMENTS = 1 << 26




@dataclass
class Progress:
    step: int
    total_steps: int
    epoch: float               # fractional: 1.5 = half-way through the second epoch
    loss: float                # mean token loss of the last optimizer step
    learning_rate: float
    tokens_per_s: float
    eta_s: float
    val_loss: float | None = None  # set on the report that closes an epoch with eval rows


@dataclass
class TrainResult:
    output_dir: str                    # out_dir
    model_dir: str | None              # out_dir/adapter or out_dir/model; None when cancelled
    steps: int
    total_steps: int
    epochs_completed: int
    final_train_loss: float | None
    best_val_loss: float | None
    best_epoch: int | None
    history: list[dict[str, Any]]      # per optimizer step: step, epoch, loss, learning_rate, tokens_per_s
    val_history: list[dict[str, Any]]  # per epoch: epoch, val_loss
    resumed_from_step: int             # 0 when the run started fresh
    stopped_reason: str                # "completed", "cancelled" or "early_stopping"
    rows_truncated: int
    rows_dropped: int
    device: str
    precision: str
    quantization: str = "none"
    method: str = "lora"
    trainable_params: int = 0
    total_params: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- loading
def check_base_model(path: str | os.PathLike) -> Path:
    """Fail fast, with a message a person can act on, before any model is loaded."""
    if not str(path):
        raise BaseModelError("base_model is empty: give the folder of a Hugging Face model")
    p = Path(path)
    if not p.exists():
        raise BaseModelError(f"base model folder {str(p)!r} does not exist")
    if not p.is_dir():
        raise BaseModelError(f"base model {str(p)!r} is not a folder (GGUF files must be imported first)")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise BaseModelError(f"{str(p)!r} is not a model folder: config.json is missing")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"{str(cfg)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "model_type" not in data:
        raise BaseModelError(f"{str(cfg)!r} has no model_type: not a transformers model config")
    if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in p.iterdir() if f.is_file()):
        raise BaseModelError(f"{str(p)!r} holds no weights (*.safetensors or pytorch_model*.bin)")
    if not any((p / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise BaseModelError(f"{str(p)!r} holds no tokenizer (tokenizer.json / tokenizer_config.json)")
    return p


def load_tokenizer(path: str | os.PathLike):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def _load_model(path: Path, plan):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": plan.torch_dtype()}
    if plan.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=plan.autocast_dtype() or torch.bfloat16)
        kwargs["device_map"] = {"": plan.device}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(f"could not load a causal LM from {str(path)!r}: {exc}") from exc
    if plan.quantization != "4bit":
        model.to(plan.device)
    return model


def _prepare_model(config: TrainConfig, model):
    """Wrap with LoRA (or unfreeze everything for full fine-tuning)."""
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    targets: Any = config.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _parts(model):
    """(decoder, lm_head, final_logit_softcapping) of a (peft-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    if decoder is base:
        raise RuntimeError(f"{type(base).__name__}: cannot find the decoder under the LM head")
    return decoder, base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


# --------------------------------------------------------------------------- loss
def _head_loss(hidden, targets, head, softcap):
    import torch.nn.functional as F

    logits = head(hidden)
    if softcap:
        logits = (logits / softcap).tanh() * softcap
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def batch_loss_sum(model, batch, device: str, autocast_dtype=None):
    """Summed token loss of one micro-batch, the LM head applied to labelled positions only."""
    import torch
    from torch.utils.checkpoint import checkpoint

    decoder, head, softcap = _parts(model)
    ids = batch.input_ids.to(device)
    tg = batch.targets.to(device)
    kw: dict[str, Any] = {"input_ids": ids, "use_cache": False}
    if batch.position_ids is not None:
        kw["position_ids"] = batch.position_ids.to(device)
    if batch.attention_mask is not None:
        kw["attention_mask"] = batch.attention_mask.to(device)
    dev_type = device.split(":")[0]
    with torch.autocast(device_type=dev_type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        hidden = decoder(**kw).last_hidden_state
        sel = tg != IGNORE
        h = hidden[sel]
        t = tg[sel]
        vocab = head.weight.shape[0]
        chunk = max(1, LOGITS_CHUNK_ELEMENTS // vocab)
        if h.shape[0] <= chunk or not torch.is_grad_enabled():
            return _head_loss(h, t, head, softcap)
        total = h.new_zeros((), dtype=torch.float32)
        for k in range(0, h.shape[0], chunk):
            total = total + checkpoint(_head_loss, h[k:k + chunk], t[k:k + chunk], head, softcap,
                                       use_reentrant=False)
        return total


def evaluate_loss(model, examples: Sequence[Example], *, batch_size: int, max_length: int,
                  packing: bool, pad_id: int, device: str, autocast_dtype=None) -> float:
    """Mean token loss over examples (answer tokens only for sft)."""
    import torch

    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(examples), batch_size):
            b = collate(examples[k:k + batch_size], packing=packing, max_length=max_length, pad_id=pad_id)
            if b.n_targets == 0:
                continue
            total += float(batch_loss_sum(model, b, device, autocast_dtype))
            n += b.n_targets
    if was_training:
        model.train()
    return total / max(n, 1)


# --------------------------------------------------------------------------- checkpoints
def _trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().to("cpu").clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing:
        raise RuntimeError(f"checkpoint lacks {len(missing)} trainable tensors (e.g. {missing[0]})")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def _rng_state() -> dict[str, Any]:
    import torch

    st: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    import torch

    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_dir(final: Path) -> Path:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _commit_dir(tmp: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted((p for p in root.glob("step-*") if (p / "state.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


def _save_checkpoint(out_dir: Path, model, opt, sched, scaler, state: dict[str, Any], keep: int = 2) -> Path:
    import torch

    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['step']:08d}"
    tmp = _atomic_dir(final)
    torch.save(_trainable_state(model), tmp / "trainable.pt")
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": _rng_state()}, tmp / "training_state.pt")
    (tmp / "state.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    _commit_dir(tmp, final)
    olds = sorted((p for p in root.glob("step-*") if p != final), key=lambda p: int(p.name.split("-")[1]))
    for p in olds[:max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def _config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if k not in RESUMABLE_DIFFERENCES and a.get(k) != b.get(k))


# --------------------------------------------------------------------------- train
class DataParallel:
    """The process group of a data-parallel run (``accelerate launch``/torchrun set WORLD_SIZE).

    A single process has world 1 and every method is a no-op, so the plain path pays nothing.
    Only LoRA/full-weight gradients travel (all-reduce of the trainable parameters' grads), which
    for an adapter is a few MB a step. Rank 0 alone writes checkpoints, outputs and progress.
    """

    def __init__(self, rank: int = 0, world: int = 1, device: str = "cpu", owns_group: bool = False):
        self.rank, self.world, self.device, self.owns_group = rank, world, device, owns_group

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> "DataParallel":
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls(device=device)
        import torch
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if device.startswith("cuda"):
            device = f"cuda:{local}"
            torch.cuda.set_device(local)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device, owns)

    def _reduce(self, values: list[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def total(self, value: float) -> float:
        return value if self.world == 1 else self._reduce([float(value)])[0]

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision (a cancel seen by one process must stop all of them at the same step)."""
        if self.world == 1:
            return bool(flag)
        return self._reduce([float(flag) if self.main else 0.0])[0] > 0

    def sum_grads(self, params) -> None:
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        k = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[k:k + n].view_as(g).to(g.dtype)
            k += n

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and self.owns_group:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


def train(config: TrainConfig, rows: Iterable[dict[str, Any]], out_dir: str | os.PathLike, *,
          eval_rows: Iterable[dict[str, Any]] = (),
          on_progress: Callable[[Progress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train ``config.base_model`` on ``rows``; write the adapter/model under ``out_dir``."""
    if config.kind == "grpo":  # one entry point for every kind; GRPO runs on trl (grpo.py)
        from .grpo import train_grpo

        return train_grpo(config, rows, out_dir, eval_rows=eval_rows, on_progress=on_progress,
                          should_stop=should_stop)
    base_path = check_base_model(config.base_model)
    rows = list(rows)
    eval_rows = list(eval_rows)
    if not rows:
        raise ValueError("no training rows")

    import torch
    from .devices import plan_devices

    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_devices(config.device, config.precision, config.quantization, config.method)
    dp = DataParallel.from_env(plan.device)
    if dp.world > 1 and plan.device.startswith("cuda"):
        import dataclasses

        plan = dataclasses.replace(plan, device=dp.device)
    notes = list(plan.notes)
    device = plan.device
    amp = plan.autocast_dtype()

    tokenizer = load_tokenizer(base_path)
    examples, stats = encode_rows(config.kind, rows, tokenizer, config.max_length, mask_history=config.mask_history)
    if not examples:
        raise ValueError(f"none of the {stats.rows} rows fits max_length={config.max_length} "
                         f"({stats.dropped} dropped)")
    eval_examples: list[Example] = []
    if eval_rows:
        eval_examples, _ = encode_rows(config.kind, eval_rows, tokenizer, config.max_length,
                                       mask_history=config.mask_history)

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = _load_model(base_path, plan)
    packing = config.packing
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    if packing and not (attn in ("eager", "sdpa", "flex_attention") or attn.startswith("flash_attention")):
        notes.append(f"attention {attn!r} cannot take packed position ids; padding instead")
        packing = False
    model = _prepare_model(config, model)
    model.train()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.learning_rate)
    n_micro = math.ceil(len(examples) / config.batch_size)
    steps_per_epoch = math.ceil(n_micro / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    warmup = math.ceil(config.warmup_ratio * total_steps)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    scaler = torch.amp.GradScaler(device.split(":")[0]) if plan.precision == "fp16" else None

    state: dict[str, Any] = {"step": 0, "epoch": 0, "group": 0, "epochs_completed": 0, "tokens_seen": 0,
                             "history": [], "val_history": [], "best_val_loss": None, "best_epoch": None,
                             "bad_epochs": 0, "stopped": "", "config": config.to_dict()}
    resumed_from = 0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        saved = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        diff = _config_differences(saved.get("config", {}), config.to_dict())
        if diff:
            raise ValueError(f"{str(out)!r} holds a checkpoint of a different run (fields differ: "
                             f"{', '.join(diff)}); use a new output folder")
        _load_trainable(model, torch.load(ckpt / "trainable.pt", map_location="cpu"))
        ts = torch.load(ckpt / "training_state.pt", map_location="cpu", weights_only=False)
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        if scaler is not None and ts.get("scaler"):
            scaler.load_state_dict(ts["scaler"])
        _set_rng_state(ts["rng"])
        state.update({k: v for k, v in saved.items() if k != "config"})
        state["stopped"] = ""
        resumed_from = state["step"]
        notes.append(f"resumed from checkpoint {ckpt.name}")
    _write_json(out / "train_config.json", config.to_dict())

    def save_ckpt() -> None:
        if not dp.main:
            return
        _save_checkpoint(out, model, opt, sched, scaler, state)

    def eval_now() -> float:
        return evaluate_loss(model, eval_examples, batch_size=config.batch_size, max_length=config.max_length,
                             packing=packing, pad_id=pad_id, device=device, autocast_dtype=amp)

    session_t0 = time.time()
    session_tokens = 0
    session_steps = 0
    last_saved = state["step"] if ckpt is not None else -1
    stopped = ""
    params = [p for p in model.parameters() if p.requires_grad]

    epoch = state["epoch"]
    while epoch < config.epochs and not stopped:
        groups = epoch_plan(len(examples), config.batch_size, config.seed, epoch)
        groups = [groups[k:k + config.grad_accum] for k in range(0, len(groups), config.grad_accum)]
        g = state["group"] if epoch == state["epoch"] else 0
        while g < len(groups):
            if dp.agree(should_stop is not None and should_stop()):
                stopped = "cancelled"
                break
            t0 = time.time()
            # Data-parallel: each process takes every world-th micro-batch of the step, and the loss
            # is normalised by the targets of the whole step, so summed gradients equal one process's.
            batches = [collate([examples[i] for i in mb], packing=packing, max_length=config.max_length,
                               pad_id=pad_id) for mb in groups[g][dp.rank::dp.world]]
            n_tg = dp.total(sum(b.n_targets for b in batches))
            step_loss = 0.0
            for b in batches:
                if b.n_targets == 0:
                    continue
                loss = batch_loss_sum(model, b, device, amp) / n_tg
                (scaler.scale(loss) if scaler is not None else loss).backward()
                step_loss += float(loss.detach())
            if dp.world > 1:
                dp.sum_grads(params)
                step_loss = dp.total(step_loss)
            if scaler is not None:
                scaler.unscale_(opt)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            lr = opt.param_groups[0]["lr"]
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)

            g += 1
            tokens = int(dp.total(sum(b.n_tokens for b in batches)))
            session_tokens += tokens
            session_steps += 1
            state["tokens_seen"] += tokens
            state["step"] += 1
            state["epoch"], state["group"] = (epoch, g) if g < len(groups) else (epoch + 1, 0)
            elapsed = max(time.time() - session_t0, 1e-9)
            tps = session_tokens / elapsed
            rec = {"step": state["step"], "epoch": round(epoch + g / len(groups), 4), "loss": step_loss,
                   "learning_rate": lr, "tokens_per_s": round(tps, 2), "step_s": round(time.time() - t0, 4)}
            state["history"].append(rec)
            end_of_epoch = g >= len(groups)
            if (not end_of_epoch and config.save_every_steps
                    and state["step"] % config.save_every_steps == 0):
                save_ckpt()
                last_saved = state["step"]
            if on_progress is not None and dp.main and not end_of_epoch and (
                    state["step"] % config.log_every_steps == 0 or state["step"] == total_steps):
                eta = (total_steps - state["step"]) * elapsed / session_steps
                on_progress(Progress(state["step"], total_steps, rec["epoch"], step_loss, lr, tps, eta))

        if stopped:
            break
        # ---- epoch end: validation, keep-best, early stopping, checkpoint, report
        val = None
        if eval_examples:
            val = eval_now()
            state["val_history"].append({"epoch": epoch + 1, "step": state["step"], "val_loss": val})
            if state["best_val_loss"] is None or val < state["best_val_loss"]:
                state["best_val_loss"], state["best_epoch"], state["bad_epochs"] = val, epoch + 1, 0
                if config.keep_best and dp.main:
                    import torch as _t

                    best = out / "best"
                    tmp = _atomic_dir(best)
                    _t.save(_trainable_state(model), tmp / "trainable.pt")
                    _commit_dir(tmp, best)
            else:
                state["bad_epochs"] += 1
        state["epochs_completed"] = epoch + 1
        if config.early_stopping_patience and state["bad_epochs"] >= config.early_stopping_patience \
                and epoch + 1 < config.epochs:
            stopped = "early_stopping"
            state["stopped"] = stopped
        save_ckpt()
        last_saved = state["step"]
        if on_progress is not None and dp.main:
            elapsed = max(time.time() - session_t0, 1e-9)
            h = state["history"][-1] if state["history"] else {"loss": float("nan"), "learning_rate": 0.0}
            eta = (total_steps - state["step"]) * elapsed / max(session_steps, 1)
            on_progress(Progress(state["step"], total_steps, float(epoch + 1), h["loss"], h["learning_rate"],
                                 session_tokens / elapsed, 0.0 if stopped else eta, val))
        epoch += 1

    if stopped == "cancelled" and last_saved != state["step"]:
        save_ckpt()

    model_dir: Path | None = None
    if stopped != "cancelled":
        dp.barrier()  # rank 0's best weights are on disk
        if eval_examples and config.keep_best and (out / "best" / "trainable.pt").is_file():
            _load_trainable(model, torch.load(out / "best" / "trainable.pt", map_location="cpu"))
            notes.append(f"kept the weights of epoch {state['best_epoch']} (lowest validation loss)")
        model_dir = out / ("adapter" if config.method == "lora" else "model")
        if dp.main:
            tmp = _atomic_dir(model_dir)
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            _write_json(tmp / "train_config.json", config.to_dict())
            _commit_dir(tmp, model_dir)

    history = state["history"]
    result = TrainResult(
        output_dir=str(out), model_dir=str(model_dir) if model_dir else None, steps=state["step"],
        total_steps=total_steps, epochs_completed=state["epochs_completed"],
        final_train_loss=history[-1]["loss"] if history else None, best_val_loss=state["best_val_loss"],
        best_epoch=state["best_epoch"], history=history, val_history=state["val_history"],
        resumed_from_step=resumed_from, stopped_reason=stopped or "completed",
        rows_truncated=stats.truncated, rows_dropped=stats.dropped, device=device, precision=plan.precision,
        quantization=plan.quantization, method=config.method, trainable_params=n_trainable,
        total_params=n_total, tokens_seen=state["tokens_seen"], elapsed_s=round(time.time() - t_start, 3),
        data=stats.to_dict(), notes=notes)
    if dp.world > 1:
        result.notes.append(f"data-parallel over {dp.world} processes")
    if dp.main:
        _write_json(out / "metrics.json", result.to_dict())
    dp.close()
    return result


# --------------------------------------------------------------------------- generation
def load_for_inference(model_dir_or_adapter: str | os.PathLike, base_model: str | os.PathLike | None = None,
                       device: str = "auto"):
    """(model, tokenizer) from an adapter folder (with its base) or a full model folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from .devices import detect_device

    dev, _ = detect_device(device)
    dtype = torch.bfloat16 if dev.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    md = Path(model_dir_or_adapter)
    if (md / "adapter_config.json").is_file():
        if base_model is None:
            base_model = json.loads((md / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = check_base_model(base_model)
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype)
        model = PeftModel.from_pretrained(model, str(md))
        tok_dir = md if (md / "tokenizer_config.json").is_file() else base
    else:
        check_base_model(md)
        model = AutoModelForCausalLM.from_pretrained(str(md), dtype=dtype)
        tok_dir = md
    model.to(dev).eval()
    return model, load_tokenizer(tok_dir)


def generate_answers(model_dir_or_adapter: str | os.PathLike, base_model: str | os.PathLike | None,
                     questions: Sequence[str | dict[str, Any]], max_new_tokens: int = 64, *,
                     model=None, tokenizer=None) -> list[str]:
    """Greedy answers with the prompt template training used.

    ``questions`` are strings or ``{"question", "system"?, "history"?}`` dicts. Pass an
    already loaded ``model``/``tokenizer`` to skip loading.
    """
    import torch

    if model is None or tokenizer is None:
        model, tokenizer = load_for_inference(model_dir_or_adapter, base_model)
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    answers = []
    for q in questions:
        if isinstance(q, str):
            msgs = question_messages(q)
        else:
            msgs = question_messages(q["question"], system=q.get("system"), history=q.get("history"))
        ids = torch.tensor([prompt_ids(tokenizer, msgs)], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=stops or None,
                                 pad_token_id=pad)
        new = out[0, ids.shape[1]:].tolist()
        while new and new[-1] in stops:
            new.pop()
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers
