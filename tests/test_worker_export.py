"""An export on a real qcluster worker, killed with -9 after its merge step: the retry keeps the
merged weights, redoes the interrupted step, and every recorded artifact is whole."""
from __future__ import annotations

import os
import signal

import pytest

from domains.jobs import reap_stale_jobs
from domains.models import Job
from training_app import services
from training_app.engine.base_models import file_sha256
from training_app.models import ModelExport

from .test_export_jobs import converter_or_skip, lora_adapter, make_version  # noqa: F401 - fixture used by name
from .test_worker import LEASE, _job, _wait, cluster  # noqa: F401 - the fixture is used by name
from .training_engine.tiny_gemma import gemma_tokenizer_dir, tiny_gemma_gguf  # noqa: F401

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_killed_export_resumes_after_its_finished_steps(data_dir, cluster, domain, bob, tiny_gemma_gguf,  # noqa: F811
                                                        lora_adapter):  # noqa: F811
    converter_or_skip()
    _proc, log = cluster
    version = make_version(domain, data_dir, lora_adapter, tiny_gemma_gguf)
    export = services.start_export(domain=domain, model_version=version, by=bob, gguf_outtype="f16",
                                   quantize="Q4_K_M", modelfile=True, merged=True)
    running = _wait(lambda: (j := _job(export.job.pk)).status == Job.Status.RUNNING and j.progress_done >= 1 and j,
                    120, log, "the merge to finish")
    os.kill(int(running.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    if _job(export.job.pk).is_finished:
        pytest.fail("the export finished before the worker was killed; the test needs a slower step")
    _wait(lambda: Job.objects.stale().filter(pk=export.job.pk).exists(), 5 * LEASE, log, "the lease to expire")
    assert reap_stale_jobs()["requeued"] == 1

    done = _wait(lambda: _job(export.job.pk).is_finished and _job(export.job.pk), 240, log, "the retry to finish")
    assert done.status == Job.Status.SUCCEEDED, done.error + done.log_tail
    assert done.attempts == 2 and "merged weights already there" in done.log_tail
    export = ModelExport.objects.get(pk=export.pk)
    assert sorted(export.files) == ["archive", "gguf", "merged", "modelfile", "quantized"]
    for name in ("archive", "gguf", "quantized", "modelfile"):
        path = export.artifact_file(name)
        assert path is not None and export.files[name]["sha256"] == file_sha256(path), name
        assert not path.name.startswith("."), name  # never a temp name
    with open(export.artifact_file("gguf"), "rb") as fh:
        assert fh.read(4) == b"GGUF"
