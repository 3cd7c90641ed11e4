"""Documents pages: upload (plain form and the script's JSON), live status rows, detail, re-run, delete, chunking."""
from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from domains import jobs, stages
from domains.models import Chunk, Document, DocumentPage, Domain, Job

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
JSON = {"HTTP_ACCEPT": "application/json"}
MARKDOWN = "# 报销制度\n\n## 第一章 总则\n\n第一条 为规范报销管理，制定本办法。\n".encode()
TEXT = b"Travel claims are filed within 30 days of return.\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200


def upload_url(domain):
    return reverse("document-upload", args=[domain.slug])


def list_url(domain):
    return reverse("document-list", args=[domain.slug])


def files(*pairs):
    return [SimpleUploadedFile(name, data) for name, data in pairs]


def texts(response) -> list[str]:
    """The messages shown, without the link to the document that some of them end with."""
    if not response.context:
        return []
    return [re.sub(r' <a href="[^"]*">Open</a>$', "", str(m)) for m in response.context["messages"]]


@pytest.fixture
def ready_document(domain, bob, data_dir):
    """A document as ingestion leaves it: two pages (the second by OCR) and three chunks."""
    path = data_dir / "domains/finance/documents/ab/abc"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"%PDF-1.4 stand-in")
    document = Document.objects.create(
        domain=domain, filename="报销办法.pdf", content_hash="abc", size_bytes=17, kind="pdf",
        storage_path="domains/finance/documents/ab/abc", status=Document.Status.READY, page_count=2,
        ocr_pages=[2], ocr_confidence=0.91, chunk_count=3, warnings=["Page 2 was read by OCR."], uploaded_by=bob,
    )
    DocumentPage.objects.create(document=document, number=1, text="第一章 总则\n第一条 为规范报销管理。")
    DocumentPage.objects.create(document=document, number=2, text="第二章 差旅费\n第五条 住宿标准。", ocr=True,
                                ocr_confidence=0.91)
    for ordinal, (text, heading, start, end) in enumerate([
        ("第一条 为规范报销管理。", ["报销办法", "第一章 总则"], 1, 1),
        ("第一条续 …… 第五条 住宿标准。", ["报销办法", "第一章 总则"], 1, 2),
        ("第五条 住宿标准。", ["报销办法", "第二章 差旅费"], 2, 2),
    ]):
        Chunk.objects.create(domain=domain, document=document, ordinal=ordinal, text=text, heading_path=heading,
                             page_start=start, page_end=end, length=len(text), content_hash=f"h{ordinal}")
    return document


# Upload -------------------------------------------------------------------------------------


def test_plain_form_uploads_several_files_and_queues_their_jobs_after_commit(
    client_as, bob, domain, data_dir, sent, django_capture_on_commit_callbacks
):
    client = client_as(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            upload_url(domain), {"files": files(("规则.md", MARKDOWN), ("travel.txt", TEXT))}, follow=True
        )
    assert response.redirect_chain == [(list_url(domain), 302)]
    documents = {d.filename: d for d in Document.objects.filter(domain=domain)}
    assert set(documents) == {"规则.md", "travel.txt"}
    assert {d.kind for d in documents.values()} == {"markdown", "text"}
    ingest = Job.objects.filter(domain=domain, kind="ingest")
    assert sorted(sent) == sorted(ingest.values_list("pk", flat=True)) and len(sent) == 2
    assert {d.last_job_id for d in documents.values()} == set(sent)
    assert all(d.uploaded_by == bob for d in documents.values())
    assert texts(response) == ["规则.md uploaded; it is being read now.", "travel.txt uploaded; it is being read now."]
    html = response.content.decode()
    for document in documents.values():
        # The new rows poll their status while the ingest job is queued.
        assert f'hx-get="{list_url(domain)}?document={document.pk}"' in html


