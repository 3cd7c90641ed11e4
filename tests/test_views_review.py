"""Review queue pages: filters and progress, bulk approval, assignment, one pair beside its source with
the evidence marked, review actions with history, double review, optimistic locking (409) and isolation."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from datasets_app import services
from datasets_app.models import QADataset, QAPair, QAPairEvent
from datasets_app.views_review import highlight_source
from domains.models import Chunk, Document

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
SOURCE = "第三条 差旅费报销应在出差返回后30天内提交，逾期不予受理。住宿费按标准凭发票报销。"


def queue_url(domain, **params):
    from urllib.parse import urlencode

    url = reverse("review-queue", args=[domain.slug])
    return f"{url}?{urlencode(params)}" if params else url


def pair_url(pair, name="pair-review"):
    return reverse(name, args=[pair.domain.slug, pair.pk])


def make_pair(domain, question="报销期限是多久？", answer="30天内。", *, dataset=None, status=QAPair.Status.PENDING,
              document=None, **fields) -> QAPair:
    dataset = dataset or QADataset.default_for(domain)
    return QAPair.objects.create(domain=domain, dataset=dataset, question=question, answer=answer, status=status,
                                 document=document, **fields)


@pytest.fixture
def doc(domain):
    return Document.objects.create(domain=domain, filename="差旅费管理办法.pdf", content_hash="a" * 64, status="ready")


@pytest.fixture
def other_doc(domain):
    return Document.objects.create(domain=domain, filename="采购办法.pdf", content_hash="b" * 64, status="ready")


@pytest.fixture
def pair(domain, doc):
    chunk = Chunk.objects.create(domain=domain, document=doc, ordinal=0, text=SOURCE, heading_path=["第一章", "报销"],
                                 page_start=2, length=len(SOURCE), content_hash="c0")
    start = SOURCE.index("出差返回后30天内提交")
    return make_pair(domain, document=doc, chunk=chunk, source_text=SOURCE, evidence_start=start,
                     evidence_end=start + len("出差返回后30天内提交"), teacher_label="OpenAI-compatible API: deepseek-chat",
                     quality_score=0.82)


def post_action(client, pair, action, htmx=False, **data):
    data.setdefault("version", pair.version)
    return client.post(pair_url(pair, "pair-action"), {"action": action, **data}, **(HTMX if htmx else {}))


# Queue ---------------------------------------------------------------------------------------


def test_queue_lists_pairs_with_teacher_and_progress(client_as, bob, domain, pair):
    make_pair(domain, "Q2", "A2", status=QAPair.Status.APPROVED, teacher_label="Google Gemini: gemini-2.5-flash")
    response = client_as(bob).get(queue_url(domain))
    assert response.status_code == 200
    html = response.content.decode()
    assert "OpenAI-compatible API: deepseek-chat" in html and "Google Gemini: gemini-2.5-flash" in html
    assert "1 of 2 reviewed" in html
    assert 'aria-valuenow="1"' in html
    assert html.count('class="pair-row"') == 2
    assert pair_url(pair) in html  # the pending one is where reviewing starts


def test_queue_filters(client_as, bob, alice, domain, doc, other_doc):
    a = make_pair(domain, "差旅报销", "30天", document=doc, quality_score=0.9, source=QAPair.Source.TEACHER)
    b = make_pair(domain, "采购流程", "三家比价", document=other_doc, quality_score=0.4, source=QAPair.Source.MANUAL)
    c = make_pair(domain, "住宿标准", "每晚500元", document=doc, quality_score=0.7, status=QAPair.Status.APPROVED,
                  reviewed_by=alice, assigned_to=bob, source=QAPair.Source.TEACHER)
    client = client_as(bob)

    def shown(**params):
        html = client.get(queue_url(domain, **params)).content.decode()
        return {int(x) for x in re.findall(r'data-pair="(\d+)"', html)}

    assert shown() == {a.pk, b.pk, c.pk}
    assert shown(document=doc.pk) == {a.pk, c.pk}
    assert shown(status="pending") == {a.pk, b.pk}
    assert shown(source="manual") == {b.pk}
    assert shown(min_score="0.6") == {a.pk, c.pk}
    assert shown(reviewer=alice.pk) == {c.pk}
    assert shown(assigned="me") == {c.pk}
    assert shown(assigned="none") == {a.pk, b.pk}
    assert shown(assigned=bob.pk) == {c.pk}
    assert shown(q="比价") == {b.pk}
    assert shown(dataset=QADataset.default_for(domain).pk, status="approved") == {c.pk}
    # An unknown value is reported beside its field and otherwise ignored.
    response = client.get(queue_url(domain, status="bogus"))
    assert response.status_code == 200 and len(re.findall(r'data-pair="\d+"', response.content.decode())) == 3
    # The progress counts the filter without its status: reviewing pending pairs moves the bar.
    assert "1 of 3 reviewed" in client.get(queue_url(domain, status="pending")).content.decode()
    assert "1 of 2 reviewed" in client.get(queue_url(domain, document=doc.pk)).content.decode()


def test_queue_htmx_gets_the_list_partial(client_as, bob, domain, pair):
    response = client_as(bob).get(queue_url(domain, status="pending"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section class="card review-list" id="review-list"')
    assert "<html" not in html and "review-filters" not in html
    assert "HX-Request" in response["Vary"]


def test_queue_paginates_and_keeps_filters(client_as, bob, domain):
    for i in range(30):
        make_pair(domain, f"问题{i}", f"答案{i}")
    html = client_as(bob).get(queue_url(domain, status="pending")).content.decode()
    assert html.count('class="pair-row"') == 25
    assert "?status=pending&amp;page=2" in html


def test_bulk_approve_respects_filters_and_only_moves_pending(client_as, bob, alice, domain, doc, other_doc):
    pending_here = [make_pair(domain, f"Q{i}", "A", document=doc) for i in range(3)]
    pending_elsewhere = make_pair(domain, "Q other", "A", document=other_doc)
    rejected_here = make_pair(domain, "Q rej", "A", document=doc, status=QAPair.Status.REJECTED,
                              reject_reason="wrong", reviewed_by=alice)
    needs_edit_here = make_pair(domain, "Q ne", "A", document=doc, status=QAPair.Status.NEEDS_EDIT)
    client = client_as(bob)
    page = client.get(queue_url(domain, document=doc.pk)).content.decode()
    assert "Approve all 3 pending pairs…" in page  # the confirm dialog says how many
    response = client.post(reverse("review-bulk", args=[domain.slug]) + f"?document={doc.pk}")
    assert response.status_code == 302 and response["Location"] == queue_url(domain, document=doc.pk)
    for p in pending_here:
        p.refresh_from_db()
        assert p.status == QAPair.Status.APPROVED and p.reviewed_by == bob
        assert p.events.filter(action="approve", actor=bob, note="bulk").exists()
    for p, status in ((pending_elsewhere, "pending"), (rejected_here, "rejected"), (needs_edit_here, "needs_edit")):
        p.refresh_from_db()
        assert p.status == status
    assert "3 pending pairs approved." in client.get(response["Location"]).content.decode()


def test_assign_selected_and_all_filtered(client_as, bob, alice, vera, domain, other_domain):
    a, b, c = (make_pair(domain, f"Q{i}", "A") for i in range(3))
    theirs = make_pair(other_domain, "their pair", "A")
    client = client_as(bob)
    url = reverse("review-assign", args=[domain.slug])
    response = client.post(url, {"to": alice.pk, "scope": "selected", "ids": [a.pk, theirs.pk]})
    assert response.status_code == 302
    a.refresh_from_db(), b.refresh_from_db(), theirs.refresh_from_db()
    assert a.assigned_to == alice and b.assigned_to is None and theirs.assigned_to is None
    assert a.events.filter(action="assign", actor=bob).exists()
    # All pairs of the filter (here: not assigned yet) to bob.
    client.post(url + "?assigned=none", {"to": bob.pk, "scope": "all"})
    assert set(QAPair.objects.for_domain(domain).filter(assigned_to=bob)) == {b, c}
    assert QAPair.objects.get(pk=a.pk).assigned_to == alice
    # A viewer cannot review, so pairs are not given to one; nothing ticked is an error too.
    client.post(url, {"to": vera.pk, "scope": "all"})
    assert not QAPair.objects.filter(assigned_to=vera).exists()
    response = client.post(url, {"to": bob.pk, "scope": "selected"}, follow=True)
    assert "Tick the pairs to assign" in response.content.decode()
    # Unassign.
    client.post(url, {"to": "none", "scope": "selected", "ids": [a.pk]})
    assert QAPair.objects.get(pk=a.pk).assigned_to is None
    html = client.get(queue_url(domain)).content.decode()
    assert 'name="to"' in html
    assert "2 pending pairs assigned to me" in html and "?assigned=me&amp;status=pending" in html


# One pair ------------------------------------------------------------------------------------


def test_pair_page_shows_source_with_evidence_marked_and_teacher(client_as, vera, pair):
    response = client_as(vera).get(pair_url(pair))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<mark class="evidence">出差返回后30天内提交</mark>' in html
    assert "差旅费报销应在" in html and "逾期不予受理" in html
    assert "OpenAI-compatible API: deepseek-chat" in html
    assert "差旅费管理办法.pdf" in html and "第一章 › 报销" in html
    assert "报销期限是多久？" in html and "30天内。" in html


def test_evidence_falls_back_to_the_answers_numbers_and_terms(client_as, bob, domain):
    pair = make_pair(domain, "住宿费怎么报销？", "凭发票报销，期限30日。", source_text=SOURCE)
    html = client_as(bob).get(pair_url(pair)).content.decode()
    assert '<mark class="term">30</mark>' in html
    assert '<mark class="term">凭发票报销</mark>' in html
    assert 'data-highlight="terms"' in html


def test_highlight_escapes_and_handles_bad_spans():
    html, mode = highlight_source("<b>a</b> 5 days", 0, 3, "")
    assert mode == "span" and html.startswith('<mark class="evidence">&lt;b&gt;</mark>')
    html, mode = highlight_source("<script>x</script> within 14 days", 50, 60, "14 days")
    assert mode == "terms" and "<script>" not in html and '<mark class="term">14</mark>' in html
    html, mode = highlight_source("nothing here", None, None, "完全无关")
    assert mode == "none" and "<mark" not in html


def test_pair_page_htmx_gets_the_panel(client_as, bob, pair):
    html = client_as(bob).get(pair_url(pair), **HTMX).content.decode()
    assert html.lstrip().startswith('<div class="pair-panel" id="pair-panel"') and "<html" not in html


def test_previous_and_next_stay_within_the_filter(client_as, bob, domain, doc, other_doc):
    first = make_pair(domain, "Q1", "A", document=doc)
    make_pair(domain, "Q2", "A", document=other_doc)
    third = make_pair(domain, "Q3", "A", document=doc)
    html = client_as(bob).get(pair_url(first) + f"?document={doc.pk}").content.decode()
    assert f'href="{pair_url(third)}?document={doc.pk}" rel="next"' in html
    assert 'rel="prev"' not in html
    assert "Pair 1 of 2" in html


def test_approve_redirects_to_next_pair_in_filter(client_as, bob, domain, pair):
    following = make_pair(domain, "Q next", "A")
    response = client_as(bob).post(pair_url(pair, "pair-action") + "?status=pending",
                                   {"action": "approve", "version": pair.version})
    assert response.status_code == 302 and response["Location"] == pair_url(following) + "?status=pending"
    pair.refresh_from_db()
    assert pair.status == QAPair.Status.APPROVED and pair.reviewed_by == bob and pair.version == 2


def test_htmx_action_returns_the_updated_panel(client_as, bob, pair):
    response = client_as(bob).post(pair_url(pair, "pair-action"), {"action": "approve", "version": 1}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'data-status="approved"' in html and "Approved." in html
    assert "1 of 1 reviewed" in html


def test_reject_needs_a_reason(client_as, bob, pair):
    client = client_as(bob)
    response = post_action(client, pair, "reject", htmx=True)
    assert response.status_code == 400 and "Say why the pair is rejected." in response.content.decode()
    pair.refresh_from_db()
    assert pair.status == QAPair.Status.PENDING
    response = post_action(client, pair, "reject", reason="答案不在原文中")
    pair.refresh_from_db()
    assert pair.status == QAPair.Status.REJECTED and pair.reject_reason == "答案不在原文中"


def test_invalid_transition_is_explained(client_as, bob, domain):
    pair = make_pair(domain, status=QAPair.Status.PENDING)
    response = post_action(client_as(bob), pair, "reopen")
    assert response.status_code == 400 and "cannot be reopen" in response.content.decode()


def test_action_with_edit_and_history_shows_before_and_after(client_as, bob, pair):
    client = client_as(bob)
    response = post_action(client, pair, "approve", question="差旅费报销期限是多久？", answer="出差返回后30天内。")
    assert response.status_code == 302
    pair.refresh_from_db()
    assert pair.question == "差旅费报销期限是多久？" and pair.status == QAPair.Status.APPROVED
    html = client.get(pair_url(pair)).content.decode()
    history = html[html.index('id="pair-history"'):]
    assert "bob" in history and "Approved" in history
    assert "<del>报销期限是多久？</del> → <ins>差旅费报销期限是多久？</ins>" in history
    assert "<del>Pending</del> → <ins>Approved</ins>" in history


def test_edit_keeps_history_and_bumps_version(client_as, bob, pair):
    client = client_as(bob)
    response = client.post(pair_url(pair, "pair-edit"),
                           {"question": pair.question, "answer": "出差返回后30天内提交。", "held_out": "on", "version": 1})
    assert response.status_code == 302 and response["Location"] == pair_url(pair)
    pair.refresh_from_db()
    assert pair.answer == "出差返回后30天内提交。" and pair.held_out and pair.version == 2
    event = QAPairEvent.objects.get(pair=pair, action="edit")
    assert event.actor == bob and event.before == {"answer": "30天内。", "held_out": False}
    html = client.get(pair_url(pair)).content.decode()
    assert "<del>30天内。</del> → <ins>出差返回后30天内提交。</ins>" in html
    assert "<del>no</del> → <ins>yes</ins>" in html


def test_edit_refuses_empty_text(client_as, bob, pair):
    response = client_as(bob).post(pair_url(pair, "pair-edit"), {"question": " ", "answer": "x", "version": 1})
    assert response.status_code == 400
    pair.refresh_from_db()
    assert pair.question == "报销期限是多久？" and pair.version == 1


def test_stale_edit_is_a_409_with_both_texts(client_as, bob, alice, pair):
    services.edit_pair(pair, by=alice, expected_version=1, answer="出差返回后一个月内。")
    response = client_as(bob).post(pair_url(pair, "pair-edit"),
                                   {"question": pair.question, "answer": "我的修改：30个自然日内。", "version": 1}, **HTMX)
    assert response.status_code == 409
    html = response.content.decode()
    assert "Someone else changed this pair" in html
    assert "出差返回后一个月内。" in html  # the current text
    assert "我的修改：30个自然日内。" in html  # theirs, not lost: also in the edit form, against the new version
    assert 'name="version" value="2"' in html
    pair.refresh_from_db()
    assert pair.answer == "出差返回后一个月内。" and pair.version == 2


def test_stale_review_action_is_a_409(client_as, bob, alice, pair):
    services.review_pair(pair, by=alice, action="reject", expected_version=1, reason="不对")
    response = post_action(client_as(bob), pair, "approve", version=1)
    assert response.status_code == 409
    html = response.content.decode()
    assert "You worked on version 1; it is now at version 2" in html and "Approved." in html
    pair.refresh_from_db()
    assert pair.status == QAPair.Status.REJECTED and pair.reviewed_by == alice


def test_race_inside_the_service_is_a_409(client_as, bob, pair, monkeypatch):
    """The version matched when the view read it, then changed before the write."""
    original = services.review_pair

    def racing(p, **kwargs):
        QAPair.objects.filter(pk=p.pk).update(version=5, answer="别人刚改的答案")
        return original(p, **kwargs)

    monkeypatch.setattr(services, "review_pair", racing)
    response = post_action(client_as(bob), pair, "approve", answer="我的答案")
    assert response.status_code == 409
    html = response.content.decode()
    assert "别人刚改的答案" in html and "我的答案" in html
    assert QAPair.objects.get(pk=pair.pk).status == QAPair.Status.PENDING


def test_double_review_records_second_verdict_and_shows_agreement(client_as, alice, bob, domain, pair):
    QADataset.objects.filter(pk=pair.dataset_id).update(double_review=True)
    post_action(client_as(alice), pair, "approve")
    pair.refresh_from_db()
    html = client_as(bob).get(pair_url(pair)).content.decode()
    assert "your verdict is recorded as the second review" in html
    assert "1 waits for a second reviewer" in html
    response = post_action(client_as(bob), pair, "approve", htmx=True)
    assert response.status_code == 200 and "Your second review is recorded." in response.content.decode()
    pair.refresh_from_db()
    assert pair.second_reviewed_by == bob and pair.agreement is True
    assert "Reviewers agree" in client_as(bob).get(queue_url(domain)).content.decode()

    other = make_pair(domain, "Q2", "A2", dataset=pair.dataset)
    post_action(client_as(alice), other, "approve")
    other.refresh_from_db()
    post_action(client_as(bob), other, "reject", reason="答案错误")
    other.refresh_from_db()
    assert other.agreement is False
    html = client_as(alice).get(pair_url(other)).content.decode()
    assert "Reviewers disagree" in html and "disagrees" in html
    assert "1 disagreement" in client_as(alice).get(queue_url(domain)).content.decode()


# Access --------------------------------------------------------------------------------------


def test_viewer_reads_but_cannot_act(client_as, vera, domain, pair):
    client = client_as(vera)
    html = client.get(pair_url(pair)).content.decode()
    assert 'id="review-form"' not in html and 'id="edit-form"' not in html
    assert "experts and owners review and edit them" in html
    assert 'id="assign-form"' not in client.get(queue_url(domain)).content.decode()
    assert post_action(client, pair, "approve").status_code == 403
    assert client.post(pair_url(pair, "pair-edit"), {"question": "x", "answer": "y", "version": 1}).status_code == 403
    assert client.post(reverse("review-bulk", args=[domain.slug])).status_code == 403
    assert client.post(reverse("review-assign", args=[domain.slug]), {"to": "none", "scope": "all"}).status_code == 403
    pair.refresh_from_db()
    assert pair.status == QAPair.Status.PENDING and pair.version == 1


def test_other_tenant_ids_give_404(client_as, bob, charlie, domain, other_domain, pair):
    theirs = make_pair(other_domain, "How often are pigs fed?", "Twice a day.")
    client = client_as(bob)
    for name in ("pair-review",):
        assert client.get(reverse(name, args=[domain.slug, theirs.pk])).status_code == 404
    for name in ("pair-action", "pair-edit"):
        response = client.post(reverse(name, args=[domain.slug, theirs.pk]),
                               {"action": "approve", "version": 1, "question": "x", "answer": "y"})
        assert response.status_code == 404
    # Bulk approval of "all pending" in finance never touches the pigs' pairs.
    client.post(reverse("review-bulk", args=[domain.slug]))
    theirs.refresh_from_db()
    assert theirs.status == QAPair.Status.PENDING
    # Charlie is a stranger to finance: 404 for the queue and its pairs.
    client = client_as(charlie)
    assert client.get(queue_url(domain)).status_code == 404
    assert client.get(pair_url(pair)).status_code == 404
    assert post_action(client, pair, "approve").status_code == 404
    # A filter naming another domain's document is refused beside the field and reveals nothing of it.
    their_doc = Document.objects.create(domain=other_domain, filename="pigs.pdf", content_hash="p" * 64)
    make_pair(other_domain, "Feed?", "Twice.", document=their_doc)
    html = client_as(bob).get(queue_url(domain, document=their_doc.pk)).content.decode()
    assert "pigs.pdf" not in html and "Select a valid choice" in html
    assert f'data-pair="{theirs.pk}"' not in html


def test_anonymous_goes_to_login(client, pair):
    response = client.get(pair_url(pair))
    assert response.status_code == 302 and "/login/" in response["Location"]
