"""API: /api/domains/<slug>/datasets/ (recipes, freeze, import) and /versions/ (downloads), per domain."""
from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from datasets_app.models import DatasetVersion, QADataset, QAPair, TeacherConfig
from datasets_app.services import add_pair, review_pair
from datasets_app.tasks import RECIPE_KINDS
from datasets_app.versions import EXPORT_FORMATS
from domains.models import ApiKey, Document, Job

pytestmark = pytest.mark.django_db

LIST = "/api/domains/finance/datasets/"
VERSIONS = "/api/domains/finance/versions/"

QUESTIONS = ["差旅费报销需要哪些材料？", "报销的期限是多久？", "出差补助标准是什么？", "发票抬头写什么？"]


def detail(dataset, slug: str = "finance") -> str:
    return f"/api/domains/{slug}/datasets/{getattr(dataset, 'pk', dataset)}/"


def version_url(version, slug: str = "finance") -> str:
    return f"/api/domains/{slug}/versions/{getattr(version, 'pk', version)}/"


def key_client(domain, scope: str = "read_write") -> APIClient:
    _, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def upload(name: str, data: bytes, **extra) -> dict:
    return {"file": SimpleUploadedFile(name, data), **extra}


@pytest.fixture
def dataset(domain):
    return QADataset.default_for(domain)


@pytest.fixture
def approved(dataset, alice):
    """Four approved pairs and one pending."""
    pairs = [add_pair(dataset=dataset, by=alice, question=q, answer=f"答案 {i}。", approve=True)
             for i, q in enumerate(QUESTIONS)]
    add_pair(dataset=dataset, by=alice, question="还没审的问题？", answer="待定。")
    return pairs


@pytest.fixture
def pig_dataset(other_domain, charlie):
    dataset = QADataset.default_for(other_domain)
    add_pair(dataset=dataset, by=charlie, question="How often are piglets fed?", answer="Every 3 hours.",
             approve=True)
    return dataset


# --- datasets ----------------------------------------------------------------------------


def test_viewer_lists_datasets_with_counts_and_stale_flag(api_as, vera, dataset, approved, pig_dataset):
    QADataset.objects.filter(pk=dataset.pk).update(stale_since="2024-01-01T00:00:00Z", stale_reason="chunks gone")
    response = api_as(vera).get(LIST)
    assert response.status_code == 200
    rows = response.data["results"]
    assert [r["id"] for r in rows] == [dataset.pk]  # never the other domain's
    row = rows[0]
    assert row["name"] == "main" and row["stale"] is True and row["stale_reason"] == "chunks gone"
    assert row["counts"] == {"total": 5, "pending": 1, "approved": 4, "rejected": 0, "needs_edit": 0,
                             "held_out": 0}
    assert row["version_count"] == 0


def test_expert_creates_a_dataset_and_names_are_unique(api_as, bob, domain, dataset):
    client = api_as(bob)
    response = client.post(LIST, {"name": "faq", "description": "常见问题", "double_review": True}, format="json")
    assert response.status_code == 201, response.data
    created = QADataset.objects.get(pk=response.data["id"])
    assert (created.domain, created.name, created.double_review) == (domain, "faq", True)
    assert response["Location"] == detail(created)
    assert response.data["counts"]["total"] == 0 and response.data["stale"] is False

    again = client.post(LIST, {"name": "faq"}, format="json")
    assert again.status_code == 400 and "name" in again.data


def test_the_same_name_is_fine_in_another_domain(api_as, charlie, pig_dataset, dataset):
    response = api_as(charlie).post("/api/domains/pigs/datasets/", {"name": "faq"}, format="json")
    assert response.status_code == 201


def test_expert_changes_the_review_rule(api_as, bob, dataset):
    response = api_as(bob).patch(detail(dataset), {"double_review": True, "description": "两人审核"},
                                 format="json")
    assert response.status_code == 200, response.data
    dataset.refresh_from_db()
    assert dataset.double_review is True and dataset.description == "两人审核"


def test_viewer_and_read_key_cannot_create(api_as, vera, domain):
    assert api_as(vera).post(LIST, {"name": "x"}, format="json").status_code == 403
    assert key_client(domain, "read").post(LIST, {"name": "x"}, format="json").status_code == 403
    assert key_client(domain, "read").get(LIST).status_code == 200
    assert not QADataset.objects.filter(name="x").exists()


