"""Password guessing on the log-in page is cut off after VSM_LOGIN_FAILURES tries."""
from __future__ import annotations

import uuid

from django.core.cache import cache
from django.test import RequestFactory

from domains.views_auth import _keys
from tests.conftest import PASSWORD


def reset(username: str) -> None:
    """The username's count of an earlier run in this window (the cache outlives the test database)."""
    cache.delete_many(_keys(RequestFactory().post("/login/", {"username": username})))


def test_failed_log_ins_lock_the_form_then_the_right_password_waits(client, alice, settings):
    settings.VSM_LOGIN_FAILURES = 3
    reset("alice")
    ip = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"  # counts are per address: a fresh one per run
    for _ in range(3):
        response = client.post("/login/", {"username": "alice", "password": "wrong"}, REMOTE_ADDR=ip)
        assert response.status_code == 200
    locked = client.post("/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR=ip)
    assert locked.status_code == 429 and "Too many failed log-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # from another address the username is still counted as under attack
    assert client.post("/login/", {"username": "alice", "password": PASSWORD},
                       REMOTE_ADDR="192.0.2.1").status_code == 429
    reset("alice")  # other tests log alice in through this form


def test_a_successful_log_in_resets_the_username_count(client, bob, settings):
    settings.VSM_LOGIN_FAILURES = 3
    reset("bob")
    ip = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.8"
    for _ in range(2):
        client.post("/login/", {"username": "bob", "password": "wrong"}, REMOTE_ADDR=ip)
    assert client.post("/login/", {"username": "bob", "password": PASSWORD}, REMOTE_ADDR=ip).status_code == 302
    client.logout()
    other = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.9"
    for _ in range(2):
        assert client.post("/login/", {"username": "bob", "password": "wrong"}, REMOTE_ADDR=other).status_code == 200
    assert client.post("/login/", {"username": "bob", "password": PASSWORD}, REMOTE_ADDR=other).status_code == 302
