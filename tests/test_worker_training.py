"""A training run on a real qcluster worker, killed with -9 mid-run, resumes from its last checkpoint."""
from __future__ import annotations

import os
import signal

import pytest

from datasets_app import services as dataset_services
from datasets_app import versions
from datasets_app.models import QADataset
from domains.jobs import reap_stale_jobs
from domains.models import Job
from training_app import services
from training_app.models import ModelVersion

from .test_worker import LEASE, _job, _wait, cluster  # noqa: F401 - the fixture is used by name
from .training_engine.conftest import QA, tiny_models, tiny_tokenizers  # noqa: F401

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_killed_training_resumes_from_its_checkpoint(data_dir, cluster, domain, bob, tiny_models):  # noqa: F811
    _proc, log = cluster
    dataset = QADataset.default_for(domain)
    for row in QA:
        dataset_services.add_pair(dataset=dataset, by=bob, approve=True, **row)
    version = versions.freeze_dataset(dataset=dataset, by=bob).version
    run = services.start_training(domain=domain, dataset_version=version, by=bob,
                                  base_model=str(tiny_models["qwen"]),
                                  overrides={"epochs": 150, "batch_size": 4, "grad_accum": 1, "learning_rate": 1e-3,
                                             "save_every_steps": 10, "log_every_steps": 1})
    running = _wait(lambda: (j := _job(run.job.pk)).status == Job.Status.RUNNING and j.progress_done >= 30 and j,
                    120, log, "training to pass step 30")
    os.kill(int(running.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    _wait(lambda: Job.objects.stale().filter(pk=run.job.pk).exists(), 5 * LEASE, log, "the lease to expire")
    assert reap_stale_jobs()["requeued"] == 1

    done = _wait(lambda: _job(run.job.pk).is_finished and _job(run.job.pk), 240, log, "the resumed run to finish")
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert done.attempts == 2
    assert done.result["resumed_from_step"] >= 10  # not from scratch
    assert done.result["steps"] == done.progress_total
    assert ModelVersion.objects.filter(run_id=run.pk).count() == 1
