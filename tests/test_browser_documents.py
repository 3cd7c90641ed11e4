"""A real headless Chromium on the documents page: several files at once and a drop, each with its own
progress bar and outcome, then the rows' live status until their jobs finish.

The ingest jobs are not run (``domains.jobs._send`` is a no-op); the test finishes them in the
database, as a worker would, and watches the rows stop polling.
"""
from __future__ import annotations

import time

import pytest

from domains import jobs
from domains.models import Chunk, Document, DocumentPage, Job
from tests.test_browser import SCREENSHOTS, page  # noqa: F401 (the page fixture)
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MARKDOWN = "# 报销制度\n\n## 第一章 总则\n\n第一条 为规范报销管理，制定本办法。\n".encode()
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200


def test_upload_several_files_with_progress_and_outcomes(live_server, domain, bob, page, settings,  # noqa: F811
                                                         tmp_path, monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the ORM calls below are still plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.VSM_DATA_DIR = tmp_path
    settings.VSM_MAX_UPLOAD_MB = 1
    monkeypatch.setattr(jobs, "_send", lambda job_id: None)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "?document=" in r.url else None)

    page.goto(f"{live_server.url}/login/?next=/d/finance/documents/")
    page.fill("#id_username", "bob")
    page.fill("#id_password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{live_server.url}/d/finance/documents/")
    assert page.locator("#upload-form.js-upload").count() == 1  # the script took over the form

    # Three files chosen at once, one of them far over the limit (refused before it is sent).
    page.set_input_files("#upload-files", [
        {"name": "规则.md", "mimeType": "text/markdown", "buffer": MARKDOWN},
        {"name": "manual.txt", "mimeType": "text/plain", "buffer": ELF},
        {"name": "huge.txt", "mimeType": "text/plain", "buffer": b"a" * (3 * 1024 * 1024 // 2)},
    ])
    items = page.locator("#upload-list .upload-item")
    page.wait_for_function("document.querySelectorAll('#upload-list [data-outcome]').length === 3")
    outcomes = {items.nth(i).locator(".name").inner_text(): items.nth(i) for i in range(3)}
    assert outcomes["规则.md"].get_attribute("data-outcome") == "uploaded"
    assert outcomes["规则.md"].locator("[role=progressbar]").get_attribute("aria-valuenow") == "100"
    assert "uploaded; it is being read now" in outcomes["规则.md"].inner_text()
    assert outcomes["manual.txt"].get_attribute("data-outcome") == "refused"
    assert "VSM does not read this type of file." in outcomes["manual.txt"].inner_text()
    assert outcomes["huge.txt"].get_attribute("data-outcome") == "refused"
    assert "Larger than the 1 MB limit" in outcomes["huge.txt"].inner_text()

    # A file dropped on the zone: the same content again is a duplicate, linked to the first upload.
    page.evaluate(
        """(text) => {
            const data = new DataTransfer();
            data.items.add(new File([text], "copy.md", {type: "text/markdown"}));
            const zone = document.querySelector(".dropzone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        MARKDOWN.decode(),
    )
    page.wait_for_function("document.querySelectorAll('#upload-list [data-outcome]').length === 4")
    dropped = items.nth(3)
    assert dropped.get_attribute("data-outcome") == "duplicate"
    first = Document.objects.get(filename="规则.md")
    assert dropped.locator("a").get_attribute("href") == first.get_absolute_url()

    # The table was refreshed after the uploads: the new document's row polls its job.
    rows = page.locator("tr.document-row")
    page.wait_for_function("document.querySelectorAll('tr.document-row').length === 2")
    assert page.locator("#document-table [data-filter='']").inner_text().split() == ["All", "2"]
    row = page.locator(f"#document-{first.pk}")
    assert row.get_attribute("hx-trigger") == "every 1s"
    assert row.locator("[role=progressbar]").count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # let the bars' width transition end
    page.screenshot(path=str(SCREENSHOTS / "documents-upload.png"), full_page=True)

    # A worker finishes the job: the row shows Ready and stops polling (286).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not polls:  # the row has polled at least once
        page.wait_for_timeout(100)
    assert polls
    Document.objects.filter(pk=first.pk).update(status=Document.Status.READY, page_count=1, chunk_count=1)
    Job.objects.filter(pk=first.last_job_id).update(status=Job.Status.SUCCEEDED)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and row.get_attribute("data-status") != "ready":
        page.wait_for_timeout(100)
    assert row.get_attribute("data-status") == "ready" and row.get_attribute("hx-trigger") is None
    polls_at_end = len(polls)
    page.wait_for_timeout(2_200)
    assert len(polls) == polls_at_end
    assert rows.count() == 2 and Document.objects.count() == 2

    # Its page: the page's text on the left, the chunks that start on it on the right.
    DocumentPage.objects.create(document=first, number=1, text=MARKDOWN.decode())
    Chunk.objects.create(domain=domain, document=first, ordinal=0, text="第一条 为规范报销管理，制定本办法。",
                         heading_path=["报销制度", "第一章 总则"], page_start=1, page_end=1, length=17,
                         content_hash="h0")
    row.locator("a").first.click()
    page.wait_for_url(f"{live_server.url}{first.get_absolute_url()}")
    text_box = page.locator("#page-1 .page-text").bounding_box()
    chunk_box = page.locator("#page-1 .chunk").bounding_box()
    assert chunk_box["x"] > text_box["x"] + text_box["width"] - 1  # beside, not below
    assert abs(chunk_box["y"] - text_box["y"]) < 60
    assert "报销制度 › 第一章 总则" in page.locator("#page-1 .chunk header").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "document-detail.png"), full_page=True)

    # Delete asks first (no script needed), then says what happens to datasets.
    delete = page.locator("#delete-confirm button.danger")
    assert not delete.is_visible()
    page.click("#delete-confirm summary")
    assert "reviewed question–answer pairs are kept" in page.locator("#delete-confirm").inner_text()
    delete.click()
    page.wait_for_url(f"{live_server.url}/d/finance/documents/")
    assert "“规则.md” deleted." in page.locator(".messages").inner_text()
    assert not Document.objects.filter(pk=first.pk).exists()
