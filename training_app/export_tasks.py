"""The export job: merged safetensors, GGUF, a quantized GGUF, an Ollama Modelfile and one archive.

Each step writes under ``VSM_DATA_DIR/domains/<slug>/exports/<id>/`` to a temp name and renames
it when whole, so a finished file is always complete. A retried job (its worker died) skips the
steps whose output is already there and redoes the rest; a cancel stops between steps and keeps
what is finished. The engine (``training_app.engine.export``) does the work; this module only
loads rows, calls it and records paths, sizes and hashes on the ``ModelExport``.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from domains.jobs import JobContext, job_handler
from training_app.engine.base_models import file_sha256
from training_app.models import ModelExport, ModelVersion
from training_app.services import export_dir, export_source

logger = logging.getLogger("vsm.export")

MESSAGES = {
    "merge": gettext_noop("Merging the adapter into the base model"),
    "copy": gettext_noop("Copying the model weights"),
    "convert": gettext_noop("Converting to GGUF"),
    "quantize": gettext_noop("Quantizing the GGUF"),
    "modelfile": gettext_noop("Writing the Ollama Modelfile"),
    "archive": gettext_noop("Packaging the archive"),
    "onnx": gettext_noop("Exporting to ONNX and checking it against PyTorch"),
}
# Files of the merged folder that stay on the server (vsm_merge.json holds server paths).
PRIVATE_FILES = {"vsm_merge.json"}


def _rel(path: Path) -> str:
    return os.path.relpath(path, settings.VSM_DATA_DIR)


def _info(path: Path, name: str | None = None) -> dict:
    return {"name": name or path.name, "path": _rel(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


def _clean_temps(folder: Path) -> None:
    """Remove what an attempt that died left half-written (every temp name starts with a dot)."""
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link an artifact (they are never edited in place, only replaced), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _copy_model(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*"))
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def chat_template_of(folder: Path | None) -> str | None:
    """The tokenizer's Jinja chat template saved in a model folder, if any."""
    if folder is None:
        return None
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": …}, …]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template:
            return template
    return None


def _merged_info(merged_dir: Path, stem: str) -> dict:
    """The merged weights as a download (single-file weights only; sharded ones come in the archive)."""
    weights = merged_dir / "model.safetensors"
    files = sorted(p for p in merged_dir.iterdir() if p.is_file() and p.name not in PRIVATE_FILES
                   and not p.name.startswith("."))
    info = {"name": f"{stem}.safetensors", "path": "", "bytes": None, "sha256": "", "folder": _rel(merged_dir),
            "files": [{"name": p.name, "bytes": p.stat().st_size} for p in files],
            "total_bytes": sum(p.stat().st_size for p in files)}
    if weights.is_file():
        info.update(path=_rel(weights), bytes=weights.stat().st_size, sha256=file_sha256(weights))
    return info


