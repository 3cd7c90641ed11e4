"""A real headless Chromium: log in, open a domain, start a worker check and watch its progress bar.

Needs Debian's ``chromium`` (Playwright's own browser download is not used). The job runs
in-process: ``domains.jobs._send`` is patched to hand the job id to a thread that calls
``run_job``, standing in for a qcluster worker.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from domains import jobs
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@pytest.fixture
def inprocess_worker(monkeypatch):
    """Run every enqueued job in a thread of this process; join them before the database is flushed."""
    from django.db import connection

    threads: list[threading.Thread] = []

    def work(job_id: int) -> None:
        try:
            jobs.run_job(job_id)
        finally:
            connection.close()

    def send(job_id: int) -> None:
        thread = threading.Thread(target=work, args=(job_id,), name=f"job-{job_id}", daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(jobs, "_send", send)
    yield threads
    for thread in threads:
        thread.join(timeout=30)


@pytest.fixture
def page():
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 860})
        page = context.new_page()
        page.set_default_timeout(10_000)
        yield page
        context.close()
        browser.close()
        # ORM calls made while Playwright's loop was current used their own connections: close them,
        # or PostgreSQL refuses to drop the test database at the end of the run.
        from django.db import connections

        connections.close_all()


def test_worker_check_progress_is_live(live_server, domain, alice, inprocess_worker, page):
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "?job=" in r.url else None)

    # Log in through the form.
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    # Home → the domain → its jobs.
    page.click("#domain-list >> text=University finance")
    page.wait_for_url(f"{live_server.url}/d/finance/")
    assert page.locator(".pipeline .stage").count() == 5
    page.click("nav.tabs >> text=Jobs")
    page.wait_for_url(f"{live_server.url}/d/finance/jobs/")

    # Start a worker check of 6 × 0.4 s.
    page.fill("#id_steps", "6")
    page.fill("#id_step_seconds", "0.4")
    page.click("#selfcheck-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/d/finance/jobs/")
    row = page.locator("tr.job-row").first
    bar = row.locator("[role=progressbar]")

    seen: list[int] = []
    status = ""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        # One read of both attributes: htmx may swap the row between two separate reads.
        percent, status = bar.evaluate("b => [b.dataset.percent, b.dataset.status]")
        seen.append(int(percent))
        if status in {"succeeded", "failed", "cancelled"}:
            break
        page.wait_for_timeout(100)
    assert status == "succeeded", seen
    assert seen[-1] == 100
    assert any(0 < p < 100 for p in seen), f"the bar never showed a value between 0 and 100: {seen}"
    assert seen == sorted(seen), seen
    assert bar.get_attribute("aria-valuenow") == "100"
    assert "Succeeded" in row.inner_text()

    # The last poll was answered with 286: the row no longer polls, and no further requests go out.
    assert row.get_attribute("hx-trigger") is None
    polls_at_end = len(polls)
    assert polls_at_end >= 1
    page.wait_for_timeout(2_200)
    assert len(polls) == polls_at_end

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "jobs.png"), full_page=True)

    # The job's own page, reached through the row's plain link.
    row.locator("a").first.click()
    page.wait_for_url(f"{live_server.url}/d/finance/jobs/*/")
    panel = page.locator("#job-panel")
    assert panel.locator("[data-status]").first.get_attribute("data-status") == "succeeded"
    assert panel.locator("[role=progressbar]").get_attribute("data-percent") == "100"
    assert "worker check: 6 steps of 0.4s" in panel.locator("pre.log").inner_text()
    assert panel.locator("text=Cancel job").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "job-detail.png"), full_page=True)

