"""API: /api/domains/<slug>/exports/ (start an export of a model version, list and read exports, download
a produced file by its fixed name); roles, keys and other tenants."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from domains.models import ApiKey, Job
from training_app.models import ModelExport

from .export_helpers import finished_export, version_with_adapter

pytestmark = pytest.mark.django_db

EXPORTS = "/api/domains/finance/exports/"


def key_client(domain, scope: str = "read_write") -> APIClient:
    _, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def results(body):
    return body["results"] if isinstance(body, dict) else body


@pytest.fixture
def version(domain, data_dir):
    return version_with_adapter(domain, data_dir)


@pytest.fixture
def export(domain, version, data_dir, bob):
    return finished_export(domain, version, data_dir, by=bob)


def test_expert_starts_an_export_and_gets_it_with_its_queued_job(api_as, bob, domain, version):
    response = api_as(bob).post(EXPORTS, {"model_version": version.pk, "gguf_outtype": "q8_0"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    export = ModelExport.objects.get(domain=domain)
    assert body["id"] == export.pk and response["Location"].endswith(f"{EXPORTS}{export.pk}/")
    assert body["job"]["kind"] == "export" and body["job"]["status"] == "queued" and body["status"] == "queued"
    assert body["formats"] == ["safetensors", "gguf-q8_0", "Q4_K_M", "Modelfile"]  # the defaults, but q8_0
    assert body["model_version_number"] == 1 and body["files"] == [] and body["created_by"] == "bob"
    assert body["output_path"] == f"domains/finance/exports/{export.pk}"


def test_bad_formats_and_foreign_versions_are_400_and_create_nothing(api_as, bob, charlie, other_domain, version,
                                                                    data_dir):
    client = api_as(bob)
    for data, field in (({"gguf_outtype": "q4_0"}, "gguf_outtype"), ({"quantize": "Q2_K"}, "quantize"),
                        ({"gguf_outtype": "", "quantize": "Q4_K_M"}, "quantize"),
                        ({"gguf_outtype": "", "quantize": "", "modelfile": True}, "modelfile"),
                        ({"gguf_outtype": "", "quantize": "", "modelfile": False, "merged": False},
                         "non_field_errors"),
                        ({}, "model_version")):
        response = client.post(EXPORTS, {"model_version": version.pk, **data} if data else {}, format="json")
        assert response.status_code == 400 and field in response.json(), (data, response.json())
    pig = version_with_adapter(other_domain, data_dir, number=3)
    response = client.post(EXPORTS, {"model_version": pig.pk}, format="json")
    assert response.status_code == 400 and "model_version" in response.json()
    (data_dir / version.adapter_path / "adapter_config.json").unlink()
    response = client.post(EXPORTS, {"model_version": version.pk}, format="json")
    assert response.status_code == 400 and "missing from the data folder" in str(response.json()["model_version"])
    assert not ModelExport.objects.exists()


def test_keys_read_exports_and_only_read_write_keys_start_one(domain, version, export):
    reader = key_client(domain, "read")
    assert reader.post(EXPORTS, {"model_version": version.pk}, format="json").status_code == 403
    assert [e["id"] for e in results(reader.get(EXPORTS).json())] == [export.pk]
    assert reader.get(f"{EXPORTS}{export.pk}/download/", {"file": "modelfile"}).status_code == 200
    response = key_client(domain).post(EXPORTS, {"model_version": version.pk}, format="json")
    assert response.status_code == 201 and response.json()["created_by"] is None


def test_list_filters_by_model_version_and_detail_lists_files(api_as, vera, domain, data_dir, version, export):
    other_version = version_with_adapter(domain, data_dir, number=2)
    finished_export(domain, other_version, data_dir)
    client = api_as(vera)

    def ids(params):
        return sorted(e["id"] for e in results(client.get(EXPORTS, params).json()))

    assert len(ids({})) == 2 and ids({"model_version": version.pk}) == [export.pk]
    assert client.get(EXPORTS, {"model_version": "x"}).status_code == 400
    body = client.get(f"{EXPORTS}{export.pk}/").json()
    assert body["status"] == "succeeded" and body["job"]["progress_done"] == 3
    files = {f["artifact"]: f for f in body["files"]}
    assert list(files) == ["archive", "gguf", "modelfile"]
    assert files["gguf"]["bytes"] == 2048 and files["gguf"]["sha256"] == export.files["gguf"]["sha256"]
    assert files["gguf"]["url"] == f"{EXPORTS}{export.pk}/download/?file=gguf"
    assert "path" not in files["gguf"]  # the API never shows server paths of files


def test_download_by_fixed_name(api_as, vera, domain, export, data_dir):
    client = api_as(vera)
    response = client.get(f"{EXPORTS}{export.pk}/download/")
    assert response.status_code == 200 and f'filename="finance-v1-export{export.pk}.zip"' in \
        response["Content-Disposition"]
    assert b"".join(response.streaming_content) == (data_dir / export.files["archive"]["path"]).read_bytes()
    response = client.get(f"{EXPORTS}{export.pk}/download/", {"file": "gguf"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and b"".join(response.streaming_content).startswith(b"GGUF")
    for name in ("quantized", "../secret", "output_path"):
        assert client.get(f"{EXPORTS}{export.pk}/download/", {"file": name}).status_code == 404, name


def test_other_tenants_get_404(api_as, charlie, alice, domain, other_domain, export, data_dir):
    stranger = api_as(charlie)
    assert stranger.get(f"{EXPORTS}{export.pk}/").status_code == 404
    assert stranger.get(f"{EXPORTS}{export.pk}/download/").status_code == 404
    assert stranger.get(f"/api/domains/pigs/exports/{export.pk}/download/").status_code == 404
    pig_export = finished_export(other_domain, version_with_adapter(other_domain, data_dir, number=5), data_dir)
    assert api_as(alice).get(f"{EXPORTS}{pig_export.pk}/download/").status_code == 404
    assert api_as(alice).get(f"{EXPORTS}{pig_export.pk}/").status_code == 404
    assert key_client(other_domain).get(f"{EXPORTS}{export.pk}/download/").status_code == 404


def test_exports_cannot_be_changed_or_deleted(api_as, alice, export):
    client = api_as(alice)
    assert client.delete(f"{EXPORTS}{export.pk}/").status_code == 405
    assert client.patch(f"{EXPORTS}{export.pk}/", {"quantize": ""}, format="json").status_code == 405
    assert Job.objects.filter(pk=export.job_id).exists()


def test_the_schema_lists_the_export_endpoints(db):
    paths = APIClient().get("/api/schema/?format=json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/domains/{slug}/exports/"])
    assert "get" in paths["/api/domains/{slug}/exports/{id}/"]
    download = paths["/api/domains/{slug}/exports/{id}/download/"]["get"]
    file_param = next(p for p in download["parameters"] if p["name"] == "file")
    assert sorted(file_param["schema"]["enum"]) == sorted(ModelExport.ARTIFACTS)
