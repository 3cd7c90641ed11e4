"""API: /api/domains/<slug>/runs/ (start a training run, follow its job) and /models/ (promote, demote)."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from datasets_app.models import QADataset
from datasets_app.services import add_pair
from datasets_app.versions import freeze_dataset
from domains.models import ApiKey, Job
from training_app.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

RUNS = "/api/domains/finance/runs/"
MODELS = "/api/domains/finance/models/"
BASE = "embedded:gemma3-270m"


def key_client(domain, scope: str = "read_write") -> APIClient:
    _, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def version(domain, alice, data_dir):
    dataset = QADataset.default_for(domain)
    add_pair(dataset=dataset, by=alice, question="差旅费报销需要哪些材料？", answer="发票和审批单。", approve=True)
    return freeze_dataset(dataset=dataset, by=alice).version


def test_expert_starts_a_run_and_gets_it_with_its_queued_job(api_as, bob, domain, version):
    response = api_as(bob).post(RUNS, {"dataset_version": version.pk, "preset": "customer_service",
                                       "overrides": {"epochs": 2, "lora_r": 4}}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    run = TrainingRun.objects.get(domain=domain)
    assert body["id"] == run.pk and response["Location"].endswith(f"{RUNS}{run.pk}/")
    assert body["job"]["id"] == run.job_id and body["job"]["status"] == "queued" and body["job"]["kind"] == "train"
    assert body["dataset_hash"] == version.content_hash and body["model_version"] is None
    assert (body["config"]["epochs"], body["config"]["lora_r"], body["config"]["lora_alpha"]) == (2, 4, 20)
    assert body["base_model"] == BASE and body["created_by"] == "bob"


def test_a_read_write_key_starts_a_run_and_a_read_key_cannot(domain, version):
    assert key_client(domain, "read").post(RUNS, {"dataset_version": version.pk}, format="json").status_code == 403
    response = key_client(domain).post(RUNS, {"dataset_version": version.pk}, format="json")
    assert response.status_code == 201 and response.json()["created_by"] is None


def test_a_bad_base_model_is_400_under_its_field_and_creates_nothing(api_as, bob, version, tmp_path):
    response = api_as(bob).post(RUNS, {"dataset_version": version.pk, "base_model": str(tmp_path / "nothing")},
                                format="json")
    assert response.status_code == 400 and "base_model" in response.json()
    response = api_as(bob).post(RUNS, {"dataset_version": version.pk, "base_model": "embedded:llama-9000"},
                                format="json")
    assert response.status_code == 400 and "base_model" in response.json()
    response = api_as(bob).post(RUNS, {"dataset_version": version.pk, "overrides": {"epochs": 0}}, format="json")
    assert response.status_code == 400 and "config" in response.json()
    response = api_as(bob).post(RUNS, {"dataset_version": version.pk, "kind": "rlhf"}, format="json")
    assert response.status_code == 400 and "kind" in response.json()
    response = api_as(bob).post(RUNS, {"dataset_version": version.pk, "kind": "grpo"}, format="json")
    assert response.status_code == 400 and "no entity examples" in response.json()["dataset_version"][0]
    assert not TrainingRun.objects.exists() and not Job.objects.filter(kind="train").exists()


def test_another_domains_version_or_parent_is_400(api_as, bob, charlie, other_domain, version):
    dataset = QADataset.default_for(other_domain)
    add_pair(dataset=dataset, by=charlie, question="How often are piglets fed?", answer="Every 3 hours.", approve=True)
    theirs = freeze_dataset(dataset=dataset, by=charlie).version
    assert api_as(bob).post(RUNS, {"dataset_version": theirs.pk}, format="json").json().keys() == {"dataset_version"}
    their_model = ModelVersion.objects.create(domain=other_domain, number=1, base_model=BASE)
    response = api_as(bob).post(RUNS, {"dataset_version": version.pk, "parent": their_model.pk}, format="json")
    assert response.status_code == 400 and "parent" in response.json()
    assert not TrainingRun.objects.exists()


def test_viewers_list_and_read_runs_but_cannot_start_one(api_as, vera, domain, other_domain, version):
    run = TrainingRun.objects.create(domain=domain, base_model=BASE, dataset_version=version, config={},
                                     metrics={"history": [{"step": 1, "loss": 2.0}], "final_train_loss": 2.0})
    theirs = TrainingRun.objects.create(domain=other_domain, base_model=BASE, config={})
    client = api_as(vera)
    listed = client.get(RUNS).json()["results"]
    assert [r["id"] for r in listed] == [run.pk]
    assert client.get(f"{RUNS}{run.pk}/").json()["metrics"]["final_train_loss"] == 2.0
    assert client.get(f"{RUNS}{theirs.pk}/").status_code == 404
    assert client.post(RUNS, {"dataset_version": version.pk}, format="json").status_code == 403


def test_owner_promotes_exactly_one_and_demotes(api_as, alice, bob, vera, domain, other_domain):
    one = ModelVersion.objects.create(domain=domain, number=1, base_model=BASE)
    two = ModelVersion.objects.create(domain=domain, number=2, base_model=BASE)
    theirs = ModelVersion.objects.create(domain=other_domain, number=1, base_model=BASE)
    client = api_as(alice)
    assert [m["number"] for m in client.get(MODELS).json()["results"]] == [2, 1]
    refused = client.post(f"{MODELS}{one.pk}/promote/")  # not evaluated: the gate says so
    assert refused.status_code == 400 and "evaluate it first" in str(refused.json()["gate"])
    assert client.post(f"{MODELS}{one.pk}/promote/", {"force": True}, format="json").status_code == 400  # no reason
    assert not ModelVersion.objects.filter(is_active=True).exists()
    for model in (one, two):
        response = client.post(f"{MODELS}{model.pk}/promote/", {"force": True, "reason": "pilot"}, format="json")
        assert response.status_code == 200 and response.json()["is_active"] is True
        assert list(ModelVersion.objects.filter(domain=domain, is_active=True)) == [model]
    promotion = model.promotions.get()
    assert promotion.forced and promotion.reason == "pilot" and promotion.by == alice and promotion.previous == one
    response = client.post(f"{MODELS}{two.pk}/demote/")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert not ModelVersion.objects.filter(is_active=True).exists()
    assert client.post(f"{MODELS}{theirs.pk}/promote/").status_code == 404
    assert api_as(bob).post(f"{MODELS}{one.pk}/promote/").status_code == 403
    assert api_as(vera).post(f"{MODELS}{one.pk}/promote/").status_code == 403
    assert not ModelVersion.objects.filter(is_active=True).exists()


def test_keys_read_models_but_never_promote(domain):
    model = ModelVersion.objects.create(domain=domain, number=1, base_model=BASE)
    client = key_client(domain)
    assert client.get(f"{MODELS}{model.pk}/").json()["number"] == 1
    assert client.post(f"{MODELS}{model.pk}/promote/").status_code == 403
    model.refresh_from_db()
    assert not model.is_active


def test_models_are_read_only(api_as, alice, domain):
    model = ModelVersion.objects.create(domain=domain, number=1, base_model=BASE)
    client = api_as(alice)
    assert client.post(MODELS, {"number": 2, "base_model": BASE}, format="json").status_code == 405
    assert client.delete(f"{MODELS}{model.pk}/").status_code == 405
    assert client.patch(f"{MODELS}{model.pk}/", {"is_active": True}, format="json").status_code == 405


def test_the_schema_lists_the_training_endpoints(db):
    paths = APIClient().get("/api/schema/?format=json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/domains/{slug}/runs/"])
    assert "post" in paths["/api/domains/{slug}/models/{id}/promote/"]
    assert "post" in paths["/api/domains/{slug}/models/{id}/demote/"]
