"""Ingestion of a scanned PDF on a real qcluster worker, killed with -9 while OCR reads its pages:
the retry reads the document again from the start and keeps one copy of every page and chunk."""
from __future__ import annotations

import os
import signal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from domains.jobs import reap_stale_jobs
from domains.models import Chunk, Document, DocumentPage, Job
from domains.services import upload_documents

from .engine.docs import _scanned_page
from .test_worker import LEASE, _job, _wait, cluster  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PAGES = [
    ["第一章 总则", "第一条 为规范报销管理，制定本办法。"],
    ["第二章 票据", "第三条 报销金额3000元及以上的需签订协议。"],
    ["第三章 合同", "第五条 单笔支出超过一万元必须签订合同并附验收单。"],
    ["第四章 差旅", "第八条 出差人员应在返回后十个工作日内办理报销。"],
    ["第五章 附则", "第十二条 本办法由财务处负责解释，住宿费每天五百元。"],
]


def test_killed_ingest_is_retried_without_duplicates(data_dir, cluster, domain, bob, tmp_path):
    import pymupdf

    _proc, log = cluster
    doc = pymupdf.open()
    for lines in PAGES:
        _scanned_page(doc, lines, dpi=120)
    path = tmp_path / "scanned.pdf"
    doc.save(path)
    doc.close()
    [outcome] = upload_documents(domain=domain, uploaded_by=bob, files=[SimpleUploadedFile("scanned.pdf",
                                                                                            path.read_bytes())])
    document = outcome.document
    job_id = Document.objects.get(pk=document.pk).last_job_id
    running = _wait(lambda: (j := _job(job_id)).status == Job.Status.RUNNING and j.progress_done >= 1 and j,
                    120, log, "OCR to finish a page")
    os.kill(int(running.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    if _job(job_id).is_finished:
        pytest.fail("the ingest finished before the worker was killed; the test needs more pages")
    _wait(lambda: Job.objects.stale().filter(pk=job_id).exists(), 5 * LEASE, log, "the lease to expire")
    assert reap_stale_jobs()["requeued"] == 1

    done = _wait(lambda: _job(job_id).is_finished and _job(job_id), 240, log, "the retry to finish")
    assert done.status == Job.Status.SUCCEEDED, done.error + done.log_tail
    assert done.attempts == 2
    document = Document.objects.get(pk=document.pk)
    assert document.status == Document.Status.READY and document.page_count == len(PAGES)
    assert DocumentPage.objects.filter(document=document).count() == len(PAGES)  # one row per page, not two
    chunks = list(Chunk.objects.filter(document=document).values_list("ordinal", flat=True))
    assert len(chunks) == document.chunk_count == len(set(chunks))
    text = " ".join(Chunk.objects.filter(document=document).values_list("text", flat=True))
    assert "财务处" in text  # the last page was read too