def test_other_domains_dataset_is_404(api_as, alice, domain, pig_dataset, sent):
    client = api_as(alice)
    assert client.get(detail(pig_dataset)).status_code == 404
    assert client.patch(detail(pig_dataset), {"description": "mine"}, format="json").status_code == 404
    assert client.post(f"{detail(pig_dataset)}recipes/", {"recipe": "qa"}, format="json").status_code == 404
    assert client.post(f"{detail(pig_dataset)}freeze/", {}, format="json").status_code == 404
    assert client.post(f"{detail(pig_dataset)}import/", upload("a.csv", b"question,answer\nq,a\n")).status_code == 404
    assert not Job.objects.exists() and not DatasetVersion.objects.exists()
    assert QAPair.objects.filter(dataset=pig_dataset).count() == 1


# --- recipes -----------------------------------------------------------------------------


def test_expert_starts_a_qa_recipe_job(api_as, bob, domain, dataset, sent, django_capture_on_commit_callbacks):
    document = Document.objects.create(domain=domain, filename="rules.txt", content_hash="r", status="ready")
    teacher = TeacherConfig.objects.create(domain=domain, name="deepseek", provider="openai", model="deepseek-chat")
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(bob).post(
            f"{detail(dataset)}recipes/",
            {"recipe": "qa", "teacher": teacher.pk, "per_chunk": 5, "documents": [document.pk]},
            format="json",
        )
    assert response.status_code == 202, response.data
    job = Job.objects.get(pk=response.data["id"])
    assert (job.domain, job.kind, job.created_by, job.status) == (domain, "distill_qa", bob, "queued")
    assert job.params == {"dataset_id": dataset.pk, "teacher_id": teacher.pk, "per_chunk": 5, "variants": 3,
                          "document_ids": [document.pk]}
    assert response.data["params"] == job.params and response.data["status"] == "queued"
    assert response["Location"] == f"/api/domains/finance/jobs/{job.pk}/"
    assert sent == [job.pk]


@pytest.mark.parametrize("recipe", sorted(RECIPE_KINDS))
def test_every_recipe_starts_its_job_kind(api_as, bob, dataset, sent, recipe):
    response = api_as(bob).post(f"{detail(dataset)}recipes/", {"recipe": recipe, "teacher": None}, format="json")
    assert response.status_code == 202, response.data
    job = Job.objects.get(pk=response.data["id"])
    assert job.kind == RECIPE_KINDS[recipe]
    assert job.params["teacher_id"] is None and job.params["document_ids"] == []


def test_recipe_without_teacher_uses_the_default_teacher(api_as, alice, domain, dataset, sent):
    TeacherConfig.objects.create(domain=domain, name="other", provider="openai", model="m")
    default = TeacherConfig.objects.create(domain=domain, name="main", provider="openai", model="m", is_default=True)
    response = api_as(alice).post(f"{detail(dataset)}recipes/", {"recipe": "paraphrase", "variants": 2},
                                  format="json")
    assert response.status_code == 202
    job = Job.objects.get(pk=response.data["id"])
    assert job.params["teacher_id"] == default.pk and job.params["variants"] == 2


def test_read_write_key_starts_a_recipe(domain, dataset, sent):
    response = key_client(domain).post(f"{detail(dataset)}recipes/", {"recipe": "retrieval"}, format="json")
    assert response.status_code == 202
    job = Job.objects.get(pk=response.data["id"])
    assert job.kind == "distill_retrieval" and job.created_by is None


