"""Device, precision and quantization choice for a training run.

CUDA > MPS > CPU; bf16 only where the hardware does it natively (CUDA with bf16), fp32
elsewhere; QLoRA (4-bit) only when asked for *and* CUDA and bitsandbytes are present.
The choice is returned with plain-language notes so the run page can say what happened
instead of failing on a machine without a GPU.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DevicePlan:
    device: str                 # "cuda", "cuda:1", "mps" or "cpu"
    precision: str              # "bf16", "fp16" or "fp32": autocast dtype for the forward pass
    weights_dtype: str          # dtype the base weights are loaded in ("bfloat16"/"float32"/…)
    quantization: str           # "none" or "4bit"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def torch_dtype(self):
        import torch

        return getattr(torch, self.weights_dtype)

    def autocast_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def detect_device(requested: str = "auto") -> tuple[str, list[str]]:
    """The torch device string to train on, plus notes when the request was not honoured."""
    import torch

    notes: list[str] = []
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        if cuda:
            return "cuda", notes
        if mps:
            return "mps", notes
        return "cpu", notes
    if requested.startswith("cuda"):
        if not cuda:
            raise RuntimeError(f"device {requested!r} was requested but CUDA is not available here")
        if ":" in requested and int(requested.split(":")[1]) >= torch.cuda.device_count():
            raise RuntimeError(f"device {requested!r} does not exist ({torch.cuda.device_count()} GPU(s))")
        return requested, notes
    if requested == "mps" and not mps:
        raise RuntimeError("device 'mps' was requested but MPS is not available here")
    return requested, notes


def plan_devices(device: str = "auto", precision: str = "auto", quantization: str = "none",
                 method: str = "lora") -> DevicePlan:
    """Resolve the config's hardware fields into what the trainer actually does."""
    import torch

    dev, notes = detect_device(device)
    kind = dev.split(":")[0]
    bf16_ok = kind == "cuda" and torch.cuda.is_bf16_supported()

    if precision == "auto":
        prec = "bf16" if bf16_ok else "fp32"
    elif precision == "bf16" and kind == "cuda" and not bf16_ok:
        notes.append("bf16 is not supported by this GPU; using fp32")
        prec = "fp32"
    elif precision in ("bf16", "fp16") and kind != "cuda":
        notes.append(f"{precision} mixed precision is only used on CUDA; using fp32 on {kind}")
        prec = "fp32"
    else:
        prec = precision

    quant = "none"
    if quantization == "4bit":
        if kind != "cuda":
            notes.append("4-bit QLoRA needs CUDA; training without quantization")
        elif not bitsandbytes_available():
            notes.append("4-bit QLoRA needs bitsandbytes, which is not installed; training without quantization")
        elif method != "lora":
            notes.append("4-bit QLoRA only works with LoRA; training without quantization")
        else:
            quant = "4bit"

    # LoRA keeps the frozen base in the low-precision dtype (memory) and the adapter in
    # fp32; full fine-tuning keeps fp32 master weights and autocasts the forward pass.
    if prec == "bf16" and method == "lora":
        weights = "bfloat16"
    else:
        weights = "float32"
    if quant == "4bit":
        notes.append("QLoRA: base weights loaded in 4-bit NF4 with bitsandbytes")
    return DevicePlan(device=dev, precision=prec, weights_dtype=weights, quantization=quant,
                      notes=tuple(notes))
