"""API: /api/domains/ (list, create, retrieve, update) and user tokens at /api/auth/token/."""
from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from domains import api
from domains.models import ApiKey, Domain, Membership, Role
from tests.conftest import PASSWORD

LIST = "/api/domains/"


def detail(slug: str) -> str:
    return f"/api/domains/{slug}/"


def key_client(secret: str, keyword: str = "Bearer") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {secret}")
    return client


@pytest.fixture
def issue_key():
    def issue(domain, scope="read"):
        return ApiKey.issue(domain=domain, name="integration", scope=scope)

    return issue


# --- list --------------------------------------------------------------------------------


def test_list_shows_my_domains_with_my_role(api_as, users, domain, other_domain):
    for role_name in ("owner", "expert", "viewer"):
        response = api_as(users[role_name]).get(LIST)
        assert response.status_code == 200
        assert response.data["count"] == 1
        [row] = response.data["results"]
        assert row["slug"] == "finance" and row["name"] == "University finance"
        assert row["role"] == role_name


def test_list_of_a_stranger_has_only_their_own_domain(api_as, charlie, domain, other_domain):
    response = api_as(charlie).get(LIST)
    assert [row["slug"] for row in response.data["results"]] == ["pigs"]


def test_list_with_an_api_key_shows_only_the_key_domain(domain, other_domain, issue_key):
    _key, secret = issue_key(domain, "read_write")
    response = key_client(secret).get(LIST)
    assert response.status_code == 200
    assert [(row["slug"], row["role"]) for row in response.data["results"]] == [("finance", "expert")]


def test_anonymous_gets_401(db, domain):
    response = APIClient().get(LIST)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert APIClient().get(detail("finance")).status_code == 401


def test_revoked_key_gets_401(domain, issue_key):
    key, secret = issue_key(domain)
    key.revoke()
    assert key_client(secret).get(LIST).status_code == 401
    assert key_client(secret).get(detail("finance")).status_code == 401


def test_made_up_key_gets_401(db):
    assert key_client("vsm_000000000000_nothing").get(LIST).status_code == 401


# --- create ------------------------------------------------------------------------------


def test_create_makes_me_owner(api_as, charlie):
    response = api_as(charlie).post(
        LIST, {"slug": "inverters", "name": "Inverter faults", "language": "en", "description": "Fault codes"},
        format="json",
    )
    assert response.status_code == 201, response.data
    assert response.data["role"] == "owner" and response.data["slug"] == "inverters"
    assert response["Location"] == detail("inverters")
    domain = Domain.objects.get(slug="inverters")
    assert Membership.objects.get(domain=domain, user=charlie).role == Role.OWNER


