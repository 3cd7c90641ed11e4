"""The ingest and rechunk jobs: the Django adapter around the ingestion engine, run in-process."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from domains import jobs, services
from domains.jobs import JobCancelled, run_job
from domains.models import Chunk, Document, DocumentPage, Job
from domains.signals import chunks_removed

from .engine import docs


def _upload(domain, user, name: str, data: bytes) -> Document:
    [outcome] = services.upload_documents(domain=domain, uploaded_by=user, files=[SimpleUploadedFile(name, data)])
    return outcome.document


def _ingest(document: Document) -> Job:
    job = Job.objects.filter(kind="ingest", params__document_id=document.pk).latest("pk")
    run_job(job.pk)
    job.refresh_from_db()
    document.refresh_from_db()
    return job


def test_regulation_pdf_becomes_pages_and_chunks(domain, bob, data_dir, sent, tmp_path):
    pdf = docs.regulation_pdf(tmp_path / "in.pdf").read_bytes()
    doc = _upload(domain, bob, "报销办法.pdf", pdf)
    job = _ingest(doc)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert doc.status == Document.Status.READY and doc.kind == "pdf"
    assert doc.page_count == DocumentPage.objects.filter(document=doc).count() > 1
    assert doc.ocr_pages == [] and doc.chunk_count == Chunk.objects.filter(document=doc).count() > 0
    assert job.progress_total == doc.page_count and job.percent == 100  # per-page progress
    texts = " ".join(Chunk.objects.filter(document=doc).values_list("text", flat=True))
    assert "3000元" in texts
    article = Chunk.objects.filter(document=doc, text__contains="第三条").first()
    assert article.heading_path and any("第一章" in h or "总则" in h for h in article.heading_path)
    assert article.page_start >= 1 and article.length == len(article.text)
    assert (data_dir / "domains/finance/blocks" / f"{doc.content_hash}.json").exists()


def test_reingest_replaces_rather_than_duplicates(domain, bob, data_dir, sent, tmp_path):
    doc = _upload(domain, bob, "a.pdf", docs.regulation_pdf(tmp_path / "in.pdf").read_bytes())
    _ingest(doc)
    first = list(Chunk.objects.filter(document=doc).values_list("content_hash", flat=True))
    removed = []
    chunks_removed.connect(receiver := lambda sender, chunk_ids, **kw: removed.extend(chunk_ids))
    try:
        Job.objects.update(status=Job.Status.SUCCEEDED)
        services.reingest_document(document=doc, by=bob)
        _ingest(doc)
    finally:
        chunks_removed.disconnect(receiver)
    again = list(Chunk.objects.filter(document=doc).values_list("content_hash", flat=True))
    assert again == first and len(removed) == len(first)
    assert DocumentPage.objects.filter(document=doc).count() == doc.page_count


@pytest.mark.parametrize("name,make,code", [
    ("locked.pdf", lambda tmp: docs.encrypted_pdf(tmp / "x.pdf").read_bytes(), "encrypted_pdf"),
    ("broken.pdf", lambda tmp: b"%PDF-1.7\n1 0 obj<<>>\nthis is not a pdf body" + bytes(range(256)) * 8, "corrupt_file"),
])
def test_bad_files_fail_the_document_and_the_job_with_the_reason(domain, bob, data_dir, sent, tmp_path, name, make, code):
    good = _upload(domain, bob, "ok.md", "# 标题\n\n第一条 内容。\n".encode())
    _ingest(good)
    doc = _upload(domain, bob, name, make(tmp_path))
    job = _ingest(doc)
    assert job.status == Job.Status.FAILED and doc.status == Document.Status.FAILED
    assert doc.error_code == code and doc.error and job.error == doc.error
    good.refresh_from_db()
    assert good.status == Document.Status.READY and good.chunk_count > 0  # nothing else touched


def test_missing_file_fails_clearly(domain, bob, data_dir, sent):
    doc = _upload(domain, bob, "a.md", "# 标题\n\n第一条 内容。\n".encode())
    doc.path.unlink()
    job = _ingest(doc)
    assert job.status == Job.Status.FAILED and "stored file is missing" in job.error
    assert doc.status == Document.Status.FAILED and doc.error_code == "missing_file"


def test_cancelled_ingest_leaves_a_document_that_can_be_rerun(domain, bob, data_dir, sent, tmp_path, monkeypatch):
    doc = _upload(domain, bob, "a.pdf", docs.regulation_pdf(tmp_path / "in.pdf").read_bytes())
    job = Job.objects.get(kind="ingest")

    def cancel_on_first_page(self, done, total=None, message=None):
        raise JobCancelled()

    monkeypatch.setattr(jobs.JobContext, "progress", cancel_on_first_page)
    run_job(job.pk)
    job.refresh_from_db()
    doc.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert doc.status == Document.Status.FAILED and doc.error_code == "cancelled"
    assert not Chunk.objects.filter(document=doc).exists()


def test_rechunk_uses_the_domain_settings_without_reparsing(domain, bob, data_dir, sent, tmp_path, monkeypatch):
    articles = "\n\n".join(
        f"第{n}条 报销单据须在费用发生后三十日内提交，金额{n}000元及以上的须附合同或协议，并由经办人和负责人签字确认。"
        for n in range(1, 13)
    )
    doc = _upload(domain, bob, "a.md", f"# 报销办法\n\n## 第一章 总则\n\n{articles}\n".encode())
    _ingest(doc)
    before = doc.chunk_count
    import domains.engine.ingest as engine_ingest

    monkeypatch.setattr(engine_ingest, "ingest_file", lambda *a, **k: pytest.fail("rechunk must not re-parse"))
    job = services.update_chunking(domain=domain, target_chars=300, overlap_chars=50, by=bob)
    run_job(job.pk)
    job.refresh_from_db()
    doc.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert doc.chunk_count == Chunk.objects.filter(document=doc).count() > before
    assert max(Chunk.objects.filter(document=doc).values_list("length", flat=True)) <= 300


def test_scanned_pdf_is_read_by_ocr_and_recorded(domain, bob, data_dir, sent, tmp_path):
    doc = _upload(domain, bob, "scan.pdf", docs.scanned_pdf(tmp_path / "scan.pdf").read_bytes())
    job = _ingest(doc)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert doc.ocr_pages == [1] and doc.ocr_confidence > 0.8
    page = DocumentPage.objects.get(document=doc, number=1)
    assert page.ocr and page.ocr_confidence > 0.8
    text = "".join(Chunk.objects.filter(document=doc).values_list("text", flat=True)).replace(" ", "")
    assert "3000元及以上的需签订协议" in text