def test_the_script_gets_json_outcomes_and_duplicates_point_at_the_first_upload(
    client_as, bob, domain, data_dir, sent
):
    client = client_as(bob)
    first = client.post(upload_url(domain), {"files": files(("rules.md", MARKDOWN))}, **JSON)
    assert first.status_code == 200 and first["Content-Type"] == "application/json"
    [result] = first.json()["results"]
    document = Document.objects.get(domain=domain)
    assert result["outcome"] == "uploaded"
    assert result["document"] == {
        "id": document.pk, "filename": "rules.md", "status": "pending", "url": document.get_absolute_url(),
    }
    again = client.post(upload_url(domain), {"files": files(("copy of rules.md", MARKDOWN))}, **JSON)
    [result] = again.json()["results"]
    assert result["outcome"] == "duplicate"
    assert result["message"] == "copy of rules.md was already uploaded as “rules.md”."
    assert result["document"]["id"] == document.pk
    assert Document.objects.filter(domain=domain).count() == 1
    assert Job.objects.filter(kind="ingest").count() == 1
    # Without the script, the same duplicate is a message on the list page.
    plain = client.post(upload_url(domain), {"files": files(("third.md", MARKDOWN))}, follow=True)
    assert texts(plain) == ["third.md was already uploaded as “rules.md”."]
    link = f'was already uploaded as “rules.md”. <a href="{document.get_absolute_url()}">Open</a></li>'
    assert link in plain.content.decode()  # a link to the first upload, kept through the redirect


def test_empty_file_becomes_a_failed_document_with_a_reason_and_no_job(client_as, bob, domain, data_dir, sent):
    response = client_as(bob).post(upload_url(domain), {"files": files(("empty.txt", b""))}, **JSON)
    [result] = response.json()["results"]
    document = Document.objects.get(domain=domain)
    assert (document.status, document.error_code) == ("failed", "empty_file")
    assert result["outcome"] == "refused" and result["document"]["id"] == document.pk
    assert "empty" in result["message"] and "0 bytes" in result["message"]
    assert not Job.objects.filter(kind="ingest").exists() and sent == []


def test_an_executable_named_txt_is_refused_as_unsupported(client_as, bob, domain, data_dir, sent):
    response = client_as(bob).post(upload_url(domain), {"files": files(("manual.txt", ELF))}, follow=True)
    document = Document.objects.get(domain=domain, filename="manual.txt")
    assert (document.status, document.error_code) == ("failed", "unsupported_type")
    [message] = texts(response)
    assert message.startswith("manual.txt was refused: VSM does not read this type of file.")
    assert "executable" in message
    assert not Job.objects.filter(kind="ingest").exists()
    html = response.content.decode()
    assert "VSM does not read this type of file." in html  # the row says why
    assert f'hx-get="{list_url(domain)}?document={document.pk}"' not in html  # nothing to poll


