"""Members page: owners add, re-role and remove members; the last owner is protected."""
from __future__ import annotations

import pytest
from django.urls import reverse

from domains.models import Membership, Role
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def m(domain, user):
    return Membership.objects.get(domain=domain, user=user)


def test_owner_sees_members(client_as, alice, domain):
    response = client_as(alice).get(reverse("member-list", args=[domain.slug]))
    assert response.status_code == 200
    assert [row[0].user.username for row in response.context["rows"]] == ["alice", "bob", "vera"]


@pytest.mark.parametrize("role", ["expert", "viewer"])
def test_non_owners_get_403(client_as, users, domain, role):
    client = client_as(users[role])
    target = m(domain, users["viewer"])
    assert client.get(reverse("member-list", args=[domain.slug])).status_code == 403
    assert client.post(reverse("member-add", args=[domain.slug]), {"user": "charlie", "role": "owner"}).status_code == 403
    assert client.post(reverse("member-role", args=[domain.slug, target.pk]), {f"m{target.pk}-role": "owner"}).status_code == 403
    assert client.post(reverse("member-remove", args=[domain.slug, target.pk])).status_code == 403
    assert Membership.objects.filter(domain=domain).count() == 3
    assert m(domain, users["viewer"]).role == Role.VIEWER


def test_stranger_gets_404(client_as, users, domain):
    client = client_as(users["stranger"])
    target = m(domain, users["viewer"])
    assert client.get(reverse("member-list", args=[domain.slug])).status_code == 404
    assert client.post(reverse("member-add", args=[domain.slug]), {"user": "charlie", "role": "owner"}).status_code == 404
    assert client.post(reverse("member-remove", args=[domain.slug, target.pk])).status_code == 404
    assert not Membership.objects.filter(domain=domain, user=users["stranger"]).exists()


def test_membership_of_another_domain_is_404(client_as, alice, domain, other_domain, charlie):
    foreign = m(other_domain, charlie)
    client = client_as(alice)
    assert client.post(reverse("member-remove", args=[domain.slug, foreign.pk])).status_code == 404
    assert client.post(reverse("member-role", args=[domain.slug, foreign.pk]), {f"m{foreign.pk}-role": "viewer"}).status_code == 404
    assert m(other_domain, charlie).role == Role.OWNER


def test_add_by_username_and_by_email(client_as, alice, domain, charlie):
    client = client_as(alice)
    response = client.post(reverse("member-add", args=[domain.slug]), {"user": "charlie", "role": "expert"})
    assert response.status_code == 302
    assert m(domain, charlie).role == Role.EXPERT
    dora = make_user("dora")
    client.post(reverse("member-add", args=[domain.slug]), {"user": "DORA@example.org", "role": "viewer"})
    assert m(domain, dora).role == Role.VIEWER


def test_add_errors_come_from_the_service(client_as, alice, domain):
    client = client_as(alice)
    response = client.post(reverse("member-add", args=[domain.slug]), {"user": "nobody", "role": "viewer"})
    assert response.status_code == 200
    assert "user" in response.context["form"].errors
    assert "nobody" in response.content.decode()
    response = client.post(reverse("member-add", args=[domain.slug]), {"user": "bob", "role": "viewer"})
    assert "already a member" in str(response.context["form"].errors["user"])
    assert Membership.objects.get(domain=domain, user__username="bob").role == Role.EXPERT


def test_change_role(client_as, alice, bob, domain):
    target = m(domain, bob)
    response = client_as(alice).post(reverse("member-role", args=[domain.slug, target.pk]), {f"m{target.pk}-role": "owner"})
    assert response.status_code == 302
    assert m(domain, bob).role == Role.OWNER


def test_last_owner_cannot_be_demoted_or_removed(client_as, alice, domain):
    client = client_as(alice)
    me = m(domain, alice)
    response = client.post(reverse("member-role", args=[domain.slug, me.pk]), {f"m{me.pk}-role": "viewer"}, follow=True)
    assert "A domain needs at least one owner." in response.content.decode()
    response = client.post(reverse("member-remove", args=[domain.slug, me.pk]), follow=True)
    assert "A domain needs at least one owner." in response.content.decode()
    assert m(domain, alice).role == Role.OWNER


def test_remove_a_member(client_as, alice, vera, domain):
    target = m(domain, vera)
    response = client_as(alice).post(reverse("member-remove", args=[domain.slug, target.pk]))
    assert response.status_code == 302
    assert not Membership.objects.filter(domain=domain, user=vera).exists()


def test_owner_leaving_goes_home(client_as, alice, bob, domain):
    Membership.objects.filter(domain=domain, user=bob).update(role=Role.OWNER)
    me = m(domain, alice)
    response = client_as(alice).post(reverse("member-remove", args=[domain.slug, me.pk]))
    assert response["Location"] == reverse("home")
    assert client_as(alice).get(reverse("domain-dashboard", args=[domain.slug])).status_code == 404
