"""Document services: content-hash storage, dedupe, sniffed refusals, delete and re-chunk."""
from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from domains import services, storage
from domains.models import Chunk, Document, DocumentPage, Job
from domains.signals import chunks_removed

MARKDOWN = "# 报销制度\n\n## 第一章 总则\n\n第一条 为规范报销管理，制定本办法。\n".encode()


def _upload(domain, user, *files):
    return services.upload_documents(
        domain=domain, uploaded_by=user, files=[SimpleUploadedFile(name, data) for name, data in files]
    )


def test_store_by_hash_names_the_file_by_content(data_dir):
    path, sha, size = storage.store_by_hash("finance", io.BytesIO(b"hello"), max_bytes=10)
    assert path == data_dir / "domains/finance/documents" / sha[:2] / sha
    assert path.read_bytes() == b"hello" and size == 5
    with pytest.raises(storage.FileTooLarge):
        storage.store_by_hash("finance", io.BytesIO(b"x" * 11), max_bytes=10)
    leftovers = [p.name for p in (data_dir / "domains/finance/documents").iterdir() if p.is_file()]
    assert leftovers == []  # no half-written temp file stays behind


def test_upload_queues_ingest_after_commit(domain, bob, data_dir, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        [outcome] = _upload(domain, bob, ("规则.md", MARKDOWN))
    doc = outcome.document
    assert outcome.created and not outcome.error
    assert (doc.kind, doc.status, doc.size_bytes, doc.uploaded_by) == ("markdown", "pending", len(MARKDOWN), bob)
    assert doc.path.read_bytes() == MARKDOWN
    job = Job.objects.get(kind="ingest")
    assert job.params == {"document_id": doc.pk} and doc.last_job == job and sent == [job.pk]


def test_same_content_twice_is_one_document(domain, bob, data_dir, sent):
    first, second = _upload(domain, bob, ("a.md", MARKDOWN), ("copy of a.md", MARKDOWN))
    assert first.created and second.duplicate and second.document == first.document
    assert Document.objects.count() == 1 and Job.objects.filter(kind="ingest").count() == 1


def test_same_content_in_two_domains_is_two_documents(domain, other_domain, bob, charlie, data_dir, sent):
    [a] = _upload(domain, bob, ("a.md", MARKDOWN))
    [b] = _upload(other_domain, charlie, ("a.md", MARKDOWN))
    assert a.document != b.document and a.document.path != b.document.path


@pytest.mark.parametrize(
    "name,data,code",
    [("empty.pdf", b"", "empty_file"), ("manual.txt", b"\x7fELF\x02\x01\x01" + bytes(200), "unsupported_type")],
)
def test_unreadable_files_become_failed_documents_without_a_job(domain, bob, data_dir, sent, name, data, code):
    [outcome] = _upload(domain, bob, (name, data))
    doc = outcome.document
    assert doc.status == Document.Status.FAILED and doc.error_code == code and doc.error
    assert not Job.objects.exists()


def test_oversized_files_are_refused_and_not_stored(domain, bob, data_dir, sent, settings):
    settings.VSM_MAX_UPLOAD_MB = 1
    outcomes = services.upload_documents(
        domain=domain, uploaded_by=bob, oversized=["huge.pdf"],
        files=[SimpleUploadedFile("big.md", b"#" * (1024 * 1024 + 1))],
    )
    assert [o.filename for o in outcomes] == ["huge.pdf", "big.md"]
    assert all("1 MB limit" in o.error and o.document is None for o in outcomes)
    assert not Document.objects.exists()
    folder = data_dir / "domains/finance/documents"
    assert not any(p.is_file() for p in folder.rglob("*"))


def test_uploaded_file_name_cannot_escape_the_domain_folder(domain, bob, data_dir, sent):
    [outcome] = _upload(domain, bob, ("../../../etc/passwd.md", MARKDOWN))
    assert outcome.document.filename == "passwd.md"
    assert outcome.document.path.is_relative_to(data_dir / "domains/finance/documents")


def _ready_document(domain, bob, data_dir):
    [outcome] = _upload(domain, bob, ("a.md", MARKDOWN))
    doc = outcome.document
    Document.objects.filter(pk=doc.pk).update(status=Document.Status.READY)
    DocumentPage.objects.create(document=doc, number=1, text="第一条 为规范报销管理，制定本办法。")
    for i in range(2):
        Chunk.objects.create(domain=domain, document=doc, ordinal=i, text=f"chunk {i}", content_hash=str(i))
    doc.refresh_from_db()
    return doc


def test_delete_removes_pages_chunks_and_file_and_tells_listeners(
    domain, bob, data_dir, sent, django_capture_on_commit_callbacks
):
    doc = _ready_document(domain, bob, data_dir)
    chunk_ids = set(doc.chunks.values_list("pk", flat=True))
    doc_pk, path = doc.pk, doc.path
    heard = []

    def listener(sender, document, chunk_ids, **kwargs):
        heard.append((document.pk, set(chunk_ids)))

    chunks_removed.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.delete_document(document=doc)
    finally:
        chunks_removed.disconnect(listener)
    assert heard == [(doc_pk, chunk_ids)]
    assert not Chunk.objects.exists() and not DocumentPage.objects.exists() and not Document.objects.exists()
    assert not path.exists()


def test_reingest_refuses_while_processing_and_when_file_is_gone(domain, bob, data_dir, sent):
    doc = _ready_document(domain, bob, data_dir)
    with pytest.raises(ValidationError, match="already being processed"):
        services.reingest_document(document=doc, by=bob)  # the upload's ingest job is still queued
    Job.objects.update(status=Job.Status.SUCCEEDED)
    job = services.reingest_document(document=doc, by=bob)
    assert job.kind == "ingest" and Document.objects.get(pk=doc.pk).status == Document.Status.PENDING
    Job.objects.update(status=Job.Status.SUCCEEDED)
    doc.path.unlink()
    with pytest.raises(ValidationError, match="stored file is missing"):
        services.reingest_document(document=doc, by=bob)


def test_update_chunking_validates_and_queues_a_rechunk(domain, bob, data_dir, sent):
    assert services.update_chunking(domain=domain, target_chars=1000, overlap_chars=100, by=bob) is None
    _ready_document(domain, bob, data_dir)
    job = services.update_chunking(domain=domain, target_chars=800, overlap_chars=80, by=bob)
    assert job.kind == "rechunk"
    domain.refresh_from_db()
    assert (domain.chunk_target_chars, domain.chunk_overlap_chars) == (800, 80)
    with pytest.raises(ValidationError, match="overlap must be smaller"):
        services.update_chunking(domain=domain, target_chars=500, overlap_chars=500, by=bob)
    domain.refresh_from_db()
    assert domain.chunk_target_chars == 800
