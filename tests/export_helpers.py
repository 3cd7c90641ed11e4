"""Model versions with (fake) weights on disk and exports with produced files, for the export pages and API.

No model is loaded: the views and the API only check files and rows; the job itself is tested in
``test_export_jobs.py`` on a real tiny model.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from domains.jobs import enqueue_job
from domains.models import Job
from training_app.models import ModelExport, ModelVersion

BASE = "embedded:gemma3-270m"


def version_with_adapter(domain, data_dir: Path, number: int = 1) -> ModelVersion:
    """A LoRA version whose adapter folder and base model folder exist (enough for start_export's checks)."""
    base = data_dir / "models" / "base" / "tiny"
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text("{}")
    adapter = data_dir / "domains" / domain.slug / "runs" / str(number) / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    return ModelVersion.objects.create(domain=domain, number=number, base_model=BASE, base_path=str(base),
                                       adapter_path=str(adapter.relative_to(data_dir)))


def finished_export(domain, version: ModelVersion, data_dir: Path, *, status: str = Job.Status.SUCCEEDED,
                    by=None) -> ModelExport:
    """An export whose job has finished and whose GGUF, Modelfile and archive are on disk (no quantized file)."""
    export = ModelExport.objects.create(domain=domain, model_version=version, gguf_outtype="f16", quantize="",
                                        modelfile=True, merged=False, created_by=by)
    job = enqueue_job(domain=domain, kind="export", params={"export_id": export.pk}, created_by=by)
    Job.objects.filter(pk=job.pk).update(status=status, progress_done=3 if status == Job.Status.SUCCEEDED else 1,
                                         progress_total=3)
    folder = data_dir / "domains" / domain.slug / "exports" / str(export.pk)
    folder.mkdir(parents=True)
    stem = f"{domain.slug}-v{version.number}"
    contents = {"gguf": (f"{stem}-f16.gguf", b"GGUF" + b"\1" * 2044),
                "modelfile": ("Modelfile", f"FROM ./{stem}-f16.gguf\n".encode()),
                "archive": (f"{stem}-export{export.pk}.zip", b"PK\5\6" + b"\0" * 18)}
    files = {}
    for name, (filename, data) in contents.items():
        (folder / filename).write_bytes(data)
        files[name] = {"name": filename, "path": str((folder / filename).relative_to(data_dir)),
                       "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ModelExport.objects.filter(pk=export.pk).update(job=job, output_path=str(folder.relative_to(data_dir)),
                                                    files=files)
    export.refresh_from_db()
    return export
