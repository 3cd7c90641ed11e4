"""A real headless Chromium on the retrieval page: build the index, watch it finish, hit-test with htmx."""
from __future__ import annotations

import pytest

from inference_app.models import RetrievalIndex
from tests.conftest import PASSWORD
from tests.test_browser import SCREENSHOTS, inprocess_worker, page  # noqa: F401 - fixtures used by name
from tests.test_distill_jobs import make_chunks
from tests.test_retrieval_jobs import MANUAL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chunks(domain, data_dir, monkeypatch):
    """Rows are made before the browser starts (its event loop forbids sync ORM calls in this thread).

    After other browser modules ran, the page fixture's final ``connections.close_all()`` finds this
    thread's connection open inside Playwright's loop; the flag lets that synchronous close happen.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    make_chunks(domain)
    make_chunks(domain, texts=MANUAL, filename="manual.md")


def test_build_then_hit_test_without_a_page_load(live_server, bob, chunks, inprocess_worker, page):  # noqa: F811

    page.goto(f"{live_server.url}/login/?next=/d/finance/retrieval/")
    page.fill("#id_username", "bob")
    page.fill("#id_password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{live_server.url}/d/finance/retrieval/")
    assert page.locator("#index-card").get_attribute("data-built") == "0"

    page.click("#index-card button[type=submit]")
    page.wait_for_url(f"{live_server.url}/d/finance/retrieval/")
    page.wait_for_selector('#index-card[data-built="1"][data-status="succeeded"]', timeout=20_000)
    assert page.locator("#index-card [data-passages]").inner_text() == "9"

    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.fill("#id_q", "E100.1 acceleration")
    page.click(".hit-form button[type=submit]")
    first = page.locator('.hit-column[data-method="bm25"] .hit').first
    first.wait_for()
    assert first.inner_text().count("E100.1") >= 1 and "manual.md" in first.inner_text()
    assert page.locator('.hit-column[data-method="hybrid"] .hit').count() >= 1
    assert navigations == []  # htmx swapped the results in; the page did not reload

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "retrieval.png"), full_page=True)