@pytest.mark.parametrize("payload, field", [
    ({"recipe": "summarise"}, "recipe"),
    ({}, "recipe"),
    ({"recipe": "qa", "per_chunk": 0}, "per_chunk"),
    ({"recipe": "qa", "variants": 99}, "variants"),
    ({"recipe": "qa", "teacher": 999999}, "teacher"),
    ({"recipe": "qa", "documents": [999999]}, "documents"),
])
def test_recipe_start_validates(api_as, bob, dataset, sent, payload, field):
    response = api_as(bob).post(f"{detail(dataset)}recipes/", payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert not Job.objects.exists() and sent == []


def test_recipe_refuses_another_domains_teacher_and_documents(api_as, bob, dataset, other_domain, sent):
    theirs = TeacherConfig.objects.create(domain=other_domain, name="theirs", provider="openai", model="m")
    document = Document.objects.create(domain=other_domain, filename="pigs.txt", content_hash="p", status="ready")
    client = api_as(bob)
    url = f"{detail(dataset)}recipes/"
    assert client.post(url, {"recipe": "qa", "teacher": theirs.pk}, format="json").status_code == 400
    assert client.post(url, {"recipe": "qa", "documents": [document.pk]}, format="json").status_code == 400
    assert not Job.objects.exists()


def test_viewer_and_read_key_cannot_start_recipes(api_as, vera, domain, dataset, sent):
    url = f"{detail(dataset)}recipes/"
    assert api_as(vera).post(url, {"recipe": "qa"}, format="json").status_code == 403
    assert key_client(domain, "read").post(url, {"recipe": "qa"}, format="json").status_code == 403
    assert not Job.objects.exists()


# --- freeze and versions -----------------------------------------------------------------


def test_freeze_makes_a_version_then_returns_it_while_nothing_changes(api_as, bob, dataset, approved, data_dir):
    client = api_as(bob)
    url = f"{detail(dataset)}freeze/"
    first = client.post(url, {"note": "第一版", "seed": 7, "validation_fraction": 0.25}, format="json")
    assert first.status_code == 201, first.data
    version = DatasetVersion.objects.get(pk=first.data["id"])
    assert first["Location"] == version_url(version)
    assert first.data["number"] == 1 and first.data["note"] == "第一版" and first.data["created_by"] == "bob"
    assert first.data["split_config"]["seed"] == 7 and first.data["split_config"]["validation_fraction"] == 0.25
    assert sum(first.data["counts"]["qa"].values()) == 4  # approved only
    assert len(first.data["content_hash"]) == 64 and first.data["files_present"] is True

    same = client.post(url, {"note": "again", "seed": 7, "validation_fraction": 0.25}, format="json")
    assert same.status_code == 200 and same.data["id"] == version.pk

    review_pair(QAPair.objects.get(status="pending"), by=bob, action="approve")
    changed = client.post(url, {"seed": 7, "validation_fraction": 0.25}, format="json")
    assert changed.status_code == 201 and changed.data["number"] == 2
    assert client.get(detail(dataset)).data["version_count"] == 2


def test_freeze_with_nothing_approved_is_400(api_as, bob, dataset, data_dir):
    add_pair(dataset=dataset, by=bob, question="q?", answer="a.")
    response = api_as(bob).post(f"{detail(dataset)}freeze/", {}, format="json")
    assert response.status_code == 400
    assert "approved" in str(response.data)
    assert not DatasetVersion.objects.exists()


@pytest.mark.parametrize("payload", [{"validation_fraction": 0.9}, {"seed": -1}, {"note": "x" * 201}])
def test_freeze_validates(api_as, bob, dataset, approved, data_dir, payload):
    assert api_as(bob).post(f"{detail(dataset)}freeze/", payload, format="json").status_code == 400
    assert not DatasetVersion.objects.exists()


def test_viewer_cannot_freeze_but_reads_versions(api_as, vera, bob, charlie, dataset, approved, data_dir,
                                                 pig_dataset):
    assert api_as(vera).post(f"{detail(dataset)}freeze/", {}, format="json").status_code == 403
    assert not DatasetVersion.objects.exists()
    version_id = api_as(bob).post(f"{detail(dataset)}freeze/", {}, format="json").data["id"]
    pig = api_as(charlie).post(f"/api/domains/pigs/datasets/{pig_dataset.pk}/freeze/", {}, format="json")
    assert pig.status_code == 201

    client = api_as(vera)
    listed = client.get(VERSIONS)
    assert listed.status_code == 200
    assert [v["id"] for v in listed.data["results"]] == [version_id]
    assert [v["id"] for v in client.get(f"{VERSIONS}?dataset={dataset.pk}").data["results"]] == [version_id]
    assert client.get(f"{VERSIONS}?dataset={pig_dataset.pk}").data["results"] == []
    shown = client.get(version_url(version_id))
    assert shown.status_code == 200
    assert {"counts", "stats", "content_hash", "version_hash", "split_config"} <= set(shown.data)


def test_other_domains_version_is_404(api_as, alice, domain, pig_dataset, charlie, data_dir):
    version = api_as(charlie).post(f"/api/domains/pigs/datasets/{pig_dataset.pk}/freeze/", {}, format="json")
    assert version.status_code == 201
    client = api_as(alice)
    assert client.get(version_url(version.data["id"])).status_code == 404
    assert client.get(f"{version_url(version.data['id'])}download/").status_code == 404


def test_versions_are_read_only(api_as, alice, dataset, approved, data_dir):
    version_id = api_as(alice).post(f"{detail(dataset)}freeze/", {}, format="json").data["id"]
    client = api_as(alice)
    assert client.post(VERSIONS, {}, format="json").status_code == 405
    assert client.patch(version_url(version_id), {"note": "x"}, format="json").status_code == 405
    assert client.delete(version_url(version_id)).status_code == 405
    assert DatasetVersion.objects.filter(pk=version_id).exists()


# --- downloads ---------------------------------------------------------------------------


@pytest.fixture
def version(api_as, bob, dataset, approved, data_dir):
    response = api_as(bob).post(f"{detail(dataset)}freeze/", {"validation_fraction": 0}, format="json")
    assert response.status_code == 201
    return DatasetVersion.objects.get(pk=response.data["id"])


def _lines(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8")
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def test_viewer_downloads_alpaca_as_an_attachment(api_as, vera, version):
    response = api_as(vera).get(f"{version_url(version)}download/?format=alpaca&split=train")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="finance-v1-train-alpaca.jsonl"'
    assert response["Content-Type"].startswith("application/x-ndjson")
    rows = _lines(response)
    assert sorted(r["instruction"] for r in rows) == sorted(QUESTIONS)
    assert all(r["output"].startswith("答案") for r in rows)


def test_default_download_is_alpaca_train(api_as, vera, version):
    response = api_as(vera).get(f"{version_url(version)}download/")
    assert response.status_code == 200
    assert "train-alpaca.jsonl" in response["Content-Disposition"]


def test_read_key_downloads(domain, version):
    response = key_client(domain, "read").get(f"{version_url(version)}download/?format=qa-jsonl&split=all")
    assert response.status_code == 200
    assert sorted(r["question"] for r in _lines(response)) == sorted(QUESTIONS)


def test_llamafactory_download_is_a_zip(api_as, vera, version):
    response = api_as(vera).get(f"{version_url(version)}download/?format=llamafactory")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert b"".join(response.streaming_content)[:2] == b"PK"


def test_unknown_format_is_400_listing_the_known_ones(api_as, vera, version):
    response = api_as(vera).get(f"{version_url(version)}download/?format=parquet")
    assert response.status_code == 400
    message = str(response.data["format"])
    assert "parquet" in message and all(name in message for name in EXPORT_FORMATS)


def test_unknown_split_is_400(api_as, vera, version):
    response = api_as(vera).get(f"{version_url(version)}download/?split=dev")
    assert response.status_code == 400 and "split" in response.data


def test_missing_files_are_410_with_a_clear_error(api_as, vera, version):
    import shutil

    shutil.rmtree(version.path)
    response = api_as(vera).get(f"{version_url(version)}download/?format=alpaca")
    assert response.status_code == 410
    assert "missing" in response.data["detail"]
    assert api_as(vera).get(version_url(version)).data["files_present"] is False


def test_export_then_import_into_a_new_dataset_round_trips(api_as, bob, version):
    client = api_as(bob)
    for fmt in ("alpaca", "qa-jsonl"):
        download = client.get(f"{version_url(version)}download/?format={fmt}&split=all")
        assert download.status_code == 200
        filename = download["Content-Disposition"].split('filename="')[1].rstrip('"')
        data = b"".join(download.streaming_content)

        target = client.post(LIST, {"name": f"copy-{fmt}"}, format="json").data["id"]
        imported = client.post(f"{detail(target)}import/", upload(filename, data))
        assert imported.status_code == 201, imported.data
        assert imported.data == {"created": 4, "duplicates": 0, "errors": []}
        copied = QAPair.objects.filter(dataset_id=target)
        assert sorted(copied.values_list("question", flat=True)) == sorted(QUESTIONS)
        assert set(copied.values_list("source", "status").distinct()) == {("import", "pending")}


# --- import ------------------------------------------------------------------------------

CSV = "question,answer\n差旅费报销需要哪些材料？,发票和审批单。\n报销的期限是多久？,三十天。\n,缺问题\n".encode()


def test_expert_imports_a_csv_and_a_second_import_adds_nothing(api_as, bob, dataset):
    client = api_as(bob)
    first = client.post(f"{detail(dataset)}import/", upload("pairs.csv", CSV))
    assert first.status_code == 201, first.data
    assert first.data["created"] == 2 and first.data["duplicates"] == 0
    assert len(first.data["errors"]) == 1 and first.data["errors"][0]["line"] == 4
    pairs = QAPair.objects.filter(dataset=dataset)
    assert pairs.count() == 2 and set(pairs.values_list("status", flat=True)) == {"pending"}
    assert set(pairs.values_list("created_by", flat=True)) == {bob.pk}

    again = client.post(f"{detail(dataset)}import/", upload("pairs.csv", CSV))
    assert again.status_code == 200
    assert again.data["created"] == 0 and again.data["duplicates"] == 2
    assert pairs.count() == 2


def test_import_can_approve_at_once(api_as, bob, dataset):
    response = api_as(bob).post(f"{detail(dataset)}import/", upload("pairs.csv", CSV, approve="true"))
    assert response.status_code == 201
    assert set(QAPair.objects.filter(dataset=dataset).values_list("status", flat=True)) == {"approved"}


def test_import_sharegpt(api_as, bob, dataset):
    line = {"messages": [{"role": "user", "content": "发票抬头写什么？"}, {"role": "assistant", "content": "学校全称。"}]}
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
    response = api_as(bob).post(f"{detail(dataset)}import/", upload("export-sharegpt.jsonl", data))
    assert response.status_code == 201, response.data
    assert QAPair.objects.get(dataset=dataset).answer == "学校全称。"


def test_a_garbled_file_is_400_with_the_reason_and_changes_nothing(api_as, bob, dataset, approved):
    before = list(QAPair.objects.filter(dataset=dataset).values_list("pk", "question", "status", "version"))
    response = api_as(bob).post(f"{detail(dataset)}import/", upload("pairs.csv", b"PK\x03\x04garbage\x00\xff"))
    assert response.status_code == 400
    assert "file" in response.data and "xlsx" in str(response.data["file"]).lower()
    after = list(QAPair.objects.filter(dataset=dataset).values_list("pk", "question", "status", "version"))
    assert after == before


def test_unsupported_type_and_missing_file_are_400(api_as, bob, dataset):
    client = api_as(bob)
    response = client.post(f"{detail(dataset)}import/", upload("pairs.pdf", b"%PDF-1.7"))
    assert response.status_code == 400 and "pdf" in str(response.data["file"]).lower()
    assert client.post(f"{detail(dataset)}import/", {}).status_code == 400
    assert not QAPair.objects.exists()


def test_viewer_and_read_key_cannot_import(api_as, vera, domain, dataset):
    assert api_as(vera).post(f"{detail(dataset)}import/", upload("pairs.csv", CSV)).status_code == 403
    assert key_client(domain, "read").post(f"{detail(dataset)}import/", upload("pairs.csv", CSV)).status_code == 403
    assert not QAPair.objects.exists()


def test_read_write_key_imports_without_a_user(domain, dataset):
    response = key_client(domain).post(f"{detail(dataset)}import/", upload("pairs.csv", CSV))
    assert response.status_code == 201
    assert set(QAPair.objects.values_list("created_by", flat=True)) == {None}


def test_import_entities_and_retrieval_examples_by_format(api_as, bob, dataset):
    from datasets_app.models import EntityExample, RetrievalExample

    client = api_as(bob)
    cluener = '{"text": "报销上限为3000元", "label": {"money": {"3000元": [[5, 9]]}}}\n'.encode()
    response = client.post(f"{detail(dataset)}import/", upload("ner.jsonl", cluener, format="entities"))
    assert response.status_code == 201 and response.data["created"] == 1, response.data
    assert EntityExample.objects.get(dataset=dataset).spans == [
        {"label": "money", "start": 5, "end": 9, "mention": "3000元"}]
    flag = '{"query": "住宿标准？", "pos": ["每人每天500元。"], "neg": ["差旅期限10天。"]}\n'.encode()
    response = client.post(f"{detail(dataset)}import/", upload("fe.jsonl", flag, format="flagembedding"))
    assert response.status_code == 201 and response.data["created"] == 1
    example = RetrievalExample.objects.get(dataset=dataset)
    assert example.positive_text == "每人每天500元。" and example.negatives[0][1] == "差旅期限10天。"
    bad = client.post(f"{detail(dataset)}import/", upload("x.jsonl", flag, format="parquet"))
    assert bad.status_code == 400 and "format" in bad.data


def test_a_second_dataset_with_a_taken_name_is_400_not_500(api_as, alice, domain):
    api = api_as(alice)
    assert api.post("/api/domains/finance/datasets/", {"name": "faq"}, format="json").status_code == 201
    again = api.post("/api/domains/finance/datasets/", {"name": "faq"}, format="json")
    assert again.status_code == 400 and "already has a dataset of that name" in str(again.data["name"])
    assert api.post("/api/domains/finance/datasets/", {}, format="json").status_code == 201  # the default, "main"
    default_again = api.post("/api/domains/finance/datasets/", {}, format="json")
    assert default_again.status_code == 400 and "already has a dataset of that name" in str(default_again.data["name"])