def test_an_over_limit_file_is_refused_with_the_limit_and_nothing_is_stored(
    client_as, bob, domain, data_dir, sent, settings
):
    settings.VSM_MAX_UPLOAD_MB = 1
    big = b"a" * (3 * 1024 * 1024 // 2)
    response = client_as(bob).post(
        upload_url(domain), {"files": files(("huge.txt", big), ("small.txt", TEXT))}, **JSON
    )
    results = {r["filename"]: r for r in response.json()["results"]}
    assert results["huge.txt"]["outcome"] == "refused" and results["huge.txt"]["document"] is None
    assert results["huge.txt"]["message"] == "huge.txt is larger than the 1 MB limit."
    assert results["small.txt"]["outcome"] == "uploaded"
    assert list(Document.objects.filter(domain=domain).values_list("filename", flat=True)) == ["small.txt"]
    stored = [p for p in (data_dir / "domains/finance/documents").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in stored] == [TEXT]


def test_nothing_chosen_is_an_error(client_as, bob, domain, data_dir):
    client = client_as(bob)
    assert client.post(upload_url(domain), {}, **JSON).status_code == 400
    response = client.post(upload_url(domain), {}, follow=True)
    assert texts(response) == ["Choose one or more files to upload."]


def test_viewer_cannot_upload_and_stranger_gets_404(client_as, users, domain, data_dir, sent):
    assert client_as(users["viewer"]).post(upload_url(domain), {"files": files(("a.md", MARKDOWN))}).status_code == 403
    assert client_as(users["stranger"]).post(upload_url(domain), {"files": files(("a.md", MARKDOWN))}).status_code == 404
    assert not Document.objects.exists() and sent == []
    assert not (data_dir / "domains").exists()


def test_upload_area_only_for_writers_and_chunk_form_only_for_owners(client_as, users, domain):
    for role, upload, chunking in [("owner", True, True), ("expert", True, False), ("viewer", False, False)]:
        html = client_as(users[role]).get(list_url(domain)).content.decode()
        assert ('id="upload-form"' in html) is upload, role
        assert ('enctype="multipart/form-data"' in html) is upload, role
        assert ('id="chunking-form"' in html) is chunking, role
        assert "2000" in html  # everyone sees the chunk size
    html = client_as(users["owner"]).get(list_url(domain)).content.decode()
    assert 'src="/static/js/upload.js"' in html and 'name="files"' in html and " multiple" in html


def test_the_upload_script_is_served_locally(client_as, alice, domain):
    from django.contrib.staticfiles import finders

    script = open(finders.find("js/upload.js"), encoding="utf-8").read()
    assert "XMLHttpRequest" in script and "upload.addEventListener(\"progress\"" in script
    assert '"Accept", "application/json"' in script and "X-CSRFToken" in script and "drop" in script


# List and status polling --------------------------------------------------------------------


def test_list_shows_each_document_with_its_facts(client_as, vera, domain, ready_document):
    response = client_as(vera).get(list_url(domain))
    assert response.status_code == 200
    assert [d.pk for d in response.context["documents"]] == [ready_document.pk]
    html = response.content.decode()
    row = html[html.index(f'id="document-{ready_document.pk}"'):]
    row = row[: row.index("</tr>")]
    assert "报销办法.pdf" in row and ">pdf<" in row and 'data-status="ready"' in row
    assert '<td class="num">2</td>' in row  # pages
    assert '<td class="num">1</td>' in row  # OCR'd pages
    assert '<td class="num">3</td>' in row  # chunks
    assert "17\xa0bytes" in row and "bob" in row
    assert "hx-get" not in row


def test_status_filter(client_as, vera, domain, ready_document):
    Document.objects.create(domain=domain, filename="broken.txt", content_hash="x", status="failed", error="bad")
    client = client_as(vera)
    assert [d.filename for d in client.get(list_url(domain) + "?status=failed").context["documents"]] == ["broken.txt"]
    assert len(client.get(list_url(domain) + "?status=nonsense").context["documents"]) == 2


def test_row_poll_shows_the_job_progress_then_stops_with_286(client_as, vera, domain, ready_document, sent):
    job = jobs.enqueue_job(domain=domain, kind="ingest", params={"document_id": ready_document.pk})
    Document.objects.filter(pk=ready_document.pk).update(last_job=job, status=Document.Status.PROCESSING)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, progress_done=1, progress_total=4)
    client = client_as(vera)
    poll = f"{list_url(domain)}?document={ready_document.pk}"
    running = client.get(poll, **HTMX)
    assert running.status_code == 200
    html = running.content.decode()
    assert html.lstrip().startswith(f'<tr id="document-{ready_document.pk}"') and "<html" not in html
    assert f'hx-get="{poll}"' in html and 'aria-valuenow="25"' in html and "Processing" in html
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, progress_done=4)
    Document.objects.filter(pk=ready_document.pk).update(status=Document.Status.READY)
    done = client.get(poll, **HTMX)
    assert done.status_code == 286
    html = done.content.decode()
    assert "Ready" in html and "hx-get" not in html and "progressbar" not in html


def test_row_poll_of_another_domains_document_is_404(client_as, alice, charlie, domain, other_domain):
    foreign = Document.objects.create(domain=other_domain, filename="pigs.txt", content_hash="p")
    client = client_as(alice)
    assert client.get(f"{list_url(domain)}?document={foreign.pk}", **HTMX).status_code == 404
    assert client.get(f"{list_url(domain)}?document=abc", **HTMX).status_code == 404
    assert client.get(reverse("document-detail", args=[domain.slug, foreign.pk])).status_code == 404
    assert client.post(reverse("document-delete", args=[domain.slug, foreign.pk])).status_code == 404
    assert client.post(reverse("document-reingest", args=[domain.slug, foreign.pk])).status_code == 404
    assert Document.objects.filter(pk=foreign.pk).exists()


