"""Shared fixtures: two domains and a member of every role.

- ``domain`` (finance-reimbursement): alice owner, bob expert, vera viewer.
- ``other_domain`` (pig-farming): charlie owner; charlie is a stranger to ``domain``
  and alice, bob and vera are strangers to ``other_domain``.
"""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from domains.models import Domain, Membership, Role

PASSWORD = "correct-horse-battery-staple"


def make_user(username: str):
    return get_user_model().objects.create_user(username, f"{username}@example.org", PASSWORD)


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def vera(db):
    return make_user("vera")


@pytest.fixture
def charlie(db):
    return make_user("charlie")


@pytest.fixture
def domain(alice, bob, vera):
    d = Domain.objects.create(slug="finance", name="University finance", language="zh")
    Membership.objects.create(domain=d, user=alice, role=Role.OWNER)
    Membership.objects.create(domain=d, user=bob, role=Role.EXPERT)
    Membership.objects.create(domain=d, user=vera, role=Role.VIEWER)
    return d


@pytest.fixture
def other_domain(charlie):
    d = Domain.objects.create(slug="pigs", name="Pig farming", language="en")
    Membership.objects.create(domain=d, user=charlie, role=Role.OWNER)
    return d


@pytest.fixture
def users(alice, bob, vera, charlie):
    """By role in ``domain``: owner, expert, viewer, stranger."""
    return {"owner": alice, "expert": bob, "viewer": vera, "stranger": charlie}


@pytest.fixture
def client_as(client):
    """``client_as(user)``: the Django test client logged in as that user."""

    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def api_as():
    """``api_as(user)``: a DRF APIClient authenticated with the user's session."""

    def make(user=None):
        api = APIClient()
        if user is not None:
            api.force_login(user)
        return api

    return make


@pytest.fixture
def data_dir(settings, tmp_path):
    """A private VSM_DATA_DIR for tests that store files."""
    settings.VSM_DATA_DIR = tmp_path
    return tmp_path


@pytest.fixture
def sent(monkeypatch):
    """Job ids handed to the broker (replaced by a list); the jobs themselves are not run."""
    from domains import jobs

    ids: list[int] = []
    monkeypatch.setattr(jobs, "_send", ids.append)
    return ids
