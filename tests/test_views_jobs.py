"""Jobs: list, detail, live progress fragments, worker check and cancel."""
from __future__ import annotations

import pytest
from django.urls import reverse

from domains.jobs import enqueue_job
from domains.models import Job

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def job(domain, alice):
    job = enqueue_job(domain=domain, kind="selfcheck", params={"steps": 4, "step_seconds": 0}, created_by=alice)
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, progress_done=2, progress_total=4, message="Running", log_tail="12:00:00 hello"
    )
    job.refresh_from_db()
    return job


@pytest.fixture
def foreign_job(other_domain):
    return enqueue_job(domain=other_domain, kind="selfcheck")


def finish(job, status=Job.Status.SUCCEEDED, **fields):
    Job.objects.filter(pk=job.pk).update(status=status, **fields)
    job.refresh_from_db()
    return job


# Pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "expert", "viewer"])
def test_members_see_list_and_detail(client_as, users, domain, job, role):
    client = client_as(users[role])
    listing = client.get(reverse("job-list", args=[domain.slug]))
    assert listing.status_code == 200
    assert [j.pk for j in listing.context["jobs"]] == [job.pk]
    detail = client.get(job.get_absolute_url())
    assert detail.status_code == 200
    html = detail.content.decode()
    assert 'aria-valuenow="50" data-percent="50"' in html
    assert "12:00:00 hello" in html
    assert "<html" in html  # the whole page, not the fragment


def test_only_writers_get_the_selfcheck_form_and_cancel_button(client_as, users, domain, job):
    for role, expected in [("owner", True), ("expert", True), ("viewer", False)]:
        client = client_as(users[role])
        listing = client.get(reverse("job-list", args=[domain.slug])).content.decode()
        detail = client.get(job.get_absolute_url()).content.decode()
        assert ('id="selfcheck-form"' in listing) is expected
        assert (reverse("job-cancel", args=[domain.slug, job.pk]) in detail) is expected


def test_stranger_gets_404_everywhere(client_as, users, domain, job):
    client = client_as(users["stranger"])
    assert client.get(reverse("job-list", args=[domain.slug])).status_code == 404
    assert client.get(job.get_absolute_url()).status_code == 404
    assert client.get(job.get_absolute_url(), **HTMX).status_code == 404
    assert client.get(reverse("job-list", args=[domain.slug]) + f"?job={job.pk}", **HTMX).status_code == 404
    assert client.post(reverse("job-cancel", args=[domain.slug, job.pk])).status_code == 404
    assert client.post(reverse("job-selfcheck", args=[domain.slug]), {"steps": 1, "step_seconds": 0}).status_code == 404
    job.refresh_from_db()
    assert not job.cancel_requested
    assert Job.objects.filter(domain=domain).count() == 1


def test_a_job_of_another_domain_is_404_under_mine(client_as, alice, domain, foreign_job):
    client = client_as(alice)
    assert client.get(reverse("job-detail", args=[domain.slug, foreign_job.pk])).status_code == 404
    assert client.get(reverse("job-list", args=[domain.slug]) + f"?job={foreign_job.pk}", **HTMX).status_code == 404
    assert client.post(reverse("job-cancel", args=[domain.slug, foreign_job.pk])).status_code == 404
    foreign_job.refresh_from_db()
    assert foreign_job.status == Job.Status.QUEUED


def test_bad_job_parameter_is_404(client_as, alice, domain):
    response = client_as(alice).get(reverse("job-list", args=[domain.slug]) + "?job=abc", **HTMX)
    assert response.status_code == 404


def test_anonymous_is_sent_to_login(client, domain, job):
    for path in [reverse("job-list", args=[domain.slug]), job.get_absolute_url()]:
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


# Live progress ------------------------------------------------------------------------------