def test_create_refuses_a_taken_slug(api_as, charlie, domain):
    response = api_as(charlie).post(LIST, {"slug": "finance", "name": "Mine now"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.data
    assert Domain.objects.get(slug="finance").name == "University finance"
    assert not Membership.objects.filter(domain=domain, user=charlie).exists()


@pytest.mark.parametrize("slug", ["Has Caps", "-leading", "under_score", ""])
def test_create_refuses_a_bad_slug(api_as, charlie, slug):
    response = api_as(charlie).post(LIST, {"slug": slug, "name": "X"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.data
    assert not Domain.objects.exists()


def test_create_refuses_an_unknown_language(api_as, charlie):
    response = api_as(charlie).post(LIST, {"slug": "x", "name": "X", "language": "fr"}, format="json")
    assert response.status_code == 400 and "language" in response.data


def test_api_keys_cannot_create_domains(domain, issue_key):
    _key, secret = issue_key(domain, "read_write")
    response = key_client(secret).post(LIST, {"slug": "by-key", "name": "By key"}, format="json")
    assert response.status_code == 403
    assert not Domain.objects.filter(slug="by-key").exists()


def test_anonymous_cannot_create(db):
    assert APIClient().post(LIST, {"slug": "anon", "name": "Anon"}, format="json").status_code == 401
    assert not Domain.objects.exists()


# --- retrieve ----------------------------------------------------------------------------


def test_members_retrieve_with_their_role(api_as, users, domain):
    for role_name in ("owner", "expert", "viewer"):
        response = api_as(users[role_name]).get(detail("finance"))
        assert response.status_code == 200
        assert response.data["role"] == role_name and response.data["language"] == "zh"


def test_stranger_gets_404(api_as, charlie, domain):
    assert api_as(charlie).get(detail("finance")).status_code == 404
    assert api_as(charlie).patch(detail("finance"), {"name": "Hijacked"}, format="json").status_code == 404
    assert Domain.objects.get(slug="finance").name == "University finance"


def test_404_does_not_tell_existing_from_missing(api_as, charlie, domain):
    existing = api_as(charlie).get(detail("finance"))
    missing = api_as(charlie).get(detail("no-such-domain"))
    assert existing.status_code == missing.status_code == 404
    assert existing.data == missing.data


def test_key_of_another_domain_gets_404(domain, other_domain, issue_key):
    _key, secret = issue_key(other_domain, "read_write")
    assert key_client(secret).get(detail("finance")).status_code == 404
    assert key_client(secret).patch(detail("finance"), {"name": "X"}, format="json").status_code == 404


def test_key_retrieves_its_domain_with_the_key_role(domain, issue_key):
    _key, secret = issue_key(domain, "read")
    response = key_client(secret, "Api-Key").get(detail("finance"))
    assert response.status_code == 200 and response.data["role"] == "viewer"


# --- update ------------------------------------------------------------------------------


def test_owner_updates_but_slug_stays(api_as, alice, domain):
    response = api_as(alice).patch(
        detail("finance"), {"name": "Finance office", "slug": "renamed", "language": "en"}, format="json"
    )
    assert response.status_code == 200, response.data
    assert response.data["name"] == "Finance office" and response.data["slug"] == "finance"
    assert response.data["role"] == "owner"
    domain.refresh_from_db()
    assert (domain.slug, domain.name, domain.language) == ("finance", "Finance office", "en")


def test_owner_full_update(api_as, alice, domain):
    response = api_as(alice).put(
        detail("finance"), {"name": "Finance", "description": "Rules", "language": "zh"}, format="json"
    )
    assert response.status_code == 200, response.data
    domain.refresh_from_db()
    assert domain.description == "Rules"


@pytest.mark.parametrize("role_name", ["expert", "viewer"])
def test_non_owners_cannot_update(api_as, users, domain, role_name):
    response = api_as(users[role_name]).patch(detail("finance"), {"name": "Changed"}, format="json")
    assert response.status_code == 403
    domain.refresh_from_db()
    assert domain.name == "University finance"


@pytest.mark.parametrize("scope", ["read", "read_write"])
def test_keys_cannot_update(domain, issue_key, scope):
    _key, secret = issue_key(domain, scope)
    assert key_client(secret).patch(detail("finance"), {"name": "Changed"}, format="json").status_code == 403
    domain.refresh_from_db()
    assert domain.name == "University finance"


def test_domains_cannot_be_deleted_through_the_api(api_as, alice, domain):
    assert api_as(alice).delete(detail("finance")).status_code == 405
    assert Domain.objects.filter(slug="finance").exists()


# --- user tokens -------------------------------------------------------------------------

TOKEN = "/api/auth/token/"


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def test_token_for_username_and_password_authenticates(db, alice, domain):
    response = APIClient().post(TOKEN, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    token = response.data["token"]
    assert Token.objects.get(user=alice).key == token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    listed = client.get(LIST)
    assert listed.status_code == 200
    assert [(row["slug"], row["role"]) for row in listed.data["results"]] == [("finance", "owner")]
    # A token acts as its user, through the same gate.
    assert client.patch(detail("finance"), {"name": "Via token"}, format="json").status_code == 200


def test_token_of_a_stranger_gets_404(db, charlie, domain):
    token = Token.objects.create(user=charlie)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(detail("finance")).status_code == 404


def test_token_refuses_a_wrong_password(db, alice):
    response = APIClient().post(TOKEN, {"username": "alice", "password": "wrong"}, format="json")
    assert response.status_code == 400
    assert not Token.objects.exists()


def test_bad_token_gets_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get(LIST).status_code == 401


def test_token_endpoint_is_throttled(db, alice, monkeypatch):
    monkeypatch.setattr(api.TokenRateThrottle, "rate", "2/minute")
    client = APIClient()
    codes = [client.post(TOKEN, {"username": "alice", "password": "guess"}, format="json").status_code
             for _ in range(3)]
    assert codes == [400, 400, 429]


def test_every_api_endpoint_is_rate_limited_per_caller(db, alice, bob, domain, settings):
    settings.VSM_API_RATE = "3/minute"
    alice_api, bob_api = APIClient(), APIClient()
    alice_api.force_login(alice)
    bob_api.force_login(bob)
    assert [alice_api.get(LIST).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert bob_api.get(f"/api/domains/{domain.slug}/jobs/").status_code == 200  # bob has his own budget
    key, secret = ApiKey.issue(domain=domain, name="crm", scope="read", created_by=alice)
    keyed = APIClient()
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert [keyed.get(LIST).status_code for _ in range(4)][-1] == 429


def test_owner_chooses_the_domain_model_hub(api_as, alice, domain):
    response = api_as(alice).patch(detail("finance"), {"model_hub": "modelscope"}, format="json")
    assert response.status_code == 200 and response.data["model_hub"] == "modelscope"
    domain.refresh_from_db()
    assert domain.model_hub == "modelscope"
    bad = api_as(alice).patch(detail("finance"), {"model_hub": "somewhere"}, format="json")
    assert bad.status_code == 400 and "model_hub" in bad.data
    domain.refresh_from_db()
    assert domain.model_hub == "modelscope"
