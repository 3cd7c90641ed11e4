"""API: /api/domains/<slug>/pairs/ — filter, read with history, add, edit with optimistic locking, review."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from datasets_app.models import QADataset, QAPair
from datasets_app.services import add_pair, assign_pairs, edit_pair
from domains.models import ApiKey, Chunk, Document

pytestmark = pytest.mark.django_db

LIST = "/api/domains/finance/pairs/"
BULK = "/api/domains/finance/pairs/bulk-review/"


def detail(pair, slug: str = "finance") -> str:
    return f"/api/domains/{slug}/pairs/{getattr(pair, 'pk', pair)}/"


def key_client(domain, scope: str = "read_write") -> APIClient:
    _, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def dataset(domain):
    return QADataset.default_for(domain)


@pytest.fixture
def pair(dataset, alice):
    return add_pair(dataset=dataset, by=alice, question="报销需要什么？", answer="发票。")


@pytest.fixture
def pig_pair(other_domain, charlie):
    return add_pair(dataset=QADataset.default_for(other_domain), by=charlie, question="Feed?", answer="Corn.")


@pytest.fixture
def chunk(domain):
    document = Document.objects.create(domain=domain, filename="rules.txt", content_hash="r", status="ready")
    return Chunk.objects.create(domain=domain, document=document, ordinal=0, text="第一条 报销需提供发票。",
                                heading_path=["总则"], length=12, content_hash="c0")


# --- list and filters --------------------------------------------------------------------


def test_viewer_lists_pairs_of_the_domain_only(api_as, vera, pair, pig_pair):
    response = api_as(vera).get(LIST)
    assert response.status_code == 200
    rows = response.data["results"]
    assert [r["id"] for r in rows] == [pair.pk]
    row = rows[0]
    assert row["question"] == "报销需要什么？" and row["status"] == "pending" and row["version"] == 1
    assert row["source"] == "manual" and row["created_by"] == "alice"
    assert "history" not in row  # lists stay light; the detail has it


def test_filters(api_as, alice, bob, vera, dataset, chunk):
    other = QADataset.objects.create(domain=dataset.domain, name="faq")
    a = add_pair(dataset=dataset, by=alice, question="q1", answer="a1", approve=True)
    b = add_pair(dataset=dataset, by=alice, question="q2", answer="a2", held_out=True, chunk=chunk)
    c = add_pair(dataset=other, by=alice, question="q3", answer="a3")
    assign_pairs(QAPair.objects.filter(pk=b.pk), to=bob, by=alice)
    client = api_as(vera)

    def ids(query: str) -> list[int]:
        response = client.get(f"{LIST}?{query}")
        assert response.status_code == 200, response.data
        return sorted(r["id"] for r in response.data["results"])

    assert ids(f"dataset={other.pk}") == [c.pk]
    assert ids("status=approved") == [a.pk]
    assert ids("status=pending") == [b.pk, c.pk]
    assert ids("source=manual") == [a.pk, b.pk, c.pk]
    assert ids("source=import") == []
    assert ids(f"document={chunk.document_id}") == [b.pk]
    assert ids("held_out=true") == [b.pk]
    assert ids("held_out=false") == [a.pk, c.pk]
    assert ids("assigned_to=bob") == [b.pk]
    assert ids("assigned_to=none") == [a.pk, c.pk]
    assert ids(f"dataset={dataset.pk}&status=pending&held_out=true") == [b.pk]
    assert api_as(bob).get(f"{LIST}?assigned_to=me").data["results"][0]["id"] == b.pk


def test_unknown_filter_values_are_400(api_as, vera, pair):
    client = api_as(vera)
    assert client.get(f"{LIST}?status=maybe").status_code == 400
    assert client.get(f"{LIST}?source=oracle").status_code == 400
    assert client.get(f"{LIST}?dataset=abc").status_code == 400


def test_detail_has_the_history(api_as, vera, bob, pair):
    edit_pair(pair, by=bob, expected_version=1, answer="发票和审批单。")
    response = api_as(vera).get(detail(pair))
    assert response.status_code == 200
    history = response.data["history"]
    assert [e["action"] for e in history] == ["create", "edit"]
    assert history[1]["actor"] == "bob"
    assert history[1]["before"] == {"answer": "发票。"} and history[1]["after"] == {"answer": "发票和审批单。"}


def test_other_domains_pair_is_404(api_as, alice, domain, pig_pair):
    client = api_as(alice)
    assert client.get(detail(pig_pair)).status_code == 404
    assert client.patch(detail(pig_pair), {"version": 1, "answer": "mine"}, format="json").status_code == 404
    assert client.post(f"{detail(pig_pair)}review/", {"action": "approve"}, format="json").status_code == 404
    pig_pair.refresh_from_db()
    assert (pig_pair.answer, pig_pair.status, pig_pair.version) == ("Corn.", "pending", 1)


# --- create ------------------------------------------------------------------------------


def test_expert_adds_a_pair_to_the_main_dataset(api_as, bob, domain, dataset):
    response = api_as(bob).post(LIST, {"question": " 发票抬头写什么？ ", "answer": "学校全称。"}, format="json")
    assert response.status_code == 201, response.data
    pair = QAPair.objects.get(pk=response.data["id"])
    assert (pair.dataset, pair.domain, pair.source, pair.status, pair.created_by) == (
        dataset, domain, "manual", "pending", bob)
    assert pair.question == "发票抬头写什么？"
    assert response["Location"] == detail(pair)
    assert [e["action"] for e in response.data["history"]] == ["create"]


def test_expert_adds_an_approved_held_out_pair_on_a_chunk(api_as, bob, dataset, chunk):
    other = QADataset.objects.create(domain=dataset.domain, name="faq")
    response = api_as(bob).post(LIST, {"dataset": other.pk, "question": "q", "answer": "a", "chunk": chunk.pk,
                                       "held_out": True, "approve": True}, format="json")
    assert response.status_code == 201, response.data
    pair = QAPair.objects.get(pk=response.data["id"])
    assert (pair.dataset, pair.status, pair.held_out, pair.reviewed_by) == (other, "approved", True,
                                                                            pair.created_by)
    assert pair.chunk == chunk and pair.document_id == chunk.document_id and pair.source_text == chunk.text


@pytest.mark.parametrize("payload, field", [
    ({"question": "q"}, "answer"),
    ({"question": "   ", "answer": "a"}, "question"),
    ({"question": "q", "answer": "a", "dataset": 999999}, "dataset"),
    ({"question": "q", "answer": "a", "chunk": 999999}, "chunk"),
])
def test_create_validates(api_as, bob, dataset, payload, field):
    response = api_as(bob).post(LIST, payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert not QAPair.objects.exists()


def test_create_refuses_another_domains_dataset_and_chunk(api_as, bob, dataset, other_domain, pig_pair):
    pig_chunk = Chunk.objects.create(domain=other_domain, document=Document.objects.create(
        domain=other_domain, filename="p.txt", content_hash="p", status="ready"), ordinal=0, text="pigs",
        length=4, content_hash="p0")
    client = api_as(bob)
    assert client.post(LIST, {"question": "q", "answer": "a", "dataset": pig_pair.dataset_id},
                       format="json").status_code == 400
    assert client.post(LIST, {"question": "q", "answer": "a", "chunk": pig_chunk.pk}, format="json").status_code == 400
    assert QAPair.objects.count() == 1


def test_viewer_and_read_key_cannot_add(api_as, vera, domain, dataset):
    assert api_as(vera).post(LIST, {"question": "q", "answer": "a"}, format="json").status_code == 403
    assert key_client(domain, "read").post(LIST, {"question": "q", "answer": "a"}, format="json").status_code == 403
    assert key_client(domain, "read").get(LIST).status_code == 200
    assert not QAPair.objects.exists()


def test_read_write_key_adds_a_pair_without_a_user(domain, dataset):
    response = key_client(domain).post(LIST, {"question": "q", "answer": "a"}, format="json")
    assert response.status_code == 201
    assert QAPair.objects.get().created_by is None


# --- edit --------------------------------------------------------------------------------


def test_edit_bumps_the_version(api_as, bob, pair):
    response = api_as(bob).patch(detail(pair), {"version": 1, "answer": "发票和审批单。", "held_out": True},
                                 format="json")
    assert response.status_code == 200, response.data
    assert response.data["version"] == 2 and response.data["answer"] == "发票和审批单。"
    assert response.data["held_out"] is True
    pair.refresh_from_db()
    assert (pair.answer, pair.held_out, pair.version) == ("发票和审批单。", True, 2)


def test_stale_edit_is_409_with_the_current_pair_then_a_fresh_edit_succeeds(api_as, alice, bob, pair):
    # alice and bob both loaded version 1; alice saves first.
    assert api_as(alice).patch(detail(pair), {"version": 1, "question": "报销需要哪些材料？"},
                               format="json").status_code == 200
    client = api_as(bob)
    stale = client.patch(detail(pair), {"version": 1, "answer": "发票和审批单。"}, format="json")
    assert stale.status_code == 409
    assert "changed by someone else" in stale.data["detail"]
    current = stale.data["current"]
    assert current["version"] == 2 and current["question"] == "报销需要哪些材料？" and current["answer"] == "发票。"
    assert [e["action"] for e in current["history"]] == ["create", "edit"]
    pair.refresh_from_db()
    assert pair.answer == "发票。"  # bob's stale edit wrote nothing

    fresh = client.patch(detail(pair), {"version": current["version"], "answer": "发票和审批单。"}, format="json")
    assert fresh.status_code == 200
    pair.refresh_from_db()
    assert (pair.question, pair.answer, pair.version) == ("报销需要哪些材料？", "发票和审批单。", 3)


def test_edit_without_version_is_400(api_as, bob, pair):
    response = api_as(bob).patch(detail(pair), {"answer": "x"}, format="json")
    assert response.status_code == 400 and "version" in response.data
    pair.refresh_from_db()
    assert pair.answer == "发票。" and pair.version == 1


def test_edit_to_empty_is_400(api_as, bob, pair):
    response = api_as(bob).patch(detail(pair), {"version": 1, "answer": "  "}, format="json")
    assert response.status_code == 400
    pair.refresh_from_db()
    assert pair.answer == "发票。"


def test_put_is_not_offered(api_as, bob, pair):
    assert api_as(bob).put(detail(pair), {"version": 1, "question": "q", "answer": "a"},
                           format="json").status_code == 405


def test_editing_a_pair_that_needs_an_edit_sends_it_back_to_pending(api_as, bob, pair):
    client = api_as(bob)
    marked = client.post(f"{detail(pair)}review/", {"action": "needs_edit", "reason": "太短", "version": 1},
                         format="json")
    assert marked.status_code == 200 and marked.data["status"] == "needs_edit"
    edited = client.patch(detail(pair), {"version": marked.data["version"], "answer": "发票、审批单和行程单。"},
                          format="json")
    assert edited.status_code == 200 and edited.data["status"] == "pending"


def test_viewer_cannot_edit(api_as, vera, pair):
    assert api_as(vera).patch(detail(pair), {"version": 1, "answer": "x"}, format="json").status_code == 403
    pair.refresh_from_db()
    assert pair.version == 1


# --- review ------------------------------------------------------------------------------


def test_expert_approves(api_as, bob, pair):
    response = api_as(bob).post(f"{detail(pair)}review/", {"action": "approve", "version": 1}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["status"] == "approved" and response.data["reviewed_by"] == "bob"
    assert response.data["version"] == 2
    assert response.data["history"][-1]["action"] == "approve"


def test_reject_needs_a_reason(api_as, bob, pair):
    client = api_as(bob)
    missing = client.post(f"{detail(pair)}review/", {"action": "reject"}, format="json")
    assert missing.status_code == 400 and "reason" in missing.data
    response = client.post(f"{detail(pair)}review/", {"action": "reject", "reason": "答非所问"}, format="json")
    assert response.status_code == 200
    assert response.data["status"] == "rejected" and response.data["reject_reason"] == "答非所问"


def test_edit_and_approve_in_one_step(api_as, bob, pair):
    response = api_as(bob).post(f"{detail(pair)}review/",
                                {"action": "approve", "version": 1, "answer": "发票和审批单。"}, format="json")
    assert response.status_code == 200
    pair.refresh_from_db()
    assert (pair.status, pair.answer) == ("approved", "发票和审批单。")


def test_an_invalid_transition_is_400_with_the_message(api_as, bob, pair):
    client = api_as(bob)
    response = client.post(f"{detail(pair)}review/", {"action": "reopen"}, format="json")
    assert response.status_code == 400
    assert "cannot be reopen" in str(response.data)
    pair.refresh_from_db()
    assert pair.status == "pending" and pair.version == 1


def test_unknown_action_is_400(api_as, bob, pair):
    response = api_as(bob).post(f"{detail(pair)}review/", {"action": "bless"}, format="json")
    assert response.status_code == 400 and "action" in response.data


def test_stale_review_is_409(api_as, alice, bob, pair):
    edit_pair(pair, by=alice, expected_version=1, answer="发票和审批单。")
    response = api_as(bob).post(f"{detail(pair)}review/", {"action": "approve", "version": 1}, format="json")
    assert response.status_code == 409
    assert response.data["current"]["answer"] == "发票和审批单。" and response.data["current"]["version"] == 2
    pair.refresh_from_db()
    assert pair.status == "pending"


def test_two_experts_approving_the_same_version_the_second_gets_409_not_a_transition_error(api_as, alice, bob, pair):
    first = api_as(alice).post(f"{detail(pair)}review/", {"action": "approve", "version": 1}, format="json")
    assert first.status_code == 200
    second = api_as(bob).post(f"{detail(pair)}review/", {"action": "approve", "version": 1}, format="json")
    assert second.status_code == 409 and second.data["current"]["status"] == "approved"
    again = api_as(bob).post(f"{detail(pair)}review/", {"action": "approve", "version": 2}, format="json")
    assert again.status_code == 400 and "cannot be approved" in str(again.data)  # a real bad transition says so


def test_double_review_records_the_second_verdict(api_as, alice, bob, dataset, pair):
    QADataset.objects.filter(pk=dataset.pk).update(double_review=True)
    first = api_as(bob).post(f"{detail(pair)}review/", {"action": "approve"}, format="json")
    assert first.status_code == 200 and first.data["agreement"] is None
    second = api_as(alice).post(f"{detail(pair)}review/", {"action": "approve"}, format="json")
    assert second.status_code == 200
    assert second.data["second_reviewed_by"] == "alice" and second.data["second_verdict"] == "approved"
    assert second.data["agreement"] is True


def test_viewer_and_read_key_cannot_review(api_as, vera, domain, pair):
    assert api_as(vera).post(f"{detail(pair)}review/", {"action": "approve"}, format="json").status_code == 403
    assert key_client(domain, "read").post(f"{detail(pair)}review/", {"action": "approve"},
                                           format="json").status_code == 403
    pair.refresh_from_db()
    assert pair.status == "pending"


def test_read_write_key_reviews(domain, pair):
    response = key_client(domain).post(f"{detail(pair)}review/", {"action": "approve"}, format="json")
    assert response.status_code == 200 and response.data["status"] == "approved"


# --- bulk review -------------------------------------------------------------------------


def test_bulk_approve_moves_only_the_filtered_pending_pairs(api_as, alice, bob, dataset, pig_pair):
    other = QADataset.objects.create(domain=dataset.domain, name="faq")
    pending = [add_pair(dataset=dataset, by=alice, question=f"q{i}", answer="a") for i in range(3)]
    held = add_pair(dataset=dataset, by=alice, question="held", answer="a", held_out=True)
    rejected = add_pair(dataset=dataset, by=alice, question="no", answer="a")
    from datasets_app.services import review_pair

    review_pair(rejected, by=bob, action="reject", reason="wrong")
    elsewhere = add_pair(dataset=other, by=alice, question="other", answer="a")

    response = api_as(bob).post(BULK, {"dataset": dataset.pk, "held_out": False, "action": "approve"}, format="json")
    assert response.status_code == 200, response.data
    assert response.data == {"count": 3}
    assert set(QAPair.objects.filter(pk__in=[p.pk for p in pending]).values_list("status", flat=True)) == {"approved"}
    for untouched, state in ((held, "pending"), (rejected, "rejected"), (elsewhere, "pending"), (pig_pair, "pending")):
        untouched.refresh_from_db()
        assert untouched.status == state  # a decided pair is never overridden; filters hold; other domain safe

    again = api_as(bob).post(BULK, {"dataset": dataset.pk, "held_out": False, "action": "approve"}, format="json")
    assert again.data == {"count": 0}


def test_bulk_reject_without_filters_takes_the_domains_pending_pairs(api_as, bob, pair, pig_pair):
    response = api_as(bob).post(BULK, {"action": "reject"}, format="json")
    assert response.status_code == 200 and response.data == {"count": 1}
    pair.refresh_from_db()
    pig_pair.refresh_from_db()
    assert pair.status == "rejected" and pig_pair.status == "pending"


def test_bulk_validates_and_viewer_cannot(api_as, bob, vera, pair):
    assert api_as(bob).post(BULK, {"action": "reopen"}, format="json").status_code == 400
    assert api_as(bob).post(BULK, {}, format="json").status_code == 400
    assert api_as(vera).post(BULK, {"action": "approve"}, format="json").status_code == 403
    pair.refresh_from_db()
    assert pair.status == "pending"


# --- assignment --------------------------------------------------------------------------

ASSIGN = "/api/domains/finance/pairs/assign/"


def test_expert_assigns_filtered_pairs_and_takes_them_back(api_as, alice, bob, vera, dataset, pig_pair):
    mine = [add_pair(dataset=dataset, by=alice, question=f"q{i}", answer="a") for i in range(2)]
    held = add_pair(dataset=dataset, by=alice, question="held", answer="a", held_out=True)
    client = api_as(bob)
    response = client.post(ASSIGN, {"held_out": False, "user": "vera"}, format="json")
    assert response.status_code == 200, response.data
    assert response.data == {"count": 2}
    assert sorted(r["id"] for r in client.get(f"{LIST}?assigned_to=vera").data["results"]) == [p.pk for p in mine]
    held.refresh_from_db()
    pig_pair.refresh_from_db()
    assert held.assigned_to is None and pig_pair.assigned_to is None
    assert client.get(detail(mine[0])).data["history"][-1]["action"] == "assign"

    back = client.post(ASSIGN, {"user": None}, format="json")
    assert back.data == {"count": 2}
    assert QAPair.objects.filter(assigned_to__isnull=False).count() == 0


def test_assign_only_to_members_of_the_domain(api_as, bob, charlie, pair):
    response = api_as(bob).post(ASSIGN, {"user": "charlie"}, format="json")
    assert response.status_code == 400 and "user" in response.data
    assert api_as(bob).post(ASSIGN, {"user": "nobody"}, format="json").status_code == 400
    pair.refresh_from_db()
    assert pair.assigned_to is None


def test_assign_with_nothing_selected_is_zero(api_as, bob, pair):
    response = api_as(bob).post(ASSIGN, {"status": "approved", "user": "bob"}, format="json")
    assert response.status_code == 200 and response.data == {"count": 0}


def test_viewer_cannot_assign(api_as, vera, pair):
    assert api_as(vera).post(ASSIGN, {"user": "vera"}, format="json").status_code == 403
    pair.refresh_from_db()
    assert pair.assigned_to is None
