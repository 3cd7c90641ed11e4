"""Version pages: the frozen snapshot's facts, stats and split counts; downloads in every format."""
from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest
from django.urls import reverse

from datasets_app.models import QADataset
from datasets_app.services import add_pair
from datasets_app.versions import EXPORT_FORMATS, freeze_dataset

pytestmark = pytest.mark.django_db

QUESTIONS = ["差旅费报销需要哪些材料？", "报销的期限是多久？", "出差补助标准是什么？", "发票抬头写什么？"]


@pytest.fixture
def version(domain, alice, data_dir):
    dataset = QADataset.default_for(domain)
    for i, q in enumerate(QUESTIONS):
        add_pair(dataset=dataset, by=alice, question=q, answer=f"答案 {i}。", approve=True)
    add_pair(dataset=dataset, by=alice, question="留作测试的问题？", answer="测试答案。", approve=True, held_out=True)
    return freeze_dataset(dataset=dataset, by=alice, note="March review", validation_fraction=0.25).version


@pytest.fixture
def pig_version(other_domain, charlie, data_dir):
    dataset = QADataset.default_for(other_domain)
    add_pair(dataset=dataset, by=charlie, question="How often are piglets fed?", answer="Every 3 hours.",
             approve=True)
    return freeze_dataset(dataset=dataset, by=charlie).version


def download(version, **query):
    return reverse("version-download", args=[version.domain.slug, version.pk]) + (
        "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def test_version_page_shows_the_snapshot(client_as, vera, version):
    response = client_as(vera).get(version.get_absolute_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert "March review" in html and version.content_hash in html and "alice" in html
    rows = {row["kind"]: row for row in response.context["split_rows"]}
    assert rows["qa"]["splits"] == [version.counts["qa"][s] for s in ("train", "validation", "test")]
    assert rows["qa"]["total"] == 5 and rows["qa"]["splits"][2] == 1  # the held-out pair is in test
    assert rows["retrieval"]["total"] == 0
    for fmt in EXPORT_FORMATS:
        for split in ("train", "validation", "test", "all"):
            assert f"{download(version)}?format={fmt}&amp;split={split}" in html
    assert response.context["stats"]["question_length"]["p50"] > 0


def test_other_tenant_version_is_404(client_as, alice, charlie, version, pig_version):
    client = client_as(alice)
    assert client.get(reverse("version-detail", args=["finance", pig_version.pk])).status_code == 404
    assert client.get(reverse("version-download", args=["finance", pig_version.pk])).status_code == 404
    assert client.get(reverse("version-detail", args=["pigs", pig_version.pk])).status_code == 404
    assert client_as(charlie).get(download(version, format="alpaca")).status_code == 404


def test_download_alpaca_gives_the_train_rows_as_an_attachment(client_as, vera, version):
    response = client_as(vera).get(download(version, format="alpaca", split="train"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="finance-v{version.number}-train-alpaca.jsonl"'
    rows = [json.loads(line) for line in response.content.decode().splitlines()]
    assert len(rows) == version.counts["qa"]["train"] and rows
    assert {r["instruction"] for r in rows} <= set(QUESTIONS)


def test_download_all_splits_of_qa_jsonl_includes_the_held_out_pair(client_as, vera, version):
    response = client_as(vera).get(download(version, format="qa-jsonl", split="all"))
    rows = [json.loads(line) for line in response.content.decode().splitlines()]
    assert len(rows) == 5 and any(r["question"] == "留作测试的问题？" and r["held_out"] for r in rows)


def test_download_defaults_to_alpaca_train(client_as, vera, version):
    response = client_as(vera).get(download(version))
    assert response.status_code == 200 and response["Content-Disposition"].endswith('-train-alpaca.jsonl"')


def test_download_llamafactory_is_a_zip_with_dataset_info(client_as, vera, version):
    response = client_as(vera).get(download(version, format="llamafactory", split="train"))
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert set(zf.namelist()) == {"sharegpt.jsonl", "alpaca.jsonl", "dataset_info.json"}
        assert len(zf.read("alpaca.jsonl").decode().splitlines()) == version.counts["qa"]["train"]


def test_every_format_downloads(client_as, vera, version):
    client = client_as(vera)
    for fmt in EXPORT_FORMATS:
        response = client.get(download(version, format=fmt, split="all"))
        assert response.status_code == 200, fmt
        assert response["Content-Disposition"].startswith("attachment;"), fmt


def test_unknown_format_or_split_is_a_400_page(client_as, vera, version):
    client = client_as(vera)
    for query in ({"format": "parquet"}, {"format": "alpaca", "split": "holdout"}):
        response = client.get(download(version, **query))
        assert response.status_code == 400
        assert "Unknown format or split" in response.content.decode()
        assert "attachment" not in response.get("Content-Disposition", "")


def test_missing_files_give_a_clear_error_page_not_500(client_as, vera, version):
    shutil.rmtree(version.path)
    page = client_as(vera).get(version.get_absolute_url())
    assert page.status_code == 200 and "missing from the data folder" in page.content.decode()
    response = client_as(vera).get(download(version, format="alpaca"))
    assert response.status_code == 410
    assert "missing from the data folder" in response.content.decode()


def test_version_pages_are_read_only(client_as, alice, version):
    client = client_as(alice)
    assert client.post(version.get_absolute_url()).status_code == 405
    assert client.post(download(version, format="alpaca")).status_code == 405
