"""ONNX export of a sentence-embedding model, in float32 and int8, checked against PyTorch.

``export_embedding_onnx(model_dir, out_dir)`` traces the whole sentence-transformers pipeline
(transformer, pooling, normalisation) into one ``model.onnx`` whose output is the sentence
embedding, writes ``model_int8.onnx`` with int8 weights (``quantize_int8``),
saves the tokenizer beside them with a ``vsm_onnx.json`` manifest, and checks both against the
PyTorch embeddings of sample texts: each text's cosine must reach ``min_cosine`` (0.99). A float32
model below it fails the export and leaves nothing under ``out_dir``; an int8 model below it is
dropped, and ``rejected`` says why, so the float32 export still stands.

``OnnxEncoder(out_dir)`` encodes texts with onnxruntime and the saved tokenizer only (no
torch), which is what a retrieval service on another platform needs. No Django here.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .export import ExportError, _replace_dir

MANIFEST = "vsm_onnx.json"
FP32, INT8 = "model.onnx", "model_int8.onnx"
MIN_COSINE = 0.99
OPSET = 17
# Checked on both languages VSM serves, with numbers and codes as users write them.
SAMPLE_TEXTS = (
    "报销单据金额在3000元及以上的，需要签订合同或协议。",
    "差旅费报销应在出差结束后三十日内办理。",
    "单张发票金额超过10,000元须附合同复印件。",
    "Fault E100.1: output over-current during acceleration; check the motor cable for a short circuit.",
    "Set parameter P0-01 to 2 for sensorless vector control.",
    "How long is the warranty of the drive?",
    "A short query",
    "The inverter trips with E200 when the DC bus voltage is too high during deceleration.",
)


@dataclass
class OnnxResult:
    out_dir: str
    files: dict[str, str]            # fp32 / int8 → path
    bytes: dict[str, int]
    dim: int
    max_seq_length: int
    min_cosine: dict[str, float]     # fp32 / int8 → the lowest cosine against PyTorch over the sample texts
    mean_cosine: dict[str, float]
    texts: int
    seconds: float
    rejected: dict[str, str]         # int8 → why it was not kept (below min_cosine), when it was not

    def to_dict(self) -> dict:
        return asdict(self)


class _Pipeline:
    """The sentence-transformers model as one module from token ids to the sentence embedding."""

    def __new__(cls, model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self, st):
                super().__init__()
                self.st = st

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                features = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    features["token_type_ids"] = token_type_ids
                return self.st(features)["sentence_embedding"]

        return Wrapped(model)


def _cosines(a, b) -> list[float]:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return [float(x) for x in num / np.maximum(den, 1e-12)]


def export_embedding_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, int8: bool = True,
                          texts: Sequence[str] = SAMPLE_TEXTS, min_cosine: float = MIN_COSINE,
                          opset: int = OPSET) -> OnnxResult:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise ExportError(f"The embedding model folder {model_dir} does not exist.")
    t0 = time.time()
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        st = SentenceTransformer(str(model_dir), device="cpu")
    except Exception as exc:  # not a sentence-transformers folder, corrupt weights
        raise ExportError(f"{model_dir} could not be loaded as a sentence-embedding model: {exc}") from exc
    st.eval()
    tokenizer = st.tokenizer
    max_len = int(st.max_seq_length or 256)
    sample = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    with torch.no_grad():
        reference = st.encode(list(texts), convert_to_numpy=True, normalize_embeddings=False, batch_size=len(texts))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        fp32 = tmp / FP32
        inputs = tuple(sample[n] for n in names)
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        axes["sentence_embedding"] = {0: "batch"}
        with torch.no_grad():
            torch.onnx.export(_Pipeline(st), inputs, str(fp32), input_names=names,
                              output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=opset,
                              dynamo=False)
        files = {"fp32": fp32}
        if int8:
            quantize_int8(fp32, tmp / INT8)
            files["int8"] = tmp / INT8
        tokenizer.save_pretrained(str(tmp))
        dim = int(reference.shape[1])
        manifest = {"format": "vsm-onnx-embedding/1", "inputs": names, "output": "sentence_embedding",
                    "dim": dim, "max_seq_length": max_len, "files": {k: v.name for k, v in files.items()},
                    "source": str(model_dir)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        low, mean, rejected = {}, {}, {}
        for kind in list(files):
            got = OnnxEncoder(tmp, kind=kind).encode(list(texts), normalize=False)
            cos = _cosines(reference, got)
            low[kind], mean[kind] = round(min(cos), 6), round(sum(cos) / len(cos), 6)
            if min(cos) < min_cosine:
                worst = texts[cos.index(min(cos))]
                reason = (f"The {kind} ONNX model does not reproduce the PyTorch embeddings: cosine "
                          f"{min(cos):.4f} < {min_cosine} on {worst[:60]!r}.")
                if kind == "fp32":
                    raise ExportError(reason)
                # int8 loses too much on this model: the float32 export stands alone, and says why
                rejected[kind] = reason
                files.pop(kind).unlink()
                manifest["files"].pop(kind)
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    except ExportError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"ONNX export of {model_dir} failed: {type(exc).__name__}: {exc}") from exc
    _replace_dir(tmp, out_dir)
    return OnnxResult(out_dir=str(out_dir), files={k: str(out_dir / v.name) for k, v in files.items()},
                      bytes={k: (out_dir / v.name).stat().st_size for k, v in files.items()}, dim=dim,
                      max_seq_length=max_len, min_cosine=low, mean_cosine=mean, texts=len(texts),
                      seconds=round(time.time() - t0, 2), rejected=rejected)


def quantize_int8(src: Path, dst: Path, *, block_size: int = 32) -> Path:
    """int8 weights, float activations: the embedding table through onnxruntime's dynamic
    quantisation (Gather only), then every MatMul weight as 8-bit blocks of ``block_size``
    (MatMulNBits). On all-MiniLM-L6-v2 this keeps the lowest cosine to PyTorch at 0.998 over the
    sample texts at a quarter of the size, where onnxruntime's full dynamic int8 (activations
    quantised too) fell to 0.987 on Chinese text (measured, see bench/README.md)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    gathered = dst.with_name(dst.name + ".gather")
    try:
        quantize_dynamic(str(src), str(gathered), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["Gather"])
        quantizer = MatMulNBitsQuantizer(onnx.load(str(gathered)), bits=8, block_size=block_size, is_symmetric=True,
                                         op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), False)
    finally:
        gathered.unlink(missing_ok=True)
    return dst


class OnnxEncoder:
    """Sentence embeddings from an exported folder with onnxruntime and the saved tokenizer."""

    def __init__(self, folder: str | os.PathLike, *, kind: str = "fp32"):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if kind not in manifest["files"]:
            raise ExportError(f"{folder} has no {kind} model (it has {', '.join(manifest['files'])}).")
        self.manifest = manifest
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / manifest["files"][kind]), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]  # an input the graph never used is dropped

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, normalize: bool = True):
        import numpy as np

        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                 max_length=self.manifest["max_seq_length"], return_tensors="np")
            feed = {name: (enc[name] if name in enc else np.zeros_like(enc["input_ids"])).astype(np.int64)
                    for name in self.inputs}
            out.append(self.session.run(["sentence_embedding"], feed)[0])
        vectors = np.concatenate(out) if out else np.zeros((0, self.manifest["dim"]), dtype=np.float32)
        if normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