@job_handler("export", _("Export a model"))
def export_model(ctx: JobContext) -> dict:
    from training_app.engine import export as engine

    export = ModelExport.objects.select_related("domain", "model_version").filter(
        pk=ctx.params.get("export_id"), domain=ctx.domain).first()
    if export is None:
        ctx.fail("The export was deleted before it started.")
    version = export.model_version
    out = export_dir(export)
    out.mkdir(parents=True, exist_ok=True)
    _clean_temps(out)
    if export.output_path != _rel(out):
        ModelExport.objects.filter(pk=export.pk).update(output_path=_rel(out))

    if export.onnx:
        return _export_onnx(ctx, export, version, out)

    # Fail before any work when a tool a later step needs is missing.
    if export.gguf_outtype:
        try:
            engine.find_converter()
        except engine.ExportError as exc:
            ctx.fail(str(exc))
    if export.quantize and importlib.util.find_spec("llama_cpp") is None:
        ctx.fail(f"Quantizing to {export.quantize} needs llama-cpp-python: install it with "
                 "`pip install llama-cpp-python` (it compiles llama.cpp, several minutes), or export "
                 "without quantization.")

    stem = f"{export.domain.slug}-v{version.number}"
    merged_dir = out / "merged"
    gguf = out / f"{stem}-{export.gguf_outtype}.gguf"
    quantized = out / f"{stem}-{export.quantize}.gguf"
    modelfile = out / "Modelfile"
    archive = out / f"{stem}-export{export.pk}.zip"
    steps = ["merge"] + (["convert"] if export.gguf_outtype else []) + (["quantize"] if export.quantize else []) \
        + (["modelfile"] if export.modelfile else []) + ["archive"]
    files = dict(export.files or {})

    def record(name: str, info: dict) -> None:
        files[name] = info
        ModelExport.objects.filter(pk=export.pk).update(files=files)

    def begin(i: int, step: str, message_key: str | None = None) -> None:
        # A message change always writes, and checks for a cancel first: this is where a cancel stops the job.
        ctx.progress(i, len(steps), message=MESSAGES[message_key or step])

    def run(func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except engine.ExportError as exc:
            ctx.fail(str(exc))

    # 1. merged weights
    if (merged_dir / "config.json").is_file():
        begin(0, "merge")
        ctx.log("merged weights already there (an earlier attempt); keeping them")
    else:
        try:
            source, folder, base = export_source(version)
        except ValidationError as exc:
            ctx.fail(" ".join(exc.messages))
        begin(0, "merge" if source == "adapter" else "copy")
        if source == "adapter":
            ctx.log(f"merging {_rel(folder)} into {base}")
            run(engine.merge_adapter, base, folder, merged_dir)
        else:
            ctx.log(f"copying the {'merged' if source == 'merged' else 'fine-tuned'} weights from {_rel(folder)}")
            _copy_model(folder, merged_dir)
    version.refresh_from_db(fields=["merged_path"])
    if not (version.merged_path and (settings.VSM_DATA_DIR / version.merged_path / "config.json").is_file()):
        ModelVersion.objects.filter(pk=version.pk).update(merged_path=_rel(merged_dir))
    if export.merged:
        record("merged", _merged_info(merged_dir, stem))

    # 2. GGUF at the chosen type
    i = 1
    if export.gguf_outtype:
        begin(i, "convert")
        if _is_gguf(gguf):
            ctx.log(f"{gguf.name} already there; keeping it")
        else:
            result = run(engine.export_gguf, merged_dir, gguf, export.gguf_outtype, None)
            ctx.log(f"{gguf.name}: {result.gguf_bytes} bytes in {result.convert_seconds}s")
        record("gguf", _info(gguf))
        i += 1

    # 3. quantized GGUF, always from a float GGUF (q8_0 is not re-quantized)
    if export.quantize:
        begin(i, "quantize")
        if _is_gguf(quantized):
            ctx.log(f"{quantized.name} already there; keeping it")
        elif export.gguf_outtype in engine.FLOAT_OUTTYPES:
            run(engine.quantize_gguf, gguf, quantized, export.quantize)
        else:
            source_f16 = out / f".{stem}-f16-for-quantize.gguf"
            try:
                run(engine.export_gguf, merged_dir, source_f16, "f16", None)
                run(engine.quantize_gguf, source_f16, quantized, export.quantize)
            finally:
                source_f16.unlink(missing_ok=True)
        record("quantized", _info(quantized))
        ctx.log(f"{quantized.name}: {quantized.stat().st_size} bytes")
        i += 1

    # 4. Ollama Modelfile with the chat template the model was trained with
    if export.modelfile:
        begin(i, "modelfile")
        template = chat_template_of(merged_dir) or chat_template_of(Path(version.base_path) if version.base_path
                                                                    else None)
        temperature = (version.config or {}).get("generation_temperature")
        text = run(engine.ollama_modelfile, (quantized if export.quantize else gguf).name, template,
                   params={"temperature": temperature} if isinstance(temperature, (int, float)) else None)
        tmp = modelfile.with_name(f".{modelfile.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, modelfile)
        record("modelfile", _info(modelfile))
        i += 1

    # 5. one archive of everything chosen, with SHA256SUMS
    begin(i, "archive")
    manifest = out / "vsm_export.json"
    items: dict[str, Path] = {}
    if export.merged:
        for p in sorted(merged_dir.iterdir()):
            if p.is_file() and p.name not in PRIVATE_FILES and not p.name.startswith("."):
                items[f"merged/{p.name}"] = p
    for name in ("gguf", "quantized", "modelfile"):
        if name in files:
            items[files[name]["name"]] = settings.VSM_DATA_DIR / files[name]["path"]
    if archive.is_file() and "archive" in files:
        ctx.log(f"{archive.name} already there; keeping it")
    else:
        meta = {"domain": export.domain.slug, "model_version": version.number, "kind": version.kind,
                "base_model": version.base_model, "dataset_hash": version.dataset_hash, "formats": export.formats,
                "files": {name: {k: v for k, v in info.items() if k in ("name", "bytes", "sha256")}
                          for name, info in files.items()}}
        tmp = manifest.with_name(f".{manifest.name}.tmp")
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, manifest)
        items["vsm_export.json"] = manifest
        run(engine.package_export, items, archive)
    record("archive", _info(archive))
    ctx.progress(len(steps), len(steps), message=gettext_noop("Done"))
    ctx.log(f"export #{export.pk} of v{version.number}: {', '.join(sorted(files))}")
    return {"export_id": export.pk, "model_version": version.number,
            "files": {name: info.get("bytes") for name, info in files.items()}}


def _export_onnx(ctx: JobContext, export: ModelExport, version: ModelVersion, out: Path) -> dict:
    """An embedding version as ONNX, float32 and int8, each checked against the PyTorch embeddings,
    and one archive with the tokenizer (what onnxruntime needs on another platform)."""
    from training_app.engine import export as engine
    from training_app.engine.onnx_export import export_embedding_onnx
    from training_app.services import embedding_export_source

    stem = f"{export.domain.slug}-v{version.number}"
    folder = out / "onnx"
    archive = out / f"{stem}-onnx-export{export.pk}.zip"
    files = dict(export.files or {})
    ctx.progress(0, 2, message=MESSAGES["onnx"])
    manifest = folder / "vsm_onnx.json"
    if manifest.is_file() and "onnx" in files:
        ctx.log("the ONNX models are already there (an earlier attempt); keeping them")
    else:
        try:
            source = embedding_export_source(version)
            result = export_embedding_onnx(source, folder)
        except ValidationError as exc:
            ctx.fail(" ".join(exc.messages))
        except engine.ExportError as exc:
            ctx.fail(str(exc))
        for kind, reason in result.rejected.items():
            ctx.log(f"{kind} not kept: {reason}")
        for kind, name in (("fp32", "onnx"), ("int8", "onnx_int8")):
            if kind not in result.files:
                continue
            path = Path(result.files[kind])
            files[name] = {**_info(path, f"{stem}-{path.name}"), "min_cosine": result.min_cosine[kind],
                           "mean_cosine": result.mean_cosine[kind]}
            ctx.log(f"{path.name}: {result.bytes[kind]} bytes, cosine to PyTorch ≥ {result.min_cosine[kind]:.4f} "
                    f"over {result.texts} sample texts")
        ModelExport.objects.filter(pk=export.pk).update(files=files)
    ctx.progress(1, 2, message=MESSAGES["archive"])
    if not (archive.is_file() and "archive" in files):
        items = {f"onnx/{p.name}": p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
        engine.package_export(items, archive)
    files["archive"] = _info(archive)
    ModelExport.objects.filter(pk=export.pk).update(files=files)
    ctx.progress(2, 2, message=gettext_noop("Done"))
    return {"export_id": export.pk, "model_version": version.number,
            "files": {name: info.get("bytes") for name, info in files.items()},
            "min_cosine": {name: files[name].get("min_cosine") for name in ("onnx", "onnx_int8") if name in files}}
