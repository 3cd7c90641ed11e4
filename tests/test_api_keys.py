"""API: /api/domains/<slug>/api-keys/ — owners (users, never keys) list, issue and revoke keys."""
from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from domains.models import ApiKey

LIST = "/api/domains/finance/api-keys/"


def detail(key: ApiKey) -> str:
    return f"{LIST}{key.pk}/"


def key_client(secret: str, keyword: str = "Bearer") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {secret}")
    return client


@pytest.fixture
def finance_key(domain, alice):
    return ApiKey.issue(domain=domain, name="chat bot", scope="read", created_by=alice)


# --- issue -------------------------------------------------------------------------------


def test_owner_issues_a_key_and_sees_the_secret_once(api_as, alice, domain):
    client = api_as(alice)
    response = client.post(LIST, {"name": "intranet bot", "scope": "read_write"}, format="json")
    assert response.status_code == 201, response.data
    assert response["Cache-Control"] == "no-store"
    secret = response.data["key"]
    assert secret.startswith("vsm_")
    assert response.data["scope"] == "read_write" and response.data["is_active"] is True
    assert response.data["created_by"] == "alice"
    assert "key_hash" not in response.data and "prefix" not in response.data

    key = ApiKey.lookup(secret)
    assert key is not None and key.pk == response.data["id"] and key.domain == domain
    assert response.data["display"] == f"vsm_{key.prefix}_…"
    assert secret not in (key.key_hash, key.prefix)

    # Never again: not in the list, not in the detail.
    for url in (LIST, detail(key)):
        body = client.get(url).content.decode()
        assert secret not in body
        assert key.key_hash not in body
        assert '"key"' not in body and "key_hash" not in body

    # The secret works as a domain key.
    assert key_client(secret).get("/api/domains/finance/").status_code == 200


def test_issued_key_defaults_to_read(api_as, alice, domain):
    response = api_as(alice).post(LIST, {"name": "reader"}, format="json")
    assert response.status_code == 201
    assert ApiKey.objects.get(pk=response.data["id"]).scope == ApiKey.Scope.READ


@pytest.mark.parametrize("payload, field", [({"name": "", "scope": "read"}, "name"),
                                             ({"name": "x", "scope": "admin"}, "scope"),
                                             ({"scope": "read"}, "name")])
def test_issue_validates(api_as, alice, domain, payload, field):
    response = api_as(alice).post(LIST, payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert not ApiKey.objects.exists()


def test_blank_name_is_refused_by_the_service(api_as, alice, domain):
    response = api_as(alice).post(LIST, {"name": "   ", "scope": "read"}, format="json")
    assert response.status_code == 400 and "name" in response.data
    assert not ApiKey.objects.exists()


# --- list --------------------------------------------------------------------------------


def test_owner_lists_the_domain_keys_without_secrets(api_as, alice, domain, other_domain, finance_key):
    key, secret = finance_key
    ApiKey.issue(domain=other_domain, name="pig key", scope="read")
    response = api_as(alice).get(LIST)
    assert response.status_code == 200
    assert [row["name"] for row in response.data["results"]] == ["chat bot"]
    text = json.dumps(response.data)
    assert secret not in text and key.key_hash not in text


@pytest.mark.parametrize("role_name", ["expert", "viewer"])
def test_non_owners_get_403(api_as, users, domain, finance_key, role_name):
    key, _secret = finance_key
    client = api_as(users[role_name])
    assert client.get(LIST).status_code == 403
    assert client.get(detail(key)).status_code == 403
    assert client.post(LIST, {"name": "mine", "scope": "read_write"}, format="json").status_code == 403
    assert client.post(f"{detail(key)}revoke/").status_code == 403
    assert client.delete(detail(key)).status_code == 403
    assert ApiKey.objects.count() == 1
    key.refresh_from_db()
    assert key.is_active


def test_stranger_gets_404(api_as, charlie, domain, finance_key):
    key, _secret = finance_key
    client = api_as(charlie)
    assert client.get(LIST).status_code == 404
    assert client.get(detail(key)).status_code == 404
    assert client.post(LIST, {"name": "mine", "scope": "read_write"}, format="json").status_code == 404
    assert client.post(f"{detail(key)}revoke/").status_code == 404
    assert client.delete(detail(key)).status_code == 404
    key.refresh_from_db()
    assert key.is_active


@pytest.mark.parametrize("scope", ["read", "read_write"])
def test_keys_cannot_manage_keys(domain, finance_key, scope):
    key, _secret = finance_key
    _own, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    client = key_client(secret)
    assert client.get(LIST).status_code == 403
    assert client.post(LIST, {"name": "more", "scope": "read_write"}, format="json").status_code == 403
    assert client.post(f"{detail(key)}revoke/").status_code == 403
    assert client.delete(detail(key)).status_code == 403
    key.refresh_from_db()
    assert key.is_active and ApiKey.objects.count() == 2


def test_key_of_another_domain_gets_404(domain, other_domain, finance_key):
    key, _secret = finance_key
    _pig, secret = ApiKey.issue(domain=other_domain, name="pig key", scope="read_write")
    client = key_client(secret)
    assert client.get(LIST).status_code == 404
    assert client.delete(detail(key)).status_code == 404


def test_anonymous_gets_401(db, domain):
    assert APIClient().get(LIST).status_code == 401
    assert APIClient().post(LIST, {"name": "x"}, format="json").status_code == 401


def test_key_id_of_another_domain_is_404(api_as, alice, domain, other_domain):
    pig_key, pig_secret = ApiKey.issue(domain=other_domain, name="pig key", scope="read")
    client = api_as(alice)
    assert client.get(detail(pig_key)).status_code == 404
    assert client.post(f"{detail(pig_key)}revoke/").status_code == 404
    assert client.delete(detail(pig_key)).status_code == 404
    pig_key.refresh_from_db()
    assert pig_key.is_active
    assert key_client(pig_secret).get("/api/domains/pigs/").status_code == 200


# --- revoke ------------------------------------------------------------------------------


def test_owner_revokes_with_post(api_as, alice, domain, finance_key):
    key, secret = finance_key
    assert key_client(secret).get("/api/domains/finance/").status_code == 200
    response = api_as(alice).post(f"{detail(key)}revoke/")
    assert response.status_code == 200
    assert response.data["is_active"] is False and response.data["revoked_at"]
    key.refresh_from_db()
    assert not key.is_active
    assert key_client(secret).get("/api/domains/finance/").status_code == 401
    # Revoking twice is harmless and keeps the first time.
    revoked_at = key.revoked_at
    assert api_as(alice).post(f"{detail(key)}revoke/").status_code == 200
    key.refresh_from_db()
    assert key.revoked_at == revoked_at


def test_delete_revokes_and_keeps_the_row(api_as, alice, domain, finance_key):
    key, secret = finance_key
    client = api_as(alice)
    assert client.delete(detail(key)).status_code == 204
    key.refresh_from_db()
    assert not key.is_active
    assert key_client(secret, "Api-Key").get("/api/domains/finance/").status_code == 401
    listed = client.get(LIST).data["results"]
    assert [(row["id"], row["is_active"]) for row in listed] == [(key.pk, False)]


def test_keys_cannot_be_edited(api_as, alice, domain, finance_key):
    key, _secret = finance_key
    response = api_as(alice).patch(detail(key), {"scope": "read_write"}, format="json")
    assert response.status_code == 405
    key.refresh_from_db()
    assert key.scope == ApiKey.Scope.READ
