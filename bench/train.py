"""VSM's SFT (``training_app.engine.sft.train``) against a plain HF ``Trainer`` + PEFT LoRA
baseline: same model, same data, same hyper-parameters, measured side by side in one run.

    python bench/train.py                # the real embedded Gemma 3 270M (fp32, CPU)
    python bench/train.py --tiny         # a 2-layer Gemma3 (hidden 64) for a quick check
    python bench/train.py --profile      # also time one micro-batch's parts (decoder, LM head, optimizer)

What is the same on both sides
  * model and tokenizer folder, fp32 on CPU, attention implementation (transformers' default);
  * rows: question/answer pairs built from the CMRC 2018 trial set (the question, and the
    passage sentence that holds the annotated answer as the answer: 27-114 tokens with
    the Gemma tokenizer, realistic length variance);
  * encoding: the engine's own ``data.encode_rows`` (plain "Question: …\\nAnswer: …"
    template, loss on answer tokens only: prompt labels are -100 on both sides);
  * LoRA r / alpha / dropout / target modules ("all-linear"), seed set before the adapter is
    built (so both start from the same adapter), lr, AdamW weight decay, max grad norm,
    batch size, gradient accumulation, max length, epochs; the engine's defaults unless
    given on the command line;
  * data order: the baseline's dataset is the engine's ``epoch_plan`` order laid out epoch
    after epoch, read with ``train_sampling_strategy="sequential"``, so every optimizer step
    sees exactly the same examples on both sides and the per-step losses are comparable at
    the same token counts;
  * learning-rate schedule: the baseline gets an AdamW and a LambdaLR with the engine's
    warm-up/decay formula through ``Trainer(optimizers=…)`` (HF's own linear warm-up starts
    at lr 0, which would cost the baseline one of its few steps);
  * loss: token mean over the whole optimizer step on both sides (the Trainer passes
    ``num_items_in_batch`` to the model).

What differs (what is measured)
  * VSM packs each micro-batch into few rows (no padding compute) and applies the LM head
    (262k rows for Gemma 3) to the positions whose next token is labelled only;
  * the baseline pads each micro-batch to its longest example with
    ``DataCollatorForSeq2Seq`` (right padding, labels padded with -100) and the model
    computes logits for every position, as a plain Trainer run does.

Throughput is *real tokens (prompt + answer, BOS/EOS included, padding not counted) per
second of the training loop* (first step start to last step end, collation and the
engine's epoch-end checkpoints included). Each side runs in its own child process; peak
memory is that child's max RSS (``getrusage(RUSAGE_SELF).ru_maxrss``), and a third child
that only loads the model and wraps it with LoRA gives the floor both share.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CMRC = "/work/shared/benchmarks/cmrc2018_trial.json"


# --------------------------------------------------------------------------- data
def build_rows(path: str, n: int, seed: int) -> list[dict[str, str]]:
    """n seeded QA rows: a CMRC question and the passage sentence holding its answer span."""
    passages = json.loads(Path(path).read_text(encoding="utf-8"))
    cands = []
    for p in passages:
        sents = [s.strip() for s in re.split(r"(?<=[。！？])", p["context_text"]) if s.strip()]
        for q in p["qas"]:
            span = q["answers"][0] if q["answers"] else ""
            hit = [s for s in sents if span and span in s]
            if hit:
                cands.append({"question": q["query_text"].strip(), "answer": hit[0]})
    if len(cands) < n:
        raise SystemExit(f"{path}: only {len(cands)} usable questions, {n} asked for")
    return random.Random(seed).sample(cands, n)


def build_tiny_model(folder: Path, rows: list[dict[str, str]]) -> Path:
    """A 2-layer Gemma3 text model (hidden 64, one sliding + one full attention layer) with a
    byte-level BPE tokenizer trained on the rows; no chat template (plain, like the real base)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows], trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", bos_token="<bos>")
    hf.add_bos_token = True
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                           max_position_embeddings=1024, sliding_window=64,
                           layer_types=["sliding_attention", "full_attention"],
                           eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id,
                           bos_token_id=hf.bos_token_id)
    Gemma3ForCausalLM(cfg).save_pretrained(str(folder))
    hf.save_pretrained(str(folder))
    return folder


