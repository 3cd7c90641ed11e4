"""The audit log: what the services record, who may read it, and that no secret lands in it."""
from __future__ import annotations

import json

import pytest

from datasets_app import services as dataset_services
from datasets_app.models import QADataset, QAPair, TeacherConfig
from domains import audit, services
from domains.models import AuditEvent, Membership
from training_app.models import ModelVersion
from training_app.promotion import demote_version, promote_version


def actions(domain):
    return list(AuditEvent.objects.for_domain(domain).order_by("id").values_list("action", flat=True))


def test_members_keys_reviews_promotions_and_teacher_keys_are_recorded(domain, alice, bob, charlie, client_as):
    owner = client_as(alice)
    owner.post(f"/d/{domain.slug}/members/add/", {"user": "charlie", "role": "viewer"})
    member = Membership.objects.get(domain=domain, user=charlie)
    owner.post(f"/d/{domain.slug}/members/{member.pk}/role/", {f"m{member.pk}-role": "expert"})
    owner.post(f"/d/{domain.slug}/members/{member.pk}/remove/")
    key, secret = services.issue_api_key(domain=domain, name="crm", scope="read", created_by=alice)
    services.revoke_api_key(key=key, by=alice)
    services.revoke_api_key(key=key, by=alice)  # already revoked: nothing more to record
    dataset = QADataset.default_for(domain)
    pair = dataset_services.add_pair(dataset=dataset, by=bob, question="报销？", answer="发票。")
    dataset_services.review_pair(pair, by=bob, action="approve", expected_version=pair.version)
    for q in ("a?", "b?"):
        dataset_services.add_pair(dataset=dataset, by=bob, question=q, answer="x")
    assert dataset_services.bulk_review(QAPair.objects.filter(dataset=dataset), by=bob) == 2
    teacher = TeacherConfig.objects.create(domain=domain, name="deepseek", provider="openai", model="m",
                                           base_url="https://api.example.org/v1")
    dataset_services.add_teacher_key(teacher=teacher, label="main", secret="sk-very-secret-0123456789", by=alice)
    version = ModelVersion.objects.create(domain=domain, number=1, kind="embedding", base_model="x")
    promote_version(version=version, by=alice, force=True, reason="first embedding model")
    demote_version(version=version, by=alice)
    assert actions(domain) == ["member.add", "member.role", "member.remove", "key.create", "key.revoke", "pair.review",
                               "pair.bulk_review", "teacher_key.add", "model.promote", "model.demote"]
    rows = list(AuditEvent.objects.for_domain(domain).values())
    text = json.dumps(rows, default=str)
    assert secret not in text and "sk-very-secret" not in text and key.key_hash not in text
    by_action = {r["action"]: r for r in rows}
    assert by_action["member.role"]["summary"] == "viewer → expert" and by_action["member.add"]["actor_label"] == "alice"
    assert by_action["pair.bulk_review"]["data"] == {"review": "approve", "count": 2}
    assert by_action["model.promote"]["data"]["forced"] is True and "first embedding" in by_action["model.promote"]["summary"]


def test_record_refuses_unknown_actions_and_drops_secret_looking_values(domain, alice):
    with pytest.raises(ValueError):
        audit.record(domain=domain, by=alice, action="made.up")
    event = audit.record(domain=domain, by=alice, action="key.create", api_key="vsm_abc", token="t", scope="read")
    assert event.data == {"scope": "read"}


def test_only_owners_read_the_log_and_only_their_domain_s(domain, other_domain, alice, bob, charlie, client_as):
    audit.record(domain=domain, by=alice, action="key.create", target="crm")
    audit.record(domain=other_domain, by=charlie, action="key.create", target="pig-feed")
    page = client_as(alice).get(f"/d/{domain.slug}/audit/")
    assert page.status_code == 200 and "crm" in page.content.decode() and "pig-feed" not in page.content.decode()
    filtered = client_as(alice).get(f"/d/{domain.slug}/audit/?action=member.add").content.decode()
    assert "crm" not in filtered and "Nothing recorded yet." in filtered
    assert client_as(bob).get(f"/d/{domain.slug}/audit/").status_code == 403
    assert client_as(charlie).get(f"/d/{domain.slug}/audit/").status_code == 404


def test_exports_and_chat_settings_are_recorded(domain, alice, bob, data_dir, sent, client_as):
    from tests.export_helpers import version_with_adapter
    from training_app.services import start_export

    version = version_with_adapter(domain, data_dir)
    start_export(domain=domain, model_version=version, by=bob, gguf_outtype="f16", quantize="", modelfile=False)
    client_as(alice).post(f"/d/{domain.slug}/chat/settings/", {
        "mode": "extractive", "backend": "remote", "remote_url": "http://gpu:8000/v1", "remote_model": "m",
        "remote_key": "sk-remote-secret-123", "k": 3, "threshold": 0.4, "public": "on", "rate_limit": 60,
        "temperature": 0.7, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.2, "max_new_tokens": 256})
    export, change = AuditEvent.objects.for_domain(domain).order_by("id")
    assert export.action == "export.start" and export.summary == "safetensors, gguf-f16" and export.actor == bob
    assert change.action == "deployment.change" and "public" in change.data["fields"] and change.data["public"]
    assert "remote key" in change.summary and "sk-remote-secret" not in json.dumps(change.data)
