"""API keys page: owners create (secret shown once, stored hashed) and revoke keys."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from domains.models import ApiKey

pytestmark = pytest.mark.django_db


def create(client, domain, name="helpdesk-bot", scope="read"):
    return client.post(reverse("key-create", args=[domain.slug]), {"name": name, "scope": scope})


def test_create_shows_the_secret_once_and_stores_only_its_hash(client_as, alice, domain):
    client = client_as(alice)
    response = create(client, domain, scope="read_write")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    secret = re.search(r'<pre class="secret-value"><code>(vsm_[^<]+)</code></pre>', html).group(1)
    assert "will not be shown again" in html
    key = ApiKey.lookup(secret)
    assert key is not None and key.domain == domain and key.scope == "read_write" and key.created_by == alice
    assert secret not in key.key_hash and key.key_hash != secret
    listing = client.get(reverse("key-list", args=[domain.slug])).content.decode()
    assert "helpdesk-bot" in listing and key.prefix in listing
    assert secret not in listing


def test_revoke_makes_the_key_stop_working(client_as, alice, domain):
    key, secret = ApiKey.issue(domain=domain, name="old", scope="read")
    response = client_as(alice).post(reverse("key-revoke", args=[domain.slug, key.pk]))
    assert response.status_code == 302
    assert ApiKey.lookup(secret) is None
    key.refresh_from_db()
    assert not key.is_active
    html = client_as(alice).get(reverse("key-list", args=[domain.slug])).content.decode()
    assert "Revoked" in html


def test_blank_name_shows_the_form_error(client_as, alice, domain):
    response = create(client_as(alice), domain, name="   ")
    assert response.status_code == 200
    assert "name" in response.context["form"].errors
    assert "new_secret" not in response.context
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("role", ["expert", "viewer"])
def test_non_owners_get_403(client_as, users, domain, role):
    key, secret = ApiKey.issue(domain=domain, name="k", scope="read")
    client = client_as(users[role])
    assert client.get(reverse("key-list", args=[domain.slug])).status_code == 403
    assert create(client, domain).status_code == 403
    assert client.post(reverse("key-revoke", args=[domain.slug, key.pk])).status_code == 403
    assert ApiKey.objects.count() == 1 and ApiKey.lookup(secret) == key


def test_stranger_gets_404(client_as, users, domain):
    key, secret = ApiKey.issue(domain=domain, name="k", scope="read")
    client = client_as(users["stranger"])
    assert client.get(reverse("key-list", args=[domain.slug])).status_code == 404
    assert create(client, domain).status_code == 404
    assert client.post(reverse("key-revoke", args=[domain.slug, key.pk])).status_code == 404
    assert ApiKey.lookup(secret) == key


def test_key_of_another_domain_cannot_be_revoked_through_mine(client_as, alice, domain, other_domain):
    foreign, secret = ApiKey.issue(domain=other_domain, name="pigs", scope="read")
    assert client_as(alice).post(reverse("key-revoke", args=[domain.slug, foreign.pk])).status_code == 404
    assert ApiKey.lookup(secret) == foreign
    html = client_as(alice).get(reverse("key-list", args=[domain.slug])).content.decode()
    assert foreign.prefix not in html


def test_revoke_needs_post(client_as, alice, domain):
    key, _secret = ApiKey.issue(domain=domain, name="k", scope="read")
    assert client_as(alice).get(reverse("key-revoke", args=[domain.slug, key.pk])).status_code == 405