def data_report(model_dir: str, rows, spec: dict) -> dict:
    """Token counts both sides see, from the engine's own encoding and batching."""
    from training_app.engine.data import IGNORE, collate, encode_rows, epoch_plan
    from training_app.engine.sft import load_tokenizer

    tok = load_tokenizer(model_dir)
    examples, stats = encode_rows("sft", rows, tok, spec["max_length"])
    pad = int(tok.pad_token_id)
    packed_pos = padded_pos = targets = 0
    for e in range(spec["epochs"]):
        for mb in epoch_plan(len(examples), spec["batch_size"], spec["seed"], e):
            exs = [examples[i] for i in mb]
            b = collate(exs, packing=True, max_length=spec["max_length"], pad_id=pad)
            packed_pos += b.input_ids.numel()
            targets += int((b.targets != IGNORE).sum())
            padded_pos += len(exs) * max(len(x.input_ids) for x in exs)
    lengths = sorted(len(x.input_ids) for x in examples)
    return {"examples": len(examples), "tokens_per_epoch": stats.tokens, "label_tokens_per_epoch": stats.label_tokens,
            "dropped": stats.dropped, "truncated": stats.truncated, "template": stats.template,
            "len_min": lengths[0], "len_median": lengths[len(lengths) // 2], "len_max": lengths[-1],
            "tokens_total": stats.tokens * spec["epochs"], "packed_positions": packed_pos,
            "padded_positions": padded_pos, "head_positions_vsm": targets, "head_positions_hf": padded_pos}


# --------------------------------------------------------------------------- children
def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def lr_lambda_for(total_steps: int, warmup_ratio: float):
    """The engine's schedule (sft.train): linear warm-up from lr/(w+1), then linear decay to 0."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return f


def lora_config(spec: dict):
    from peft import LoraConfig

    t = spec["target_modules"]
    targets = t if t == "all-linear" else [x.strip() for x in t.split(",") if x.strip()]
    return LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=spec["lora_dropout"],
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


def child_load(spec: dict, rows) -> dict:
    """Only load the model and wrap it with LoRA: the memory floor both sides share."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    model = get_peft_model(model, lora_config(spec))
    return {"peak_rss_mb": maxrss_mb()}


def child_vsm(spec: dict, rows) -> dict:
    from training_app.engine.config import TrainConfig
    from training_app.engine.sft import train

    cfg = TrainConfig(kind="sft", base_model=spec["model_dir"], method="lora", lora_r=spec["lora_r"],
                      lora_alpha=spec["lora_alpha"], lora_dropout=spec["lora_dropout"],
                      target_modules=spec["target_modules"], learning_rate=spec["lr"], epochs=spec["epochs"],
                      batch_size=spec["batch_size"], grad_accum=spec["grad_accum"],
                      warmup_ratio=spec["warmup_ratio"], weight_decay=spec["weight_decay"],
                      max_grad_norm=spec["max_grad_norm"], max_length=spec["max_length"], seed=spec["seed"],
                      save_every_steps=0, log_every_steps=1, device="cpu", precision="fp32", packing=True)
    t0 = time.perf_counter()
    res = train(cfg, rows, Path(spec["work"]) / "vsm-out")
    e2e = time.perf_counter() - t0
    hist = res.history
    # tokens_per_s of the last record = all tokens / (first step start → last step end)
    loop_s = res.tokens_seen / hist[-1]["tokens_per_s"]
    per_step_tokens = _step_tokens(spec, rows)
    return {"peak_rss_mb": maxrss_mb(), "loop_s": loop_s, "e2e_s": e2e, "tokens": res.tokens_seen,
            "steps": [{"step": h["step"], "loss": h["loss"], "step_s": h["step_s"], "tokens": t}
                      for h, t in zip(hist, per_step_tokens)],
            "trainable_params": res.trainable_params, "notes": res.notes}


def _step_tokens(spec: dict, rows) -> list[int]:
    """Real tokens per optimizer step, in the engine's order (the same on both sides)."""
    from training_app.engine.data import encode_rows, epoch_plan
    from training_app.engine.sft import load_tokenizer

    examples, _ = encode_rows("sft", rows, load_tokenizer(spec["model_dir"]), spec["max_length"])
    out = []
    for e in range(spec["epochs"]):
        mbs = epoch_plan(len(examples), spec["batch_size"], spec["seed"], e)
        for k in range(0, len(mbs), spec["grad_accum"]):
            out.append(sum(len(examples[i].input_ids) for mb in mbs[k:k + spec["grad_accum"]] for i in mb))
    return out


def child_hf(spec: dict, rows) -> dict:
    """The baseline: a plain HF Trainer on a PEFT LoRA model, padded batches, logits everywhere."""
    import logging as pylogging

    import torch
    from peft import get_peft_model
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainerCallback,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging

    from training_app.engine.data import encode_rows, epoch_plan
    from training_app.engine.sft import load_tokenizer

    hf_logging.set_verbosity_error()
    pylogging.getLogger("transformers").setLevel(pylogging.ERROR)
    t0 = time.perf_counter()
    tok = load_tokenizer(spec["model_dir"])
    tok.padding_side = "right"  # Gemma's tokenizer pads left; left padding would shift positions
    examples, _ = encode_rows("sft", rows, tok, spec["max_length"])
    n, bs, ga = len(examples), spec["batch_size"], spec["grad_accum"]
    if n % bs:
        raise SystemExit(f"{n} examples is not a multiple of batch size {bs}: micro-batches would differ")
    order = [i for e in range(spec["epochs"]) for mb in epoch_plan(n, bs, spec["seed"], e) for i in mb]
    dataset = [{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in order]
    n_micro = math.ceil(n / bs)
    total_steps = math.ceil(n_micro / ga) * spec["epochs"]
    if n_micro % ga:
        raise SystemExit(f"{n_micro} micro-batches per epoch is not a multiple of grad_accum {ga}: "
                         "optimizer steps would straddle epochs in the baseline")

    random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])  # as sft.train does before loading: same adapter init
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, lora_config(spec))
    loaded_rss = maxrss_mb()

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda_for(total_steps, spec["warmup_ratio"]))

    class Clock(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.ends: list[float] = []
            self.losses: dict[int, float] = {}

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses[state.global_step] = float(logs["loss"])

    clock = Clock()
    args = TrainingArguments(
        output_dir=str(Path(spec["work"]) / "hf-out"), per_device_train_batch_size=bs,
        gradient_accumulation_steps=ga, num_train_epochs=1, max_steps=total_steps,
        learning_rate=spec["lr"], weight_decay=spec["weight_decay"], max_grad_norm=spec["max_grad_norm"],
        logging_strategy="steps", logging_steps=1, save_strategy="no", eval_strategy="no",
        report_to="none", use_cpu=True, seed=spec["seed"], data_seed=spec["seed"],
        train_sampling_strategy="sequential", dataloader_num_workers=0, dataloader_pin_memory=False,
        disable_tqdm=True, remove_unused_columns=False)
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      optimizers=(opt, sched), callbacks=[clock])
    trainer.train()
    model.save_pretrained(str(Path(spec["work"]) / "hf-out" / "adapter"))
    e2e = time.perf_counter() - t0
    per_step_tokens = _step_tokens(spec, rows)
    times = [clock.t0] + clock.ends
    steps = [{"step": s + 1, "loss": clock.losses.get(s + 1, float("nan")), "step_s": times[s + 1] - times[s],
              "tokens": per_step_tokens[s]} for s in range(len(clock.ends))]
    return {"peak_rss_mb": maxrss_mb(), "loaded_rss_mb": loaded_rss, "loop_s": clock.ends[-1] - clock.t0,
            "e2e_s": e2e, "tokens": sum(per_step_tokens[:len(clock.ends)]), "steps": steps,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def child_profile(spec: dict, rows) -> dict:
    """Seconds per micro-batch part, VSM style (packed, head on labelled positions) against the
    baseline style (padded, head everywhere), over the first epoch's micro-batches."""
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from training_app.engine.data import IGNORE, collate, encode_rows, epoch_plan
    from training_app.engine.sft import load_tokenizer

    tok = load_tokenizer(spec["model_dir"])
    examples, _ = encode_rows("sft", rows, tok, spec["max_length"])
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    model = get_peft_model(model, lora_config(spec))
    model.train()
    base = model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    mbs = epoch_plan(len(examples), spec["batch_size"], spec["seed"], 0)[: spec["profile_batches"]]
    parts = {k: 0.0 for k in ("vsm_decoder", "vsm_head", "hf_decoder", "hf_head", "optimizer")}
    pad = int(tok.pad_token_id)

    def run(b, packed: bool):
        kw = {"input_ids": b.input_ids, "use_cache": False}
        if packed:
            kw["position_ids"] = b.position_ids
        else:
            kw["attention_mask"] = b.attention_mask
        t = time.perf_counter()
        hidden = decoder(**kw).last_hidden_state
        h = hidden.detach().requires_grad_(True)
        t_dec_f = time.perf_counter() - t
        t = time.perf_counter()
        if packed:
            sel = b.targets != IGNORE
            loss = F.cross_entropy(head(h[sel]).float(), b.targets[sel], reduction="sum")
        else:  # what the model's own loss does: logits everywhere, then shift and mask
            logits = head(h).float()
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), b.targets.view(-1),
                                   ignore_index=IGNORE, reduction="sum")
        loss.backward()
        t_head = time.perf_counter() - t
        t = time.perf_counter()
        hidden.backward(h.grad)
        t_dec = t_dec_f + time.perf_counter() - t
        return t_dec, t_head

    for mb in mbs:
        exs = [examples[i] for i in mb]
        for packed in (True, False):
            b = collate(exs, packing=packed, max_length=spec["max_length"], pad_id=pad)
            d, h = run(b, packed)
            parts["vsm_decoder" if packed else "hf_decoder"] += d
            parts["vsm_head" if packed else "hf_head"] += h
        t = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        parts["optimizer"] += time.perf_counter() - t
    return {"micro_batches": len(mbs), "seconds": parts}


