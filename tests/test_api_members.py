"""API: /api/domains/<slug>/members/ — any member lists, only owners add, change and remove."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from domains.models import ApiKey, Membership, Role

LIST = "/api/domains/finance/members/"


def detail(membership: Membership) -> str:
    return f"{LIST}{membership.pk}/"


def key_client(domain, scope: str = "read_write", revoked: bool = False) -> APIClient:
    key, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    if revoked:
        key.revoke()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def member(domain, user) -> Membership:
    return Membership.objects.get(domain=domain, user=user)


# --- list --------------------------------------------------------------------------------


@pytest.mark.parametrize("role_name", ["owner", "expert", "viewer"])
def test_any_member_lists_members(api_as, users, domain, other_domain, role_name):
    response = api_as(users[role_name]).get(LIST)
    assert response.status_code == 200
    rows = {row["username"]: row["role"] for row in response.data["results"]}
    assert rows == {"alice": "owner", "bob": "expert", "vera": "viewer"}  # not charlie of the other domain


def test_read_key_lists_members(domain):
    response = key_client(domain, "read").get(LIST)
    assert response.status_code == 200 and response.data["count"] == 3


def test_member_detail(api_as, vera, bob, domain):
    response = api_as(vera).get(detail(member(domain, bob)))
    assert response.status_code == 200
    assert response.data["username"] == "bob" and response.data["role"] == "expert"


def test_stranger_gets_404_for_everything(api_as, charlie, bob, domain):
    client = api_as(charlie)
    target = member(domain, bob)
    assert client.get(LIST).status_code == 404
    assert client.get(detail(target)).status_code == 404
    assert client.post(LIST, {"user": "charlie", "role": "owner"}, format="json").status_code == 404
    assert client.patch(detail(target), {"role": "viewer"}, format="json").status_code == 404
    assert client.delete(detail(target)).status_code == 404
    assert not Membership.objects.filter(domain=domain, user=charlie).exists()
    assert member(domain, bob).role == Role.EXPERT


def test_key_of_another_domain_gets_404(domain, other_domain, bob):
    client = key_client(other_domain)
    assert client.get(LIST).status_code == 404
    assert client.get(detail(member(domain, bob))).status_code == 404


def test_revoked_key_gets_401(domain):
    assert key_client(domain, revoked=True).get(LIST).status_code == 401


def test_anonymous_gets_401(db, domain):
    assert APIClient().get(LIST).status_code == 401


def test_membership_of_another_domain_is_404(api_as, alice, charlie, domain, other_domain):
    foreign = member(other_domain, charlie)
    client = api_as(alice)
    assert client.get(detail(foreign)).status_code == 404
    assert client.patch(detail(foreign), {"role": "viewer"}, format="json").status_code == 404
    assert client.delete(detail(foreign)).status_code == 404
    assert member(other_domain, charlie).role == Role.OWNER


# --- add ---------------------------------------------------------------------------------


def test_owner_adds_by_username(api_as, alice, charlie, domain):
    response = api_as(alice).post(LIST, {"user": "charlie", "role": "expert"}, format="json")
    assert response.status_code == 201, response.data
    assert response.data["username"] == "charlie" and response.data["role"] == "expert"
    assert member(domain, charlie).role == Role.EXPERT


def test_owner_adds_by_email_as_viewer_by_default(api_as, alice, charlie, domain):
    response = api_as(alice).post(LIST, {"user": "CHARLIE@example.org"}, format="json")
    assert response.status_code == 201, response.data
    assert member(domain, charlie).role == Role.VIEWER


def test_add_unknown_user_is_400(api_as, alice, domain):
    response = api_as(alice).post(LIST, {"user": "nobody", "role": "viewer"}, format="json")
    assert response.status_code == 400
    assert "user" in response.data


def test_add_existing_member_is_400(api_as, alice, domain):
    response = api_as(alice).post(LIST, {"user": "bob", "role": "owner"}, format="json")
    assert response.status_code == 400 and "user" in response.data
    assert member(domain, alice).role == Role.OWNER


def test_add_with_unknown_role_is_400(api_as, alice, charlie, domain):
    response = api_as(alice).post(LIST, {"user": "charlie", "role": "admin"}, format="json")
    assert response.status_code == 400 and "role" in response.data
    assert not Membership.objects.filter(domain=domain, user=charlie).exists()


@pytest.mark.parametrize("role_name", ["expert", "viewer"])
def test_non_owners_cannot_add(api_as, users, charlie, domain, role_name):
    response = api_as(users[role_name]).post(LIST, {"user": "charlie", "role": "viewer"}, format="json")
    assert response.status_code == 403
    assert not Membership.objects.filter(domain=domain, user=charlie).exists()


@pytest.mark.parametrize("scope", ["read", "read_write"])
def test_keys_cannot_manage_members(domain, bob, charlie, scope):
    client = key_client(domain, scope)
    assert client.post(LIST, {"user": "charlie", "role": "viewer"}, format="json").status_code == 403
    assert client.patch(detail(member(domain, bob)), {"role": "owner"}, format="json").status_code == 403
    assert client.delete(detail(member(domain, bob))).status_code == 403
    assert not Membership.objects.filter(domain=domain, user=charlie).exists()
    assert member(domain, bob).role == Role.EXPERT


# --- change role -------------------------------------------------------------------------


def test_owner_changes_a_role(api_as, alice, vera, domain):
    response = api_as(alice).patch(detail(member(domain, vera)), {"role": "expert"}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["role"] == "expert"
    assert member(domain, vera).role == Role.EXPERT


def test_owner_changes_a_role_with_put(api_as, alice, bob, domain):
    response = api_as(alice).put(detail(member(domain, bob)), {"role": "owner"}, format="json")
    assert response.status_code == 200, response.data
    assert member(domain, bob).role == Role.OWNER


def test_change_to_unknown_role_is_400(api_as, alice, vera, domain):
    response = api_as(alice).patch(detail(member(domain, vera)), {"role": "god"}, format="json")
    assert response.status_code == 400
    assert member(domain, vera).role == Role.VIEWER


@pytest.mark.parametrize("role_name", ["expert", "viewer"])
def test_non_owners_cannot_change_roles(api_as, users, vera, domain, role_name):
    response = api_as(users[role_name]).patch(detail(member(domain, vera)), {"role": "owner"}, format="json")
    assert response.status_code == 403
    assert member(domain, vera).role == Role.VIEWER


def test_last_owner_cannot_step_down(api_as, alice, domain):
    response = api_as(alice).patch(detail(member(domain, alice)), {"role": "expert"}, format="json")
    assert response.status_code == 400
    assert "role" in response.data
    assert member(domain, alice).role == Role.OWNER


def test_owner_steps_down_when_another_owner_remains(api_as, alice, bob, domain):
    Membership.objects.filter(domain=domain, user=bob).update(role=Role.OWNER)
    response = api_as(alice).patch(detail(member(domain, alice)), {"role": "viewer"}, format="json")
    assert response.status_code == 200
    assert member(domain, alice).role == Role.VIEWER
    # Now a viewer, alice can no longer manage members.
    assert api_as(alice).patch(detail(member(domain, bob)), {"role": "viewer"}, format="json").status_code == 403


# --- remove ------------------------------------------------------------------------------


def test_owner_removes_a_member(api_as, alice, vera, domain):
    response = api_as(alice).delete(detail(member(domain, vera)))
    assert response.status_code == 204
    assert not Membership.objects.filter(domain=domain, user=vera).exists()
    # vera is now a stranger to the domain.
    assert api_as(vera).get(LIST).status_code == 404


def test_last_owner_cannot_be_removed(api_as, alice, domain):
    response = api_as(alice).delete(detail(member(domain, alice)))
    assert response.status_code == 400
    assert member(domain, alice).role == Role.OWNER


@pytest.mark.parametrize("role_name", ["expert", "viewer"])
def test_non_owners_cannot_remove(api_as, users, alice, domain, role_name):
    assert api_as(users[role_name]).delete(detail(member(domain, alice))).status_code == 403
    assert Membership.objects.filter(domain=domain, user=alice).exists()
