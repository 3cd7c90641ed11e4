"""A real headless Chromium on the chat page: the answer streams in without a page load, its
citations link to the document, and a thumbs-down is recorded through htmx."""
from __future__ import annotations

import pytest

from inference_app.models import Feedback, Message
from tests.conftest import PASSWORD
from tests.test_browser import SCREENSHOTS, page  # noqa: F401 - fixtures used by name
from tests.test_serving import COVERED_Q, NOT_COVERED, OFF_DOMAIN_Q, served  # noqa: F401
from tests.training_engine.conftest import tiny_models, tiny_tokenizers  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ready(served, monkeypatch):  # noqa: F811
    """Rows are made before the browser starts (see test_browser_retrieval.py for the flag)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    return served


def test_a_streamed_answer_with_citations_and_feedback(live_server, bob, ready, page):  # noqa: F811
    page.goto(f"{live_server.url}/login/?next=/d/finance/chat/")
    page.fill("#id_username", "bob")
    page.fill("#id_password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{live_server.url}/d/finance/chat/")
    page.evaluate("window.__same_page = true")

    page.fill("#id_question", COVERED_Q)
    page.press("#id_question", "Enter")
    finished = page.locator('article[data-role="assistant"][data-message]').first
    finished.wait_for(timeout=30_000)
    assert page.evaluate("window.__same_page") is True  # streamed in; no page load
    assert finished.get_attribute("data-covered") == "1"
    citation = finished.locator(".citations li").first
    assert "报销管理办法.pdf" in citation.inner_text() and citation.locator("mark").count() >= 1
    assert "/d/finance/documents/" in citation.locator("a").get_attribute("href")
    assert "/d/finance/chat/" in page.url and page.url.rstrip("/").split("/")[-1].isdigit()  # the conversation's URL
    assert page.locator(".chat-list li.current a").inner_text() == COVERED_Q[:48]

    page.fill("#id_question", OFF_DOMAIN_Q)
    page.press("#id_question", "Enter")
    second = page.locator('article[data-role="assistant"][data-message]').nth(1)
    second.wait_for(timeout=30_000)
    assert second.get_attribute("data-covered") == "0" and NOT_COVERED in second.inner_text()

    message_id = int(finished.get_attribute("data-message"))
    page.locator(f"#m{message_id} button.thumb[value='-1']").click()
    page.wait_for_selector(f"#m{message_id} button.thumb.chosen[value='-1']")
    assert page.evaluate("window.__same_page") is True
    assert Feedback.objects.get(message_id=message_id).rating == -1
    assert Message.objects.filter(conversation__user=bob).count() == 4

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)
