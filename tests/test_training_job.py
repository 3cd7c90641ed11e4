"""The training job end to end in-process, on a tiny model: frozen dataset → run → model version."""
from __future__ import annotations

import shutil

import pytest
from django.core.exceptions import ValidationError

from datasets_app import services as dataset_services
from datasets_app import versions
from datasets_app.models import QADataset
from domains.jobs import run_job
from domains.models import Job
from training_app import services
from training_app.models import ModelVersion, TrainingRun

from .training_engine.conftest import QA, tiny_models, tiny_tokenizers  # noqa: F401 - fixtures used by name

FAST = {"epochs": 2, "batch_size": 4, "grad_accum": 1, "learning_rate": 5e-3, "save_every_steps": 2,
        "log_every_steps": 1, "lora_r": 8}


@pytest.fixture
def version(domain, bob, data_dir):
    dataset = QADataset.default_for(domain)
    for row in QA:
        dataset_services.add_pair(dataset=dataset, by=bob, approve=True, **row)
    return versions.freeze_dataset(dataset=dataset, by=bob, validation_fraction=0.25).version


def test_a_run_trains_and_records_a_model_version(domain, bob, version, tiny_models, sent):  # noqa: F811
    run = services.start_training(domain=domain, dataset_version=version, by=bob,
                                  base_model=str(tiny_models["qwen"]), overrides=FAST)
    assert run.job.status == Job.Status.QUEUED and run.job.params == {"run_id": run.pk}
    assert run.config["epochs"] == 2 and run.dataset_hash == version.content_hash
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    run.refresh_from_db()
    model = ModelVersion.objects.get(run=run)
    assert model.number == 1 and model.dataset_hash == version.content_hash and model.kind == "sft"
    assert (run.path / "adapter").is_dir() and str(run.path / "adapter").endswith(model.adapter_path)
    history = run.metrics["history"]
    assert history and history[-1]["loss"] < history[0]["loss"]  # it learned something
    assert job.result["model_version"] == 1 and job.result["steps"] == run.metrics["steps"]
    assert "val_loss" in job.result or run.metrics["best_val_loss"] is not None
    assert job.progress_done == job.progress_total > 0


def test_a_missing_base_model_is_refused_before_any_work(domain, bob, version, tmp_path, sent):
    with pytest.raises(ValidationError, match="does not exist"):
        services.start_training(domain=domain, dataset_version=version, by=bob, base_model=str(tmp_path / "nope"))
    with pytest.raises(ValidationError, match="config.json"):
        services.start_training(domain=domain, dataset_version=version, by=bob, base_model=str(tmp_path))
    with pytest.raises(ValidationError, match="learning_rate"):
        services.start_training(domain=domain, dataset_version=version, by=bob, overrides={"learning_rate": -1})
    assert not TrainingRun.objects.exists() and sent == []


def test_a_base_model_that_vanished_fails_the_job_clearly(domain, bob, version, tiny_models, tmp_path, sent):  # noqa: F811
    copy = tmp_path / "model"
    shutil.copytree(tiny_models["qwen"], copy)
    run = services.start_training(domain=domain, dataset_version=version, by=bob, base_model=str(copy),
                                  overrides=FAST)
    shutil.rmtree(copy)
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.FAILED and str(copy) in job.error
    assert not ModelVersion.objects.exists()


def test_another_domains_dataset_version_is_refused(domain, other_domain, charlie, bob, version, sent):
    with pytest.raises(ValidationError, match="another domain"):
        services.start_training(domain=other_domain, dataset_version=version, by=charlie)
