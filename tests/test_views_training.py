"""Training pages: run list with the start form, run detail with live progress and the loss-curve SVG,
model versions with lineage and promote/demote; roles and other-tenant ids."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from datasets_app.models import QADataset
from datasets_app.services import add_pair
from datasets_app.versions import freeze_dataset
from domains.jobs import enqueue_job
from domains.models import Job
from training_app.engine.config import TrainConfig
from training_app.models import ModelVersion, TrainingRun
from training_app.views import loss_plot

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
BASE = "embedded:gemma3-270m"


def start_data(version, **extra) -> dict:
    d = TrainConfig()
    data = {"dataset_version": version.pk, "kind": "sft", "base_model": BASE, "preset": "",
            "epochs": d.epochs, "learning_rate": d.learning_rate, "lora_r": d.lora_r, "lora_alpha": d.lora_alpha,
            "batch_size": d.batch_size, "grad_accum": d.grad_accum, "max_length": d.max_length}
    data.update(extra)
    return data


@pytest.fixture
def version(domain, alice, data_dir):
    dataset = QADataset.default_for(domain)
    add_pair(dataset=dataset, by=alice, question="差旅费报销需要哪些材料？", answer="发票和审批单。", approve=True)
    add_pair(dataset=dataset, by=alice, question="报销期限是多久？", answer="返回后30天内。", approve=True)
    return freeze_dataset(dataset=dataset, by=alice).version


@pytest.fixture
def pig_run(other_domain):
    return TrainingRun.objects.create(domain=other_domain, base_model=BASE, config={})


@pytest.fixture
def pig_model(other_domain):
    return ModelVersion.objects.create(domain=other_domain, number=1, base_model=BASE)


HISTORY = [{"step": s, "epoch": round(s / 4, 2), "loss": 3.0 - 0.2 * s, "learning_rate": 2e-4, "tokens_per_s": 900.0}
           for s in range(1, 9)]
VAL_HISTORY = [{"epoch": 1, "step": 4, "val_loss": 2.5}, {"epoch": 2, "step": 8, "val_loss": 2.0}]


@pytest.fixture
def finished_run(domain, version, alice):
    job = enqueue_job(domain=domain, kind="train", params={}, created_by=alice)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, progress_done=8, progress_total=8,
                                         log_tail="step 8 loss 1.4")
    run = TrainingRun.objects.create(
        domain=domain, base_model=BASE, dataset_version=version, dataset_hash=version.content_hash,
        config=TrainConfig(epochs=2).to_dict(), job=job,
        metrics={"history": HISTORY, "val_history": VAL_HISTORY, "final_train_loss": 1.4, "best_val_loss": 2.0,
                 "best_epoch": 2, "steps": 8, "elapsed_s": 75},
    )
    ModelVersion.objects.create(domain=domain, number=1, run=run, base_model=BASE, dataset_hash=version.content_hash,
                                config=run.config, metrics={"final_train_loss": 1.4, "best_val_loss": 2.0},
                                adapter_path="domains/finance/runs/1/model")
    return run


# Run list and start form ------------------------------------------------------------------------


def test_list_shows_runs_and_the_form_only_to_experts(client_as, alice, bob, vera, finished_run):
    response = client_as(vera).get(reverse("training-list", args=["finance"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-run="{finished_run.pk}"' in html and "1.4000" in html
    assert reverse("version-detail", args=["finance", finished_run.dataset_version.pk]) in html
    assert 'id="training-form"' not in html
    html = client_as(bob).get(reverse("training-list", args=["finance"])).content.decode()
    assert 'id="training-form"' in html
    assert 'value="embedded:gemma3-270m"' in html and 'name="lora_r" value="8"' in html


def test_start_creates_a_run_and_a_queued_job_with_the_overrides(client_as, bob, domain, version, sent):
    response = client_as(bob).post(reverse("training-start", args=["finance"]),
                                   start_data(version, epochs=5, lora_r=16, learning_rate=0.0001))
    run = TrainingRun.objects.get(domain=domain)
    assert response.status_code == 302
    assert response["Location"] == reverse("training-detail", args=["finance", run.pk])
    assert run.job.status == Job.Status.QUEUED and run.job.kind == "train"
    assert run.job.params == {"run_id": run.pk}
    assert (run.config["epochs"], run.config["lora_r"], run.config["learning_rate"]) == (5, 16, 0.0001)
    assert run.config["lora_alpha"] == 16 and run.dataset_hash == version.content_hash
    assert run.created_by == bob


def test_a_preset_fills_the_fields_left_at_their_default(client_as, bob, domain, version, sent):
    client_as(bob).post(reverse("training-start", args=["finance"]),
                        start_data(version, preset="high_precision", max_length=256))
    run = TrainingRun.objects.get(domain=domain)
    assert (run.config["preset"], run.config["epochs"], run.config["lora_r"], run.config["max_length"]) == (
        "high_precision", 6, 16, 256)


def test_a_bad_base_model_shows_the_error_and_creates_nothing(client_as, bob, version, sent, tmp_path):
    missing = str(tmp_path / "no-such-model")
    response = client_as(bob).post(reverse("training-start", args=["finance"]),
                                   start_data(version, base_model=missing))
    assert response.status_code == 400
    form = response.context["form"]
    assert "does not exist" in " ".join(form.errors["base_model"])
    assert "does not exist on this machine" in response.content.decode()
    assert not TrainingRun.objects.exists() and not Job.objects.filter(kind="train").exists() and sent == []


def test_an_engine_config_error_lands_beside_its_field(client_as, bob, version, sent):
    response = client_as(bob).post(reverse("training-start", args=["finance"]),
                                   start_data(version, lora_r=0))
    assert response.status_code == 400 and "lora_r" in response.context["form"].errors
    assert not TrainingRun.objects.exists()


def test_sft_without_a_version_is_refused_on_the_form(client_as, bob, version, sent):
    response = client_as(bob).post(reverse("training-start", args=["finance"]), start_data(version, dataset_version=""))
    assert response.status_code == 400 and "dataset_version" in response.context["form"].errors
    assert not TrainingRun.objects.exists()


def test_another_domains_version_is_not_a_choice(client_as, bob, charlie, other_domain, version, sent):
    dataset = QADataset.default_for(other_domain)
    add_pair(dataset=dataset, by=charlie, question="How often are piglets fed?", answer="Every 3 hours.", approve=True)
    theirs = freeze_dataset(dataset=dataset, by=charlie).version
    response = client_as(bob).post(reverse("training-start", args=["finance"]),
                                   start_data(version, dataset_version=theirs.pk))
    assert response.status_code == 400 and "dataset_version" in response.context["form"].errors
    assert not TrainingRun.objects.exists()


def test_viewers_cannot_start_training(client_as, vera, version, sent):
    response = client_as(vera).post(reverse("training-start", args=["finance"]), start_data(version))
    assert response.status_code == 403 and not TrainingRun.objects.exists()


def test_the_row_poll_stops_with_286_once_the_job_is_finished(client_as, vera, domain, finished_run):
    client = client_as(vera)
    response = client.get(reverse("training-list", args=["finance"]), {"run": finished_run.pk}, **HTMX)
    assert response.status_code == 286 and f'id="run-{finished_run.pk}"' in response.content.decode()
    running = TrainingRun.objects.create(domain=domain, base_model=BASE, config={},
                                         job=enqueue_job(domain=domain, kind="train", params={}))
    response = client.get(reverse("training-list", args=["finance"]), {"run": running.pk}, **HTMX)
    assert response.status_code == 200 and 'hx-trigger="every 2s"' in response.content.decode()


# Run detail -----------------------------------------------------------------------------------


def test_detail_draws_the_loss_curve_with_one_point_per_history_entry(client_as, vera, finished_run):
    response = client_as(vera).get(reverse("training-detail", args=["finance", finished_run.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    polyline = re.search(r'<polyline class="train-loss"[^>]* points="([^"]+)"', html)
    assert polyline is not None
    assert len(polyline.group(1).split()) == len(HISTORY)
    assert html.count('class="val-loss"') == len(VAL_HISTORY)
    assert 'class="tick x-tick"' in html and 'class="tick y-tick"' in html
    assert reverse("version-detail", args=["finance", finished_run.dataset_version.pk]) in html
    assert reverse("model-detail", args=["finance", finished_run.model_version.pk]) in html
    assert "step 8 loss 1.4" in html  # the log tail
    assert 'data-key="epochs"' in html  # the config table
    assert "hx-get" not in html  # a finished run is not polled


def test_a_running_run_shows_live_numbers_polls_and_can_be_cancelled(client_as, bob, vera, domain, version):
    job = enqueue_job(domain=domain, kind="train", params={})
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, progress_done=5, progress_total=20,
        result={"step": 5, "total_steps": 20, "loss": 2.3456, "learning_rate": 0.0002, "tokens_per_s": 1234.5,
                "eta_s": 125, "val_loss": 2.5})
    run = TrainingRun.objects.create(domain=domain, base_model=BASE, dataset_version=version, config={}, job=job)
    url = reverse("training-detail", args=["finance", run.pk])
    html = client_as(bob).get(url).content.decode()
    assert "5 / 20" in html and "2.3456" in html and "2m 05s" in html and "1235" in html
    assert f"{url}?live=1" in html
    assert reverse("job-cancel", args=["finance", job.pk]) in html
    assert 'data-plot="none"' in html  # no history yet: the numbers stand in for the curve
    response = client_as(vera).get(url, {"live": "1"}, **HTMX)
    assert response.status_code == 200 and 'id="run-live"' in response.content.decode()
    assert "<html" not in response.content.decode()
    assert reverse("job-cancel", args=["finance", job.pk]) not in response.content.decode()  # viewers do not cancel
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    assert client_as(vera).get(url, {"live": "1"}, **HTMX).status_code == 286


def test_the_live_partial_draws_history_from_the_job_result(client_as, vera, domain):
    job = enqueue_job(domain=domain, kind="train", params={})
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, result={"step": 3, "history": HISTORY[:3]})
    run = TrainingRun.objects.create(domain=domain, base_model=BASE, config={}, job=job)
    html = client_as(vera).get(reverse("training-detail", args=["finance", run.pk]), {"live": "1"},
                               **HTMX).content.decode()
    points = re.search(r'<polyline class="train-loss"[^>]* points="([^"]+)"', html).group(1)
    assert len(points.split()) == 3


def test_loss_plot_geometry_stays_inside_the_box():
    plot = loss_plot(HISTORY, VAL_HISTORY, width=400, height=200)
    for pair in plot["points"].split():
        x, y = map(float, pair.split(","))
        assert plot["x0"] <= x <= plot["x1"] and plot["y0"] <= y <= plot["y1"]
    assert [p["y"] for p in plot["val_points"]][0] < plot["y1"]
    assert loss_plot([], []) is None
    single = loss_plot([{"step": 1, "loss": 2.0}], [])
    assert single["n_points"] == 1
    nan = loss_plot([{"step": 1, "loss": float("nan")}, {"step": 2, "loss": 1.0}], [{"epoch": 1, "val_loss": 0.9}])
    assert nan["n_points"] == 1 and len(nan["val_points"]) == 0  # no step for the epoch beyond the history



def test_a_two_stage_run_marks_where_fine_tuning_starts(client_as, vera, domain):
    two_stage = [{"step": 1, "loss": 3.0, "stage": "cpt"}, {"step": 2, "loss": 2.5, "stage": "cpt"},
                 {"step": 3, "loss": 2.8, "stage": "sft"}, {"step": 4, "loss": 1.9, "stage": "sft"}]
    plot = loss_plot(two_stage, [])
    xs = [float(pair.split(",")[0]) for pair in plot["points"].split()]
    assert xs[1] < plot["stage_x"] < xs[2]
    assert loss_plot(HISTORY, VAL_HISTORY)["stage_x"] is None  # one-stage runs have no mark
    assert loss_plot([{**h, "stage": "sft"} for h in two_stage[2:]], [])["stage_x"] is None
    run = TrainingRun.objects.create(domain=domain, kind="cpt_sft", base_model=BASE, config={},
                                     metrics={"history": two_stage, "final_train_loss": 1.9})
    html = client_as(vera).get(reverse("training-detail", args=["finance", run.pk])).content.decode()
    assert 'class="stage-mark"' in html and "fine-tuning starts" in html

# Model versions -------------------------------------------------------------------------------


def test_model_list_and_detail_show_lineage_metrics_and_artifacts(client_as, vera, domain, finished_run):
    model = finished_run.model_version
    child = ModelVersion.objects.create(domain=domain, number=2, parent=model, base_model=BASE,
                                        dataset_hash=model.dataset_hash, metrics={"final_train_loss": 0.9})
    html = client_as(vera).get(reverse("model-list", args=["finance"])).content.decode()
    assert f'data-model="{model.pk}"' in html and f'data-model="{child.pk}"' in html
    assert model.dataset_hash[:12] in html and "0.9000" in html
    response = client_as(vera).get(reverse("model-detail", args=["finance", child.pk]))
    assert response.status_code == 200
    assert response.context["lineage"] == [model]
    assert response.context["dataset_version"] == finished_run.dataset_version
    html = response.content.decode()
    assert reverse("model-detail", args=["finance", model.pk]) in html
    assert 'id="promote-form"' not in html  # viewers do not promote
    html = client_as(vera).get(reverse("model-detail", args=["finance", model.pk])).content.decode()
    assert "domains/finance/runs/1/model" in html
    assert reverse("training-detail", args=["finance", finished_run.pk]) in html


def test_promote_makes_exactly_one_active_and_demote_takes_it_out(client_as, alice, bob, domain):
    one = ModelVersion.objects.create(domain=domain, number=1, base_model=BASE)
    two = ModelVersion.objects.create(domain=domain, number=2, base_model=BASE)
    client = client_as(alice)
    refused = client.post(reverse("model-promote", args=["finance", one.pk]), follow=True)
    assert "evaluate it first" in refused.content.decode() and 'id="force-form"' in refused.content.decode()
    assert not ModelVersion.objects.filter(domain=domain, is_active=True).exists()
    for model in (one, two):
        response = client.post(reverse("model-promote", args=["finance", model.pk]), {"force": "1", "reason": "pilot"})
        assert response.status_code == 302
        assert list(ModelVersion.objects.filter(domain=domain, is_active=True)) == [model]
    html = client.get(reverse("model-list", args=["finance"])).content.decode()
    assert html.count('data-active="true"') == 1
    assert 'id="demote-form"' in client.get(reverse("model-detail", args=["finance", two.pk])).content.decode()
    client.post(reverse("model-demote", args=["finance", two.pk]))
    assert not ModelVersion.objects.filter(domain=domain, is_active=True).exists()
    assert client_as(bob).post(reverse("model-promote", args=["finance", one.pk])).status_code == 403
    assert not ModelVersion.objects.filter(domain=domain, is_active=True).exists()


# Other tenants --------------------------------------------------------------------------------


def test_other_domains_runs_and_models_are_404(client_as, alice, pig_run, pig_model):
    client = client_as(alice)
    assert client.get(reverse("training-detail", args=["finance", pig_run.pk])).status_code == 404
    assert client.get(reverse("training-list", args=["finance"]), {"run": pig_run.pk}, **HTMX).status_code == 404
    assert client.get(reverse("model-detail", args=["finance", pig_model.pk])).status_code == 404
    assert client.post(reverse("model-promote", args=["finance", pig_model.pk])).status_code == 404
    pig_model.refresh_from_db()
    assert not pig_model.is_active
    assert client.get(reverse("training-list", args=["pigs"])).status_code == 404
