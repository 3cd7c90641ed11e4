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


def test_a_run_writes_tensorboard_events_linked_from_its_page(domain, bob, version, tiny_models, sent, client):  # noqa: F811
    import io
    import zipfile

    from training_app.engine.explog import read_scalars

    run = services.start_training(domain=domain, dataset_version=version, by=bob,
                                  base_model=str(tiny_models["qwen"]), overrides=FAST)
    run_job(run.job.pk)
    run.refresh_from_db()
    folder = run.path / "tensorboard"
    assert run.metrics["experiment_log"]["tensorboard"].endswith("tensorboard")
    scalars = read_scalars(folder)
    steps = [h["step"] for h in run.metrics["history"]]
    # every optimizer step's loss, the same values the run recorded; one validation loss per epoch
    assert [s for s, _ in scalars["train/loss"]] == steps
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([h["loss"] for h in run.metrics["history"]])
    assert len(scalars["eval/loss"]) == 2 and "train/learning_rate" in scalars

    client.force_login(bob)
    page = client.get(f"/d/{domain.slug}/runs/{run.pk}/").content.decode()
    assert f"/d/{domain.slug}/runs/{run.pk}/tensorboard.zip" in page and "tensorboard --logdir" in page
    response = client.get(f"/d/{domain.slug}/runs/{run.pk}/tensorboard.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert names and all(n.startswith(f"{domain.slug}-run-{run.pk}/events.out.tfevents.") for n in names)


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


def test_cpt_then_sft_runs_as_one_chained_job_and_a_retry_skips_the_finished_stage(
        domain, bob, version, tiny_models, sent):  # noqa: F811
    from .test_distill_jobs import make_chunks

    make_chunks(domain)
    run = services.start_training(domain=domain, dataset_version=version, by=bob, kind="cpt_sft",
                                  base_model=str(tiny_models["gemma"]), overrides=FAST)
    assert run.config["kind"] == "sft"  # the stored config is the fine-tuning stage's
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    run.refresh_from_db()
    model = ModelVersion.objects.get(run=run)
    merged = run.path / "cpt-merged"
    assert model.kind == "cpt_sft" and model.base_path == str(merged) and (merged / "config.json").is_file()
    assert (run.path / "cpt" / "adapter").is_dir() and model.adapter_path.endswith("sft/adapter")
    cpt = run.metrics["stages"]["cpt"]
    assert cpt["steps"] > 0 and run.metrics["steps"] > 0
    # one curve: fine-tuning points continue after the pre-training ones
    history = run.metrics["history"]
    stages = [h["stage"] for h in history]
    assert stages == sorted(stages) and set(stages) == {"cpt", "sft"}
    steps = [h["step"] for h in history]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert "stage 1 of 2" in job.log_tail and "stage 2 of 2" in job.log_tail

    # The adapter answers on top of the merged pre-trained model, as inference will load it.
    from training_app.engine.sft import generate_answers

    answers = generate_answers(run.path / "sft" / "adapter", None, [QA[0]["question"]], max_new_tokens=8)
    assert isinstance(answers[0], str)

    # A retry (the worker died after stage 1) does not pre-train again.
    mtime = (merged / "config.json").stat().st_mtime_ns
    Job.objects.filter(pk=run.job.pk).update(status=Job.Status.QUEUED)
    ModelVersion.objects.filter(run=run).delete()
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "already done" in job.log_tail and (merged / "config.json").stat().st_mtime_ns == mtime


def test_cpt_then_sft_without_documents_fails_clearly(domain, bob, version, tiny_models, sent):  # noqa: F811
    run = services.start_training(domain=domain, dataset_version=version, by=bob, kind="cpt_sft",
                                  base_model=str(tiny_models["qwen"]), overrides=FAST)
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.FAILED and "no document chunks" in job.error
    assert not ModelVersion.objects.exists()


def test_a_kind_needs_its_own_rows_in_the_version(domain, bob, version, sent):
    """A QA-only version cannot train the entity extractor or the judge; the run is refused up front."""
    for kind in ("grpo", "judge_sft"):
        with pytest.raises(ValidationError, match="no (entity|judge) examples"):
            services.start_training(domain=domain, dataset_version=version, by=bob, kind=kind)
    with pytest.raises(ValidationError, match="Unknown training kind"):
        services.start_training(domain=domain, dataset_version=version, by=bob, kind="rlhf")
    assert not TrainingRun.objects.exists() and sent == []


def test_grpo_runs_read_the_versions_entity_examples(domain, bob, sent):
    from datasets_app.models import EntityExample
    from training_app.tasks import training_rows

    dataset = QADataset.default_for(domain)
    dataset_services.add_pair(dataset=dataset, by=bob, approve=True, **QA[0])
    EntityExample.objects.create(domain=domain, dataset=dataset, text="张三在北京工作。", origin_key="a",
                                 spans=[{"label": "name", "start": 0, "end": 1, "mention": "张三"},
                                        {"label": "address", "start": 3, "end": 4, "mention": "北京"}])
    frozen = versions.freeze_dataset(dataset=dataset, by=bob, validation_fraction=0.0).version
    run = TrainingRun(domain=domain, kind="grpo", dataset_version=frozen)
    rows, eval_rows = training_rows(run)
    assert rows == [{"text": "张三在北京工作。", "spans": [
        {"label": "name", "start": 0, "end": 1, "mention": "张三"},
        {"label": "address", "start": 3, "end": 4, "mention": "北京"}]}] and eval_rows == []


def test_with_several_gpus_the_job_trains_data_parallel(domain, bob, version, tiny_models, sent, monkeypatch):  # noqa: F811
    """No GPUs here: the launcher is told there are two and runs two CPU processes over gloo."""
    from training_app.engine import launch

    monkeypatch.setattr(launch, "wants_data_parallel", lambda config: 2)
    run = services.start_training(domain=domain, dataset_version=version, by=bob,
                                  base_model=str(tiny_models["qwen"]), overrides=FAST)
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    assert "data-parallel over 2 GPUs" in job.log_tail
    run.refresh_from_db()
    assert "data-parallel over 2 processes" in run.metrics["notes"]
    assert ModelVersion.objects.get(run=run).adapter_path.endswith("adapter")
    assert job.progress_done == job.progress_total > 0


def test_a_grpo_run_trains_the_entity_extractor_and_records_its_version(domain, bob, tiny_models, sent, data_dir):  # noqa: F811
    from datasets_app.models import EntityExample

    from .training_engine.test_grpo import GRPO_FAST, ROWS

    dataset = QADataset.default_for(domain)
    dataset_services.add_pair(dataset=dataset, by=bob, approve=True, **QA[0])
    for i, row in enumerate(ROWS[:2]):
        EntityExample.objects.create(domain=domain, dataset=dataset, text=row["text"], spans=row["spans"],
                                     origin_key=f"e{i}")
    frozen = versions.freeze_dataset(dataset=dataset, by=bob, validation_fraction=0.0).version
    run = services.start_training(domain=domain, dataset_version=frozen, by=bob, kind="grpo",
                                  base_model=str(tiny_models["gemma"]),
                                  overrides={k: v for k, v in GRPO_FAST.items() if k != "kind"})
    assert run.config["kind"] == "grpo" and run.config["num_generations"] == 2
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    run.refresh_from_db()
    model = ModelVersion.objects.get(run=run)
    assert model.kind == "grpo" and model.adapter_path.endswith("adapter") and run.metrics["steps"] == 2
    assert all("f1_reward" in h for h in run.metrics["history"])
    assert job.progress_done == job.progress_total == 2


def test_a_domain_on_modelscope_records_its_hub_and_fails_offline_naming_it(domain, bob, version, sent,
                                                                            monkeypatch, tmp_path):
    domain.model_hub = "modelscope"
    domain.save()
    run = services.start_training(domain=domain, dataset_version=version, by=bob,
                                  base_model="qwen/Qwen2.5-0.5B-Instruct", overrides=FAST)
    assert run.base_model == "modelscope:qwen/Qwen2.5-0.5B-Instruct"
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.FAILED
    assert "ModelScope model 'qwen/Qwen2.5-0.5B-Instruct'" in job.error and "modelscope download" in job.error