def test_htmx_without_a_row_gets_the_table(client_as, vera, domain, ready_document):
    response = client_as(vera).get(list_url(domain), **HTMX)
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="document-table">') and "<html" not in html
    assert f'id="document-{ready_document.pk}"' in html
    assert 'data-filter="ready">Ready <span class="muted">1</span>' in html  # the counts are refreshed too


def test_stranger_gets_404_everywhere(client_as, users, domain, ready_document):
    client = client_as(users["stranger"])
    detail = reverse("document-detail", args=[domain.slug, ready_document.pk])
    assert client.get(list_url(domain)).status_code == 404
    assert client.get(detail).status_code == 404
    assert client.get(f"{list_url(domain)}?document={ready_document.pk}", **HTMX).status_code == 404
    assert client.post(reverse("document-delete", args=[domain.slug, ready_document.pk])).status_code == 404
    assert client.post(reverse("document-chunking", args=[domain.slug]), {
        "chunk_target_chars": 1000, "chunk_overlap_chars": 100}).status_code == 404
    assert Document.objects.filter(pk=ready_document.pk).exists()


# Detail -------------------------------------------------------------------------------------


def test_detail_shows_each_page_beside_the_chunks_that_start_on_it(client_as, vera, domain, ready_document):
    response = client_as(vera).get(ready_document.get_absolute_url())
    assert response.status_code == 200
    rows = response.context["rows"]
    assert [r.page.number for r in rows] == [1, 2]
    assert [[c.ordinal for c in r.chunks] for r in rows] == [[0, 1], [2]]
    html = response.content.decode()
    page1 = html[html.index('id="page-1"'):html.index('id="page-2"')]
    assert "第一章 总则\n第一条 为规范报销管理。" in page1  # the page's own text, in the left column
    assert page1.index('class="page-text"') < page1.index('class="page-chunks"')  # chunks beside it
    assert "报销办法 › 第一章 总则" in page1 and "p. 1–2" in page1 and "p. 1 ·" in page1
    assert "12 characters" in page1
    page2 = html[html.index('id="page-2"'):]
    assert "OCR 91%" in page2 and "第二章 差旅费" in page2
    # The facts: OCR pages and confidence, warnings.
    assert "1 page: 2" in html and "mean confidence 91%" in html
    assert "Page 2 was read by OCR." in html
    assert "hx-get" not in html  # nothing running: no poll


def test_detail_of_a_failed_document_says_why(client_as, vera, domain):
    document = Document.objects.create(
        domain=domain, filename="locked.pdf", content_hash="l", status="failed", error_code="encrypted_pdf",
        error="The PDF needs a password to open; remove the protection and upload it again.",
    )
    html = client_as(vera).get(document.get_absolute_url()).content.decode()
    assert 'id="document-error"' in html
    assert "The PDF is protected by a password." in html and "remove the protection" in html
    assert "Nothing was read from this document" in html


def test_detail_panel_polls_while_reading_and_refreshes_the_page_when_done(
    client_as, vera, domain, ready_document, sent
):
    job = jobs.enqueue_job(domain=domain, kind="ingest", params={"document_id": ready_document.pk})
    Document.objects.filter(pk=ready_document.pk).update(last_job=job, status=Document.Status.PENDING)
    client = client_as(vera)
    url = ready_document.get_absolute_url()
    page = client.get(url).content.decode()
    assert f'hx-get="{url}"' in page and "Waiting for a worker" in page
    panel = client.get(url, **HTMX)
    assert panel.status_code == 200 and panel.content.decode().lstrip().startswith('<section id="document-panel"')
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    done = client.get(url, **HTMX)
    assert done["HX-Refresh"] == "true"


def test_only_writers_see_rerun_and_delete(client_as, users, domain, ready_document):
    for role, expected in [("owner", True), ("expert", True), ("viewer", False)]:
        html = client_as(users[role]).get(ready_document.get_absolute_url()).content.decode()
        assert (reverse("document-reingest", args=[domain.slug, ready_document.pk]) in html) is expected
        assert (reverse("document-delete", args=[domain.slug, ready_document.pk]) in html) is expected
    html = client_as(users["expert"]).get(ready_document.get_absolute_url()).content.decode()
    assert "Datasets built from it will be marked stale; reviewed question–answer pairs are kept." in html


