"""API: /api/domains/<slug>/documents/ and /chunking/ — upload, list, detail, pages, chunks, re-run, delete."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from domains.models import ApiKey, Chunk, Document, DocumentPage, Domain, Job

pytestmark = pytest.mark.django_db

LIST = "/api/domains/finance/documents/"
CHUNKING = "/api/domains/finance/chunking/"
MARKDOWN = "# 报销制度\n\n## 第一章 总则\n\n第一条 为规范报销管理，制定本办法。\n".encode()
TEXT = b"Travel claims are filed within 30 days of return.\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200


def detail(document, slug: str = "finance") -> str:
    return f"/api/domains/{slug}/documents/{getattr(document, 'pk', document)}/"


def files(*pairs):
    return {"files": [SimpleUploadedFile(name, data) for name, data in pairs]}


def key_client(domain, scope: str = "read_write") -> APIClient:
    _, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def ready_document(domain, data_dir):
    path = data_dir / "domains/finance/documents/ab/abc"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in")
    document = Document.objects.create(
        domain=domain, filename="rules.pdf", content_hash="abc", size_bytes=8, kind="pdf", page_count=3,
        storage_path="domains/finance/documents/ab/abc", status=Document.Status.READY, chunk_count=3,
        ocr_pages=[3], ocr_confidence=0.8,
    )
    for number in (1, 2, 3):
        DocumentPage.objects.create(document=document, number=number, text=f"page {number}", ocr=number == 3)
    for ordinal, (start, end) in enumerate([(1, 1), (1, 2), (3, 3)]):
        Chunk.objects.create(domain=domain, document=document, ordinal=ordinal, text=f"chunk {ordinal}",
                             heading_path=["Rules", f"Part {ordinal}"], page_start=start, page_end=end,
                             length=7, content_hash=f"h{ordinal}")
    return document


@pytest.fixture
def pig_document(other_domain):
    return Document.objects.create(domain=other_domain, filename="pigs.txt", content_hash="p", status="ready")


# --- upload ------------------------------------------------------------------------------


def test_expert_uploads_several_files_queued_after_commit(
    api_as, bob, domain, data_dir, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(bob).post(LIST, files(("规则.md", MARKDOWN), ("travel.txt", TEXT)), format="multipart")
    assert response.status_code == 201, response.data
    results = response.data["results"]
    assert [(r["filename"], r["outcome"]) for r in results] == [("规则.md", "uploaded"), ("travel.txt", "uploaded")]
    documents = Document.objects.filter(domain=domain)
    assert documents.count() == 2
    jobs_ = list(Job.objects.filter(domain=domain, kind="ingest").order_by("pk").values_list("pk", flat=True))
    assert sorted(sent) == jobs_ and len(jobs_) == 2
    first = results[0]["document"]
    assert first["status"] == "pending" and first["kind"] == "markdown" and first["uploaded_by"] == "bob"
    assert first["job"]["id"] in jobs_ and first["job"]["status"] == "queued"


def test_same_content_twice_is_one_document_and_said_so(api_as, bob, domain, data_dir, sent):
    client = api_as(bob)
    first = client.post(LIST, files(("a.md", MARKDOWN)), format="multipart")
    again = client.post(LIST, files(("b.md", MARKDOWN)), format="multipart")
    assert first.status_code == 201 and again.status_code == 200  # nothing new was stored
    [result] = again.data["results"]
    assert result["outcome"] == "duplicate" and result["document"]["id"] == first.data["results"][0]["document"]["id"]
    assert result["message"] == "b.md was already uploaded as “a.md”."
    assert Document.objects.count() == 1 and Job.objects.filter(kind="ingest").count() == 1


def test_empty_and_executable_files_are_refused_with_reasons(api_as, bob, domain, data_dir, sent):
    response = api_as(bob).post(LIST, files(("empty.txt", b""), ("manual.txt", ELF)), format="multipart")
    assert response.status_code == 201  # both are kept as failed documents, to show why
    empty, elf = response.data["results"]
    assert empty["outcome"] == "refused" and empty["document"]["error_code"] == "empty_file"
    assert "empty" in empty["message"]
    assert elf["outcome"] == "refused" and elf["document"]["error_code"] == "unsupported_type"
    assert elf["document"]["status"] == "failed" and "executable" in elf["document"]["error"]
    assert not Job.objects.filter(kind="ingest").exists() and sent == []


def test_over_limit_file_refused_with_the_limit_and_not_stored(api_as, bob, domain, data_dir, sent, settings):
    settings.VSM_MAX_UPLOAD_MB = 1
    response = api_as(bob).post(LIST, files(("huge.txt", b"a" * (3 * 1024 * 1024 // 2))), format="multipart")
    assert response.status_code == 200
    [result] = response.data["results"]
    assert result == {"filename": "huge.txt", "outcome": "refused",
                      "message": "huge.txt is larger than the 1 MB limit.", "document": None}
    assert not Document.objects.exists()
    assert not [p for p in (data_dir / "domains").rglob("*") if p.is_file()]


def test_upload_needs_files(api_as, bob, domain):
    response = api_as(bob).post(LIST, {}, format="multipart")
    assert response.status_code == 400 and "files" in response.data


def test_read_write_key_uploads_read_key_and_viewer_cannot(api_as, vera, domain, data_dir, sent):
    assert key_client(domain).post(LIST, files(("a.md", MARKDOWN)), format="multipart").status_code == 201
    assert key_client(domain, "read").post(LIST, files(("b.txt", TEXT)), format="multipart").status_code == 403
    assert api_as(vera).post(LIST, files(("b.txt", TEXT)), format="multipart").status_code == 403
    assert list(Document.objects.values_list("filename", flat=True)) == ["a.md"]
    assert Document.objects.get().uploaded_by is None  # a key is not a person


def test_stranger_and_other_domains_key_get_404(api_as, charlie, domain, other_domain, ready_document, data_dir):
    for client in (api_as(charlie), key_client(other_domain)):
        assert client.get(LIST).status_code == 404
        assert client.post(LIST, files(("a.md", MARKDOWN)), format="multipart").status_code == 404
        assert client.get(detail(ready_document)).status_code == 404
        assert client.get(detail(ready_document) + "pages/").status_code == 404
        assert client.delete(detail(ready_document)).status_code == 404
        assert client.patch(CHUNKING, {"chunk_target_chars": 900}, format="json").status_code == 404
    assert Document.objects.filter(domain=domain).count() == 1


def test_a_document_of_another_domain_is_not_found_under_mine(api_as, alice, domain, pig_document):
    client = api_as(alice)
    assert client.get(detail(pig_document)).status_code == 404
    assert client.get(detail(pig_document) + "chunks/").status_code == 404
    assert client.post(detail(pig_document) + "reingest/").status_code == 404
    assert client.delete(detail(pig_document)).status_code == 404
    assert Document.objects.filter(pk=pig_document.pk).exists()


# --- read --------------------------------------------------------------------------------


def test_list_filters_by_status(api_as, vera, domain, ready_document):
    Document.objects.create(domain=domain, filename="bad.txt", content_hash="b", status="failed", error="x")
    client = api_as(vera)
    everything = client.get(LIST)
    assert everything.status_code == 200 and everything.data["count"] == 2
    failed = client.get(LIST, {"status": "failed"}).data["results"]
    assert [d["filename"] for d in failed] == ["bad.txt"]
    both = client.get(LIST, {"status": "failed,ready"}).data
    assert both["count"] == 2
    wrong = client.get(LIST, {"status": "done"})
    assert wrong.status_code == 400 and "status" in wrong.data


def test_detail_pages_and_chunks(api_as, vera, domain, ready_document):
    client = api_as(vera)
    data = client.get(detail(ready_document)).data
    assert (data["filename"], data["status"], data["page_count"], data["chunk_count"]) == ("rules.pdf", "ready", 3, 3)
    assert data["ocr_pages"] == [3] and data["ocr_confidence"] == 0.8 and data["job"] is None
    pages = client.get(detail(ready_document) + "pages/", {"limit": 2})
    assert pages.data["count"] == 3 and [p["number"] for p in pages.data["results"]] == [1, 2]
    assert pages.data["results"][0] == {"number": 1, "text": "page 1", "ocr": False, "ocr_confidence": None}
    assert pages.data["next"]
    chunks = client.get(detail(ready_document) + "chunks/").data
    assert [c["ordinal"] for c in chunks["results"]] == [0, 1, 2]
    assert chunks["results"][1]["heading_path"] == ["Rules", "Part 1"]
    assert (chunks["results"][1]["page_start"], chunks["results"][1]["page_end"]) == (1, 2)
    on_page_2 = client.get(detail(ready_document) + "chunks/", {"page": 2}).data["results"]
    assert [c["ordinal"] for c in on_page_2] == [1]
    assert client.get(detail(ready_document) + "chunks/", {"page": "two"}).status_code == 400


# --- re-run and delete -------------------------------------------------------------------


def test_reingest_queues_a_job_and_409_while_active(
    api_as, bob, vera, domain, ready_document, sent, django_capture_on_commit_callbacks
):
    url = detail(ready_document) + "reingest/"
    assert api_as(vera).post(url).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(bob).post(url)
    assert response.status_code == 202, response.data
    job = Job.objects.get(kind="ingest")
    assert response.data["status"] == "pending" and response.data["job"]["id"] == job.pk and sent == [job.pk]
    again = api_as(bob).post(url)
    assert again.status_code == 409 and again.data["detail"] == "This document is already being processed."
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    ready_document.path.unlink()
    missing = api_as(bob).post(url)
    assert missing.status_code == 400 and "upload the document again" in str(missing.data)


def test_delete_removes_pages_chunks_and_file(
    api_as, bob, vera, domain, ready_document, django_capture_on_commit_callbacks
):
    path = ready_document.path
    assert api_as(vera).delete(detail(ready_document)).status_code == 403
    assert key_client(domain, "read").delete(detail(ready_document)).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        assert api_as(bob).delete(detail(ready_document)).status_code == 204
    assert not Document.objects.exists() and not DocumentPage.objects.exists() and not Chunk.objects.exists()
    assert not path.exists()


# --- chunking ----------------------------------------------------------------------------


def test_members_read_chunking_and_owner_changes_it(
    api_as, alice, vera, domain, ready_document, sent, django_capture_on_commit_callbacks
):
    assert api_as(vera).get(CHUNKING).data == {"chunk_target_chars": 2000, "chunk_overlap_chars": 200, "job": None}
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(alice).patch(CHUNKING, {"chunk_target_chars": 800}, format="json")
    assert response.status_code == 200, response.data
    job = Job.objects.get(kind="rechunk")
    assert response.data["chunk_target_chars"] == 800 and response.data["chunk_overlap_chars"] == 200
    assert response.data["job"]["id"] == job.pk and sent == [job.pk]
    domain.refresh_from_db()
    assert domain.chunk_target_chars == 800


@pytest.mark.parametrize("body, field", [
    ({"chunk_overlap_chars": 2000}, "chunk_overlap_chars"),
    ({"chunk_target_chars": 300, "chunk_overlap_chars": 400}, "chunk_overlap_chars"),
    ({"chunk_target_chars": 50}, "chunk_target_chars"),
])
def test_chunking_refuses_bad_values(api_as, alice, domain, body, field):
    response = api_as(alice).patch(CHUNKING, body, format="json")
    assert response.status_code == 400 and field in response.data
    domain.refresh_from_db()
    assert (domain.chunk_target_chars, domain.chunk_overlap_chars) == (2000, 200)
    assert not Job.objects.exists()


def test_only_owners_change_chunking_and_only_by_patch(api_as, alice, bob, domain):
    assert api_as(bob).patch(CHUNKING, {"chunk_target_chars": 900}, format="json").status_code == 403
    assert key_client(domain).patch(CHUNKING, {"chunk_target_chars": 900}, format="json").status_code == 403
    assert api_as(alice).put(CHUNKING, {"chunk_target_chars": 900}, format="json").status_code == 405
    assert api_as(alice).post(CHUNKING, {"chunk_target_chars": 900}, format="json").status_code == 405
    assert Domain.objects.get(pk=domain.pk).chunk_target_chars == 2000


def test_schema_lists_the_document_endpoints(db):
    schema = APIClient().get("/api/schema/?format=json").json()
    operations = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    assert {
        ("get", "/api/domains/{slug}/documents/"),
        ("post", "/api/domains/{slug}/documents/"),
        ("get", "/api/domains/{slug}/documents/{id}/"),
        ("delete", "/api/domains/{slug}/documents/{id}/"),
        ("post", "/api/domains/{slug}/documents/{id}/reingest/"),
        ("get", "/api/domains/{slug}/documents/{id}/pages/"),
        ("get", "/api/domains/{slug}/documents/{id}/chunks/"),
        ("get", "/api/domains/{slug}/chunking/"),
        ("patch", "/api/domains/{slug}/chunking/"),
    } <= operations
    upload = schema["paths"]["/api/domains/{slug}/documents/"]["post"]
    assert list(upload["requestBody"]["content"]) == ["multipart/form-data"]
    assert {"200", "201"} <= set(upload["responses"])