CHILDREN = {"load": child_load, "vsm": child_vsm, "hf": child_hf, "profile": child_profile}


def cpu_stall_s() -> float | None:
    """Seconds some task waited for a CPU (Linux PSI), to show when other work shared the cores."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(line.rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


def run_child(name: str, spec_path: Path) -> dict:
    out = spec_path.with_name(f"result-{name}.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--spec", str(spec_path)]
    t = time.perf_counter()
    stall0 = cpu_stall_s()
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True)
    stall1 = cpu_stall_s()
    if proc.returncode != 0 or not out.is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"child {name!r} failed (exit {proc.returncode})")
    res = json.loads(out.read_text(encoding="utf-8"))
    res["child_wall_s"] = time.perf_counter() - t
    res["cpu_stall_s"] = None if stall0 is None or stall1 is None else stall1 - stall0
    return res


# --------------------------------------------------------------------------- report
def loss_at(steps: list[dict], tokens: float) -> float:
    """A side's training loss at a cumulative token count (linear between its steps)."""
    cum, prev_t, prev_l = 0, None, None
    for s in steps:
        cum += s["tokens"]
        if cum >= tokens:
            if prev_t is None or cum == tokens:
                return s["loss"]
            w = (tokens - prev_t) / (cum - prev_t)
            return prev_l + w * (s["loss"] - prev_l)
        prev_t, prev_l = cum, s["loss"]
    return steps[-1]["loss"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer Gemma3 (hidden 64) instead of the real model")
    ap.add_argument("--model", default="embedded:gemma3-270m", help="base model spec (embedded:…, folder, .gguf)")
    ap.add_argument("--cache-dir", default=str(ROOT / "var" / "models" / "base"))
    ap.add_argument("--data", default=CMRC)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None, help="default: the engine's (3)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--grad-accum", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="also time micro-batch parts in a third child")
    ap.add_argument("--profile-batches", type=int, default=4)
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        rows = json.loads((Path(args.spec).parent / "rows.json").read_text(encoding="utf-8"))
        res = CHILDREN[args.child](spec, rows)
        Path(args.spec).with_name(f"result-{args.child}.json").write_text(json.dumps(res), encoding="utf-8")
        return

    from training_app.engine.config import TrainConfig

    d = TrainConfig()
    spec = {"lora_r": d.lora_r, "lora_alpha": d.lora_alpha, "lora_dropout": d.lora_dropout,
            "target_modules": d.target_modules, "lr": args.lr or d.learning_rate,
            "epochs": args.epochs or d.epochs, "batch_size": args.batch_size or d.batch_size,
            "grad_accum": args.grad_accum or d.grad_accum, "warmup_ratio": d.warmup_ratio,
            "weight_decay": d.weight_decay, "max_grad_norm": d.max_grad_norm,
            "max_length": args.max_length or d.max_length, "seed": args.seed,
            "profile_batches": args.profile_batches}
    rows = build_rows(args.data, args.rows, args.seed)

    with tempfile.TemporaryDirectory(prefix="vsm-bench-train-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        if args.tiny:
            model_dir = build_tiny_model(work / "tiny-gemma", rows)
            model_name = "tiny 2-layer Gemma3 (hidden 64, BPE vocab trained on the rows)"
        else:
            from training_app.engine.base_models import resolve_base_model

            model_dir = resolve_base_model(args.model, Path(args.cache_dir))
            model_name = f"{args.model} ({model_dir})"
        print(f"model: {model_name}; ready in {time.perf_counter() - t:.1f} s")
        spec["model_dir"] = str(model_dir)
        spec["work"] = str(work)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        (work / "rows.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")

        import torch

        data = data_report(str(model_dir), rows, spec)
        print(f"data: {data['examples']} CMRC-trial QA rows ({args.data}), {data['template']} template, "
              f"{data['len_min']}/{data['len_median']}/{data['len_max']} tokens min/median/max, "
              f"{data['tokens_per_epoch']} tokens/epoch of which {data['label_tokens_per_epoch']} answer "
              f"({data['label_tokens_per_epoch'] / data['tokens_per_epoch']:.0%}); "
              f"{data['dropped']} dropped, {data['truncated']} truncated")
        n_micro = math.ceil(data["examples"] / spec["batch_size"])
        steps = math.ceil(n_micro / spec["grad_accum"]) * spec["epochs"]
        print(f"hyper-parameters (both sides): LoRA r {spec['lora_r']} alpha {spec['lora_alpha']} dropout "
              f"{spec['lora_dropout']} on {spec['target_modules']}; lr {spec['lr']} (warm-up ratio "
              f"{spec['warmup_ratio']}, linear decay), AdamW wd {spec['weight_decay']}, clip "
              f"{spec['max_grad_norm']}; batch {spec['batch_size']} x grad-accum {spec['grad_accum']}; "
              f"max length {spec['max_length']}; {spec['epochs']} epochs = {steps} optimizer steps; "
              f"seed {spec['seed']}; fp32 on CPU, {torch.get_num_threads()} torch threads, "
              f"{os.cpu_count()} CPUs")
        print(f"positions per run: baseline pads to {data['padded_positions']} "
              f"({data['padded_positions'] / data['tokens_total'] - 1:+.0%} over {data['tokens_total']} real "
              f"tokens), LM head on all {data['head_positions_hf']}; VSM packs into {data['packed_positions']}, "
              f"LM head on {data['head_positions_vsm']} labelled positions")
        sys.stdout.flush()

        results = {}
        for name, label in (("load", "load + LoRA wrap only (memory floor)"), ("vsm", "VSM sft.train"),
                            ("hf", "HF Trainer + PEFT")):
            results[name] = run_child(name, spec_path)
            r = results[name]
            extra = f", loop {r['loop_s']:.1f} s" if "loop_s" in r else ""
            if r.get("cpu_stall_s") is not None:
                extra += f", CPU-pressure stall {r['cpu_stall_s']:.0f} s"
            print(f"  ran {label}: child {r['child_wall_s']:.1f} s{extra}, max RSS {r['peak_rss_mb']:.0f} MB")
            sys.stdout.flush()
        if args.profile:
            results["profile"] = run_child("profile", spec_path)

    vsm, hf, floor = results["vsm"], results["hf"], results["load"]["peak_rss_mb"]
    print("\nloss curve (training loss per optimizer step; same examples per step on both sides, so "
          "the token counts match)")
    print(f"{'step':>5s} {'tokens':>8s} {'VSM loss':>9s} {'HF loss':>9s} {'VSM s':>7s} {'HF s':>7s}")
    cum = 0
    for a, b in zip(vsm["steps"], hf["steps"]):
        cum += a["tokens"]
        print(f"{a['step']:5d} {cum:8d} {a['loss']:9.4f} {loss_at(hf['steps'], cum):9.4f} "
              f"{a['step_s']:7.2f} {b['step_s']:7.2f}")

    per_epoch = len(vsm["steps"]) // spec["epochs"]
    last = vsm["steps"][-per_epoch:]
    tok_last, cum = [], 0
    for s in vsm["steps"]:
        cum += s["tokens"]
        tok_last.append(cum)
    tok_last = tok_last[-per_epoch:]
    vsm_last = sum(s["loss"] for s in last) / len(last)
    hf_last = sum(loss_at(hf["steps"], t) for t in tok_last) / len(tok_last)
    vsm_tps, hf_tps = vsm["tokens"] / vsm["loop_s"], hf["tokens"] / hf["loop_s"]
    med = lambda side: sorted(x["tokens"] / x["step_s"] for x in side["steps"])[len(side["steps"]) // 2]
    vsm_med, hf_med = med(vsm), med(hf)
    vsm_e2e, hf_e2e = vsm["tokens"] / vsm["e2e_s"], hf["tokens"] / hf["e2e_s"]
    rows_out = [
        ("real tokens trained", f"{vsm['tokens']}", f"{hf['tokens']}", ""),
        ("train-loop seconds", f"{vsm['loop_s']:.1f}", f"{hf['loop_s']:.1f}", f"{hf['loop_s'] / vsm['loop_s']:.2f}x"),
        ("tokens/s, train loop (headline)", f"{vsm_tps:.1f}", f"{hf_tps:.1f}", f"{vsm_tps / hf_tps:.2f}x"),
        ("tokens/s, median optimizer step", f"{vsm_med:.1f}", f"{hf_med:.1f}", f"{vsm_med / hf_med:.2f}x"),
        ("tokens/s, load+train+save", f"{vsm_e2e:.1f}", f"{hf_e2e:.1f}", f"{vsm_e2e / hf_e2e:.2f}x"),
        ("peak RSS, MB", f"{vsm['peak_rss_mb']:.0f}", f"{hf['peak_rss_mb']:.0f}",
         f"{vsm['peak_rss_mb'] / hf['peak_rss_mb']:.2f}x"),
        (f"peak RSS above load floor ({floor:.0f} MB)", f"{vsm['peak_rss_mb'] - floor:.0f}",
         f"{hf['peak_rss_mb'] - floor:.0f}",
         f"{(vsm['peak_rss_mb'] - floor) / max(hf['peak_rss_mb'] - floor, 1):.2f}x"),
        ("loss, step 1 (before any update)", f"{vsm['steps'][0]['loss']:.4f}", f"{hf['steps'][0]['loss']:.4f}",
         f"{vsm['steps'][0]['loss'] - hf['steps'][0]['loss']:+.4f}"),
        ("loss, mean of last epoch's steps", f"{vsm_last:.4f}", f"{hf_last:.4f}", f"{vsm_last - hf_last:+.4f}"),
        ("loss, final step", f"{vsm['steps'][-1]['loss']:.4f}", f"{hf['steps'][-1]['loss']:.4f}",
         f"{vsm['steps'][-1]['loss'] - hf['steps'][-1]['loss']:+.4f}"),
    ]
    print(f"\n{'':40s} {'VSM sft':>10s} {'HF+PEFT':>10s} {'VSM/HF':>9s}")
    for label, a, b, r in rows_out:
        print(f"{label:40s} {a:>10s} {b:>10s} {r:>9s}")
    print("(loss rows: VSM minus HF at the same token counts; negative = VSM lower)")
    stalls = [results[k].get("cpu_stall_s") for k in ("vsm", "hf")]
    if all(x is not None for x in stalls):
        print(f"CPU-pressure stall during the runs (Linux PSI 'some'): VSM {stalls[0]:.0f} s, HF {stalls[1]:.0f} s "
              "— large or unequal values mean other work shared the cores: rerun. (The median-step row resists "
              "such noise but also drops the baseline's few padding-heavy steps, so it understates VSM.)")
    verdict = vsm_tps / hf_tps >= 1.5 and vsm_last <= hf_last + 0.02
    print(f"\ntarget (issue 5): >= 1.5x the baseline's throughput at an equal or lower loss: "
          f"{'MET' if verdict else 'NOT MET'} ({vsm_tps / hf_tps:.2f}x, last-epoch loss "
          f"{vsm_last:.4f} vs {hf_last:.4f}; 'equal' = within 0.02)")
    if "profile" in results:
        p = results["profile"]
        s = p["seconds"]
        print(f"\nprofile, first {p['micro_batches']} micro-batches of epoch 1 (seconds, forward+backward):")
        print(f"  decoder (LoRA layers + attention): VSM packed {s['vsm_decoder']:.2f}   baseline padded {s['hf_decoder']:.2f}")
        print(f"  LM head + cross-entropy:           VSM labelled {s['vsm_head']:.2f}   baseline all {s['hf_head']:.2f}")
        print(f"  optimizer (AdamW on LoRA params):  {s['optimizer']:.2f}")


if __name__ == "__main__":
    main()
