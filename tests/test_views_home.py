"""Home page: my domains, creating a domain, login and logout."""
from __future__ import annotations

import pytest
from django.urls import reverse

from domains.jobs import enqueue_job
from domains.models import Domain, Membership, Role
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_lists_my_domains_with_role_and_running_jobs(client_as, users, domain, other_domain):
    enqueue_job(domain=domain, kind="selfcheck", params={"steps": 1})
    response = client_as(users["expert"]).get(reverse("home"))
    assert response.status_code == 200
    rows = {d.slug: d for d in response.context["domains"]}
    assert set(rows) == {"finance"}
    assert rows["finance"].role == Role.EXPERT
    assert rows["finance"].active_jobs == 1
    html = response.content.decode()
    assert "University finance" in html
    assert "Pig farming" not in html  # other_domain is not bob's


def test_stranger_does_not_see_other_domains(client_as, users, domain, other_domain):
    response = client_as(users["stranger"]).get(reverse("home"))
    assert [d.slug for d in response.context["domains"]] == ["pigs"]
    assert "University finance" not in response.content.decode()


def test_create_domain_makes_me_owner(client_as, alice):
    response = client_as(alice).post(
        reverse("home"), {"slug": "inverters", "name": "Inverter faults", "description": "", "language": "en"}
    )
    domain = Domain.objects.get(slug="inverters")
    assert response.status_code == 302
    assert response["Location"] == domain.get_absolute_url()
    assert Membership.objects.get(domain=domain, user=alice).role == Role.OWNER


def test_duplicate_slug_shows_service_error(client_as, alice, domain):
    response = client_as(alice).post(reverse("home"), {"slug": "finance", "name": "Again", "language": "zh"})
    assert response.status_code == 200
    assert "slug" in response.context["form"].errors
    assert Domain.objects.filter(slug="finance").count() == 1


def test_login_form_and_logout(client, alice):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 302


def test_wrong_password_is_refused(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert response.context["form"].errors


def test_nav_and_logout_form_are_in_base(client_as, alice, domain):
    html = client_as(alice).get(reverse("home")).content.decode()
    assert f'href="{domain.get_absolute_url()}"' in html
    assert f'action="{reverse("logout")}" method="post"' in html
    assert "X-CSRFToken" in html
    assert 'src="/static/django_htmx/htmx-2.min.js"' in html  # served locally, no CDN
    assert 'href="/static/css/vsm.css"' in html