def test_htmx_detail_returns_only_the_polling_panel(client_as, vera, job):
    response = client_as(vera).get(job.get_absolute_url(), **HTMX)
    assert response.status_code == 200
    html = response.content.decode().strip()
    assert html.startswith('<section id="job-panel"')
    assert "<html" not in html and "<nav" not in html
    assert f'hx-get="{job.get_absolute_url()}"' in html and 'hx-trigger="every 1s"' in html
    assert 'data-percent="50"' in html
    assert "HX-Request" in response["Vary"]


def test_htmx_row_returns_only_the_row(client_as, vera, domain, job):
    response = client_as(vera).get(reverse("job-list", args=[domain.slug]) + f"?job={job.pk}", **HTMX)
    assert response.status_code == 200
    html = response.content.decode().strip()
    assert html.startswith(f'<tr id="job-{job.pk}"') and html.endswith("</tr>")
    assert 'hx-trigger="every 1s"' in html


@pytest.mark.parametrize("status", [Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.CANCELLED])
def test_finished_job_poll_stops_with_286(client_as, vera, domain, job, status):
    finish(job, status, error="disk full" if status == Job.Status.FAILED else "")
    client = client_as(vera)
    for path in [job.get_absolute_url(), reverse("job-list", args=[domain.slug]) + f"?job={job.pk}"]:
        response = client.get(path, **HTMX)
        assert response.status_code == 286
        html = response.content.decode()
        assert "hx-trigger" not in html
        assert f'data-status="{status}"' in html
    if status == Job.Status.SUCCEEDED:
        assert 'data-percent="100"' in html


def test_failed_job_shows_its_error(client_as, vera, job):
    finish(job, Job.Status.FAILED, error="The PDF is encrypted; upload an unlocked copy.")
    html = client_as(vera).get(job.get_absolute_url()).content.decode()
    assert "The PDF is encrypted; upload an unlocked copy." in html


# Worker check -------------------------------------------------------------------------------


def test_expert_starts_a_worker_check(client_as, bob, domain):
    response = client_as(bob).post(reverse("job-selfcheck", args=[domain.slug]), {"steps": 5, "step_seconds": 0.3})
    assert response.status_code == 302
    assert response["Location"] == reverse("job-list", args=[domain.slug])
    job = Job.objects.get(domain=domain)
    assert (job.kind, job.status, job.params, job.created_by) == (
        "selfcheck", Job.Status.QUEUED, {"steps": 5, "step_seconds": 0.3}, bob
    )


def test_invalid_worker_check_shows_errors(client_as, bob, domain):
    response = client_as(bob).post(reverse("job-selfcheck", args=[domain.slug]), {"steps": 0, "step_seconds": 99})
    assert response.status_code == 200
    assert set(response.context["form"].errors) == {"steps", "step_seconds"}
    assert not Job.objects.exists()


def test_viewer_cannot_start_or_cancel(client_as, vera, domain, job):
    client = client_as(vera)
    assert client.post(reverse("job-selfcheck", args=[domain.slug]), {"steps": 1, "step_seconds": 0}).status_code == 403
    assert client.post(reverse("job-cancel", args=[domain.slug, job.pk])).status_code == 403
    job.refresh_from_db()
    assert not job.cancel_requested and Job.objects.count() == 1


# Cancel -------------------------------------------------------------------------------------


def test_cancel_a_queued_job(client_as, bob, domain):
    job = enqueue_job(domain=domain, kind="selfcheck")
    response = client_as(bob).post(reverse("job-cancel", args=[domain.slug, job.pk]))
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_cancel_a_running_job_asks_it_to_stop(client_as, bob, domain, job):
    response = client_as(bob).post(reverse("job-cancel", args=[domain.slug, job.pk]), **HTMX)
    assert response.status_code == 200
    assert response.content.decode().strip().startswith('<section id="job-panel"')
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.cancel_requested


def test_cancel_needs_post(client_as, bob, domain, job):
    assert client_as(bob).get(reverse("job-cancel", args=[domain.slug, job.pk])).status_code == 405