# Re-run and delete --------------------------------------------------------------------------


def test_rerun_queues_a_job_and_refuses_while_one_is_active(
    client_as, bob, vera, domain, ready_document, sent, django_capture_on_commit_callbacks
):
    url = reverse("document-reingest", args=[domain.slug, ready_document.pk])
    assert client_as(vera).post(url).status_code == 403
    client = client_as(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, follow=True)
    assert response.redirect_chain == [(ready_document.get_absolute_url(), 302)]
    job = Job.objects.get(domain=domain, kind="ingest")
    ready_document.refresh_from_db()
    assert ready_document.last_job == job and ready_document.status == "pending" and sent == [job.pk]
    assert texts(response) == ["Reading “报销办法.pdf” again. Its progress shows below."]
    again = client.post(url, follow=True)
    assert texts(again) == ["This document is already being processed."]
    assert Job.objects.filter(kind="ingest").count() == 1


def test_delete_removes_pages_chunks_and_the_stored_file(
    client_as, bob, vera, domain, ready_document, django_capture_on_commit_callbacks
):
    url = reverse("document-delete", args=[domain.slug, ready_document.pk])
    path = ready_document.path
    assert client_as(vera).post(url).status_code == 403
    assert client_as(bob).get(url).status_code == 405
    with django_capture_on_commit_callbacks(execute=True):
        response = client_as(bob).post(url, follow=True)
    assert response.redirect_chain == [(list_url(domain), 302)]
    assert not Document.objects.filter(pk=ready_document.pk).exists()
    assert not DocumentPage.objects.exists() and not Chunk.objects.exists()
    assert not path.exists()
    [message] = texts(response)
    assert "“报销办法.pdf” deleted." in message and "marked stale" in message and "kept" in message


# Chunking -----------------------------------------------------------------------------------


def test_owner_changes_chunking_and_sees_the_rechunk_job(
    client_as, alice, domain, ready_document, sent, django_capture_on_commit_callbacks
):
    url = reverse("document-chunking", args=[domain.slug])
    with django_capture_on_commit_callbacks(execute=True):
        response = client_as(alice).post(url, {"chunk_target_chars": 800, "chunk_overlap_chars": 80}, follow=True)
    assert response.redirect_chain == [(list_url(domain), 302)]
    domain.refresh_from_db()
    assert (domain.chunk_target_chars, domain.chunk_overlap_chars) == (800, 80)
    job = Job.objects.get(domain=domain, kind="rechunk")
    assert sent == [job.pk]
    assert texts(response) == ["Chunk settings saved. The ready documents are being re-chunked."]
    html = response.content.decode()
    assert 'id="rechunk-job"' in html and f'hx-get="{list_url(domain)}?job={job.pk}"' in html
    assert client_as(alice).get(f"{list_url(domain)}?job={job.pk}", **HTMX).status_code == 200
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    assert client_as(alice).get(f"{list_url(domain)}?job={job.pk}", **HTMX).status_code == 286


def test_chunking_without_ready_documents_queues_nothing(client_as, alice, domain, sent):
    response = client_as(alice).post(reverse("document-chunking", args=[domain.slug]),
                                     {"chunk_target_chars": 1000, "chunk_overlap_chars": 0}, follow=True)
    assert texts(response) == ["Chunk settings saved. Documents read from now on use them."]
    assert not Job.objects.filter(kind="rechunk").exists()


@pytest.mark.parametrize("size, overlap, field, error", [
    (500, 500, "chunk_overlap_chars", "The overlap must be smaller than the chunk size."),
    (500, 900, "chunk_overlap_chars", "The overlap must be smaller than the chunk size."),
    (100, 10, "chunk_target_chars", "Ensure this value is greater than or equal to 200."),
    ("", 10, "chunk_target_chars", "This field is required."),
])
def test_chunking_form_refuses_bad_values(client_as, alice, domain, size, overlap, field, error):
    response = client_as(alice).post(reverse("document-chunking", args=[domain.slug]),
                                     {"chunk_target_chars": size, "chunk_overlap_chars": overlap})
    assert response.status_code == 200
    assert response.context["chunking_form"].errors[field] == [error]
    assert error in response.content.decode()
    domain.refresh_from_db()
    assert (domain.chunk_target_chars, domain.chunk_overlap_chars) == (2000, 200)
    assert not Job.objects.exists()


