"""Every state-changing browser request needs the CSRF token: each domain page route (walked from the
URL conf, so a new one cannot escape), the public chat, log-in/out and the language switch."""
from __future__ import annotations

import pytest
from django.test import Client

from inference_app.models import Deployment
from tests.test_isolation_matrix import DOMAIN_ROUTES, _url, ids  # noqa: F401 - fixture used by name

PAGE_ROUTES = [r for r in DOMAIN_ROUTES if r.startswith("d/")]


@pytest.mark.parametrize("route", PAGE_ROUTES)
def test_a_post_without_the_csrf_token_is_refused(route, ids, alice):  # noqa: F811
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    status = client.post(_url(route, ids), {"question": "x", "rating": "1"}).status_code
    assert status in (403, 405), f"POST {route} without a CSRF token gave {status}"


def test_most_page_routes_take_posts_and_all_of_those_check_the_token(ids, alice):  # noqa: F811
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    refused = [r for r in PAGE_ROUTES if client.post(_url(r, ids)).status_code == 403]
    assert len(refused) >= 30  # the page routes that change something


def test_public_chat_login_logout_and_language_need_the_token(domain, alice):
    Deployment.objects.create(domain=domain, public=True, public_token="t" * 32)
    client = Client(enforce_csrf_checks=True)
    for url in (f"/p/{'t' * 32}/ask/", f"/p/{'t' * 32}/stream/", "/login/", "/i18n/setlang/"):
        assert client.post(url, {"question": "x", "username": "alice", "password": "x", "language": "zh-hans"}
                           ).status_code == 403, url
    client.force_login(alice)
    assert client.post("/logout/").status_code == 403
