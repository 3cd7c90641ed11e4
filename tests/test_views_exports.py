"""Export pages: the Export form and the exports list on the model page (live row poll, downloads with sizes),
the download view (fixed file names, owning domain only), roles and other tenants."""
from __future__ import annotations

import pytest
from django.urls import reverse

from domains.models import Job
from training_app.models import ModelExport

from .export_helpers import finished_export, version_with_adapter

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def version(domain, data_dir):
    return version_with_adapter(domain, data_dir)


@pytest.fixture
def export(domain, version, data_dir, bob):
    return finished_export(domain, version, data_dir, by=bob)


def detail(domain, version) -> str:
    return reverse("model-detail", args=[domain.slug, version.pk])


def download(domain, export, name: str | None = None) -> str:
    url = reverse("export-download", args=[domain.slug, export.pk])
    return f"{url}?file={name}" if name else url


def test_the_model_page_lists_exports_with_downloads_and_sizes(client_as, vera, domain, version, export):
    page = client_as(vera).get(detail(domain, version)).content.decode()
    assert f'id="export-{export.pk}"' in page and 'data-status="succeeded"' in page
    for name in ("archive", "gguf", "modelfile"):
        assert f'href="{download(domain, export, name)}"' in page
    assert "finance-v1-f16.gguf" in page and "2.0\xa0KB" in page  # 2048 bytes, human-readable
    assert "?file=quantized" not in page and "?file=merged" not in page  # not produced by this export
    assert 'id="export-form"' not in page  # viewers do not export


def test_an_expert_exports_from_the_form(client_as, bob, domain, version):
    client = client_as(bob)
    assert 'id="export-form"' in client.get(detail(domain, version)).content.decode()
    response = client.post(reverse("model-export", args=[domain.slug, version.pk]),
                           {"merged": "on", "gguf_outtype": "q8_0", "quantize": "Q4_K_M", "modelfile": "on"})
    export = ModelExport.objects.get(model_version=version)
    assert response.status_code == 302 and response["Location"] == detail(domain, version) + "#exports"
    assert (export.merged, export.gguf_outtype, export.quantize, export.modelfile) == (True, "q8_0", "Q4_K_M", True)
    assert export.job.kind == "export" and export.job.status == Job.Status.QUEUED and export.created_by == bob
    page = client.get(detail(domain, version)).content.decode()
    # a queued export's row polls itself
    assert f'hx-get="{detail(domain, version)}?export={export.pk}"' in page


def test_formats_that_do_not_fit_are_shown_on_the_form(client_as, bob, domain, version):
    url = reverse("model-export", args=[domain.slug, version.pk])
    response = client_as(bob).post(url, {"gguf_outtype": "", "quantize": "Q4_K_M"})
    assert response.status_code == 400 and "Quantizing needs a GGUF" in response.content.decode()
    response = client_as(bob).post(url, {"gguf_outtype": "", "quantize": ""})
    assert response.status_code == 400 and "Choose at least one format" in response.content.decode()
    response = client_as(bob).post(url, {"gguf_outtype": "q2_k"})
    assert response.status_code == 400 and 'id="export-form"' in response.content.decode()
    assert not ModelExport.objects.exists()


def test_a_version_without_weights_on_disk_is_refused_on_the_form(client_as, bob, domain, version, data_dir):
    (data_dir / version.adapter_path / "adapter_config.json").unlink()
    response = client_as(bob).post(reverse("model-export", args=[domain.slug, version.pk]), {"gguf_outtype": "f16"})
    assert response.status_code == 400 and "missing from the data folder" in response.content.decode()
    assert not ModelExport.objects.exists()


def test_viewers_cannot_export(client_as, vera, domain, version):
    response = client_as(vera).post(reverse("model-export", args=[domain.slug, version.pk]), {"gguf_outtype": "f16"})
    assert response.status_code == 403 and not ModelExport.objects.exists()


def test_the_row_poll_runs_while_the_job_runs_and_stops_with_286(client_as, vera, domain, version, export):
    client = client_as(vera)
    Job.objects.filter(pk=export.job_id).update(status=Job.Status.RUNNING, message="Converting to GGUF")
    response = client.get(detail(domain, version), {"export": export.pk}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and body.lstrip().startswith(f'<tr id="export-{export.pk}"')
    assert "hx-trigger" in body and "Converting to GGUF" in body
    Job.objects.filter(pk=export.job_id).update(status=Job.Status.FAILED, error="converter is not installed")
    response = client.get(detail(domain, version), {"export": export.pk}, **HTMX)
    assert response.status_code == 286 and "converter is not installed" in response.content.decode()
    assert "hx-trigger" not in response.content.decode()


def test_downloads_stream_the_recorded_files(client_as, vera, domain, export, data_dir):
    client = client_as(vera)
    response = client.get(download(domain, export))  # the archive by default
    assert response.status_code == 200 and response["Content-Disposition"] == (
        f'attachment; filename="finance-v1-export{export.pk}.zip"')
    assert b"".join(response.streaming_content) == (data_dir / export.files["archive"]["path"]).read_bytes()
    response = client.get(download(domain, export, "modelfile"))
    assert b"".join(response.streaming_content) == b"FROM ./finance-v1-f16.gguf\n"
    assert response["Cache-Control"] == "private, no-store"


def test_downloads_never_follow_a_name_or_path_from_the_request(client_as, alice, domain, export, data_dir):
    client = client_as(alice)
    for name in ("quantized", "merged", "../../../etc/passwd", "files", "path", str(data_dir / "x")):
        assert client.get(download(domain, export, name)).status_code == 404, name
    # a recorded path outside the export's folder is refused too (a tampered row)
    (data_dir / "secret.txt").write_text("not yours")
    files = {**export.files, "gguf": {**export.files["gguf"], "path": "secret.txt"}}
    ModelExport.objects.filter(pk=export.pk).update(files=files)
    assert client.get(download(domain, export, "gguf")).status_code == 404
    # a file that went missing from the data folder is a 404, not a crash
    (data_dir / export.files["archive"]["path"]).unlink()
    assert client.get(download(domain, export)).status_code == 404


def test_other_tenants_get_404(client_as, charlie, alice, domain, other_domain, export, version, data_dir):
    assert client_as(charlie).get(download(domain, export)).status_code == 404
    assert client_as(charlie).get(detail(domain, version), {"export": export.pk}, **HTMX).status_code == 404
    # charlie's own domain slug with alice's export id
    assert client_as(charlie).get(download(other_domain, export)).status_code == 404
    # alice cannot poll another domain's export through her own model page
    pig_version = version_with_adapter(other_domain, data_dir, number=7)
    pig_export = finished_export(other_domain, pig_version, data_dir)
    client = client_as(alice)
    assert client.get(download(domain, pig_export)).status_code == 404
    assert client.get(detail(domain, version), {"export": pig_export.pk}, **HTMX).status_code == 404
    assert client.post(reverse("model-export", args=[domain.slug, pig_version.pk]),
                       {"gguf_outtype": "f16"}).status_code == 404


def test_the_exports_section_and_job_messages_in_chinese(client_as, bob, domain, version, export):
    client = client_as(bob)
    client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
    Job.objects.filter(pk=export.job_id).update(status=Job.Status.RUNNING, message="Quantizing the GGUF")
    page = client.get(detail(domain, version)).content.decode()
    assert "导出" in page and "下载" in page and "合并后的 safetensors" in page and "还没有导出" not in page
    assert "正在量化 GGUF" in page