def test_experts_and_viewers_cannot_change_chunking(client_as, users, domain):
    url = reverse("document-chunking", args=[domain.slug])
    for role in ("expert", "viewer"):
        assert client_as(users[role]).post(url, {"chunk_target_chars": 900, "chunk_overlap_chars": 0}).status_code == 403
    assert Domain.objects.get(pk=domain.pk).chunk_target_chars == 2000


# Dashboard and language ---------------------------------------------------------------------


def test_the_documents_stage_links_here_once_filled(client_as, alice, domain, ready_document, monkeypatch):
    """The line proposed for DomainsConfig.ready(): the dashboard card counts documents and links to the list."""
    monkeypatch.setattr(stages, "_STAGES", dict(stages._STAGES))  # undone after the test
    stages.fill("documents", count=lambda d: Document.objects.for_domain(d).count(), url_name="document-list")
    card = client_as(alice).get(reverse("domain-dashboard", args=[domain.slug])).context["cards"][0]
    assert (card.key, card.count, card.url) == ("documents", 1, list_url(domain))


def test_documents_pages_in_chinese(client_as, alice, domain, ready_document, data_dir, sent):
    client = client_as(alice)
    client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
    html = client.get(list_url(domain)).content.decode()
    assert '<html lang="zh-hans">' in html
    for text in ("上传文档", "将文件拖到这里", "分块", "文本块大小（字符）", "就绪", "OCR 页数", "保存并重新分块"):
        assert text in html, text
    assert "Upload documents" not in html and "Drop files here" not in html
    detail = client.get(ready_document.get_absolute_url()).content.decode()
    for text in ("页面与文本块", "第 1 页", "重新运行", "删除文档", "标记为过期"):
        assert text in detail, text
    response = client.post(upload_url(domain), {"files": files(("manual.txt", ELF))}, **JSON)
    assert "VSM 无法读取这种类型的文件" in response.json()["results"][0]["message"]
    failed = Document.objects.get(filename="manual.txt")
    assert "VSM 无法读取这种类型的文件" in client.get(failed.get_absolute_url()).content.decode()


def test_a_cancelled_reading_stops_polling_and_says_so(client_as, vera, domain, ready_document, sent):
    job = jobs.enqueue_job(domain=domain, kind="ingest", params={"document_id": ready_document.pk})
    Document.objects.filter(pk=ready_document.pk).update(last_job=job, status=Document.Status.PENDING)
    jobs.cancel_job(job)
    response = client_as(vera).get(f"{list_url(domain)}?document={ready_document.pk}", **HTMX)
    assert response.status_code == 286
    html = response.content.decode()
    assert "Waiting" in html and 'data-status="cancelled"' in html and "hx-get" not in html


def test_long_documents_are_shown_twenty_pages_at_a_time(client_as, vera, domain, ready_document):
    DocumentPage.objects.bulk_create(DocumentPage(document=ready_document, number=n, text=f"text of page {n}")
                                     for n in range(3, 26))
    Chunk.objects.create(domain=domain, document=ready_document, ordinal=3, text="end matter", page_start=None,
                         length=10, content_hash="h3")
    client = client_as(vera)
    first = client.get(ready_document.get_absolute_url())
    assert [r.page.number for r in first.context["rows"]] == list(range(1, 21))
    assert "Pages 1–20 of 25" in first.content.decode() and "end matter" not in first.content.decode()
    second = client.get(ready_document.get_absolute_url() + "?page=2")
    rows = second.context["rows"]
    assert [r.page.number for r in rows[:-1]] == list(range(21, 26))
    assert rows[-1].page is None and [c.text for c in rows[-1].chunks] == ["end matter"]
    assert "Chunks without a page" in second.content.decode()
