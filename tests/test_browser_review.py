"""A real headless Chromium in the review queue: an expert approves with `a`, moves on with `j`,
rejects with `r` + a reason, watches 'x of y reviewed' move, and meets a conflict (409) without
losing their text."""
from __future__ import annotations

import pytest

from datasets_app import services
from datasets_app.models import QADataset, QAPair
from tests.conftest import PASSWORD
from tests.test_browser import SCREENSHOTS, page  # noqa: F401 (the page fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SOURCE = "第三条 差旅费报销应在出差返回后30天内提交，逾期不予受理。住宿费按标准凭发票报销，每晚不超过500元。"
PAIRS = [
    ("差旅费报销应在什么时候提交？", "出差返回后30天内。", "出差返回后30天内提交"),
    ("住宿费每晚最多报销多少？", "每晚不超过500元。", "每晚不超过500元"),
    ("逾期提交的报销怎么处理？", "不予受理。", "逾期不予受理"),
]


def _pairs(domain) -> list[QAPair]:
    dataset = QADataset.default_for(domain)
    made = []
    for question, answer, evidence in PAIRS:
        start = SOURCE.index(evidence)
        made.append(QAPair.objects.create(
            domain=domain, dataset=dataset, question=question, answer=answer, source_text=SOURCE,
            evidence_start=start, evidence_end=start + len(evidence), quality_score=0.8,
            teacher_label="Offline (document structure, no model): rules"))
    return made


def _count(page) -> str:
    return page.locator("#pair-panel .review-count").inner_text()


def test_keyboard_review_with_progress_and_conflict(live_server, domain, bob, alice, page,  # noqa: F811
                                                    monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    first, second, third = _pairs(domain)
    queue = f"{live_server.url}/d/finance/review/"

    page.goto(f"{live_server.url}/login/?next=/d/finance/review/")
    page.fill("#id_username", "bob")
    page.fill("#id_password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(queue)
    assert page.locator("#review-list .review-count").inner_text() == "0 of 3 reviewed"
    assert page.locator("tr.pair-row").count() == 3
    assert "Offline (document structure, no model): rules" in page.locator("tr.pair-row").first.inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "review-queue.png"), full_page=True)

    # j selects the first row, Enter opens it.
    page.keyboard.press("j")
    assert page.locator("tr.pair-row.selected").get_attribute("data-pair") == str(first.pk)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/d/finance/pairs/{first.pk}/")
    assert page.locator("#source-text mark.evidence").inner_text() == "出差返回后30天内提交"
    source = page.locator(".source-card").bounding_box()
    card = page.locator(".pair-card").bounding_box()
    assert card["x"] > source["x"] + source["width"] - 1  # the pair beside its source at 1280px

    # a approves in place (htmx), and the progress moves.
    page.keyboard.press("a")
    page.wait_for_selector(f"#pair-panel[data-pair='{first.pk}'][data-status='approved']")
    assert _count(page) == "1 of 3 reviewed"
    assert "Approved." in page.locator(".pair-notice").inner_text()
    first.refresh_from_db()
    assert first.status == QAPair.Status.APPROVED and first.reviewed_by == bob

    # j goes to the next pair; the address follows.
    page.keyboard.press("j")
    page.wait_for_selector(f"#pair-panel[data-pair='{second.pk}']")
    page.wait_for_url(f"{live_server.url}/d/finance/pairs/{second.pk}/")
    assert page.locator("#source-text mark.evidence").inner_text() == "每晚不超过500元"

    # r asks for the reason; Enter rejects. Typing "a" in the field approves nothing.
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "review-reason"
    page.keyboard.type("answer misses the standard rate table")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#pair-panel[data-pair='{second.pk}'][data-status='rejected']")
    assert _count(page) == "2 of 3 reviewed"
    second.refresh_from_db()
    assert second.status == QAPair.Status.REJECTED and second.reject_reason == "answer misses the standard rate table"
    assert "answer misses the standard rate table" in page.locator("#pair-history").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "review-pair.png"), full_page=True)

    # ? shows the help, Esc closes it.
    page.keyboard.press("?")
    assert page.locator("#shortcut-help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#shortcut-help").is_visible()

    # k goes back; e opens the edit form. Meanwhile alice edits the same pair: saving is a 409
    # that shows her text and keeps ours.
    page.keyboard.press("k")
    page.wait_for_selector(f"#pair-panel[data-pair='{first.pk}']")
    page.keyboard.press("j")
    page.wait_for_selector(f"#pair-panel[data-pair='{second.pk}']")
    page.keyboard.press("j")
    page.wait_for_selector(f"#pair-panel[data-pair='{third.pk}']")
    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.name") == "question"
    services.edit_pair(third, by=alice, expected_version=1, answer="逾期提交的报销不予受理（alice）。")
    page.fill("#id_answer", "逾期不予受理（bob 的修改）。")
    page.click("#edit-form button.primary")
    page.wait_for_selector("#conflict")
    conflict = page.locator("#conflict").inner_text()
    assert "逾期提交的报销不予受理（alice）。" in conflict and "逾期不予受理（bob 的修改）。" in conflict
    assert page.input_value("#id_answer") == "逾期不予受理（bob 的修改）。"
    third.refresh_from_db()
    assert third.answer == "逾期提交的报销不予受理（alice）。"
    page.screenshot(path=str(SCREENSHOTS / "review-conflict.png"), full_page=True)
    # "Save and approve" applies ours on top of hers, recorded in the history.
    page.click("#edit-form button[value=approve]")
    page.wait_for_selector(f"#pair-panel[data-pair='{third.pk}'][data-status='approved']")
    assert _count(page) == "3 of 3 reviewed"
    third.refresh_from_db()
    assert third.answer == "逾期不予受理（bob 的修改）。" and third.version == 3
    assert "逾期不予受理（bob 的修改）。" in page.locator("#pair-history").inner_text()

    # Back in the queue the count is the same; on a phone the page still fits.
    page.goto(queue)
    assert page.locator("#review-list .review-count").inner_text() == "3 of 3 reviewed"
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/d/finance/pairs/{first.pk}/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    page.screenshot(path=str(SCREENSHOTS / "review-pair-phone.png"), full_page=True)
