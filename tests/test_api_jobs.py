"""API: /api/domains/<slug>/jobs/ — list, start, poll and cancel jobs, isolated per domain."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from domains import api
from domains.jobs import enqueue_job, registered_kinds, run_job
from domains.models import ApiKey, Job
from domains.serializers import STARTABLE_JOB_PARAMS

LIST = "/api/domains/finance/jobs/"


def detail(job: Job | int, slug: str = "finance") -> str:
    return f"/api/domains/{slug}/jobs/{getattr(job, 'pk', job)}/"


def key_client(domain, scope: str = "read_write", revoked: bool = False) -> APIClient:
    key, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    if revoked:
        key.revoke()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def finance_job(domain, alice, sent):
    return enqueue_job(domain=domain, kind="selfcheck", params={"steps": 2, "step_seconds": 0}, created_by=alice)


@pytest.fixture
def pig_job(other_domain, charlie, sent):
    return enqueue_job(domain=other_domain, kind="selfcheck", params={"steps": 2, "step_seconds": 0},
                       created_by=charlie)


SELFCHECK = {"kind": "selfcheck", "params": {"steps": 3, "step_seconds": 0}}


# --- start -------------------------------------------------------------------------------


def test_expert_starts_a_selfcheck_sent_after_commit_and_run_to_the_end(
    api_as, bob, domain, sent, django_capture_on_commit_callbacks
):
    client = api_as(bob)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(LIST, SELFCHECK, format="json")
    assert response.status_code == 201, response.data
    job = Job.objects.get(pk=response.data["id"])
    assert response["Location"] == detail(job)
    assert response.data["status"] == "queued" and response.data["percent"] == 0
    assert response.data["params"] == {"steps": 3, "step_seconds": 0.0}
    assert (job.domain, job.kind, job.created_by) == (domain, "selfcheck", bob)
    assert sent == []  # nothing reaches the broker before the transaction commits
    for callback in callbacks:
        callback()
    assert sent == [job.pk]

    assert run_job(job.pk) == Job.Status.SUCCEEDED
    shown = client.get(detail(job))
    assert shown.status_code == 200
    data = shown.data
    assert data["status"] == "succeeded" and data["is_finished"] is True
    assert data["percent"] == 100
    assert (data["progress_done"], data["progress_total"]) == (3, 3)
    assert data["attempts"] == 1 and data["error"] == ""
    assert data["result"] == {"steps": 3}
    assert "worker check: 3 steps" in data["log_tail"]
    assert data["created_at"] and data["started_at"] and data["finished_at"] and data["heartbeat_at"]
    assert data["created_by"] == "bob" and data["kind_label"]


def test_owner_starts_with_default_params(api_as, alice, domain, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(alice).post(LIST, {"kind": "selfcheck"}, format="json")
    assert response.status_code == 201, response.data
    job = Job.objects.get(pk=response.data["id"])
    assert job.params == {"steps": 10, "step_seconds": 0.5}
    assert sent == [job.pk]


def test_read_write_key_starts_and_cancels(domain, sent, django_capture_on_commit_callbacks):
    client = key_client(domain, "read_write")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(LIST, SELFCHECK, format="json")
    assert response.status_code == 201, response.data
    job = Job.objects.get(pk=response.data["id"])
    assert job.domain == domain and job.created_by is None
    assert sent == [job.pk]

    cancelled = client.post(f"{detail(job)}cancel/")
    assert cancelled.status_code == 200
    assert cancelled.data["status"] == "cancelled" and cancelled.data["finished_at"]
    # The worker that receives it later does not run it.
    assert run_job(job.pk) == "skipped"
    assert client.get(detail(job)).data["status"] == "cancelled"


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"kind": "selfcheck", "params": {"steps": 0}}, "params"),
        ({"kind": "selfcheck", "params": {"steps": 5, "step_seconds": 61}}, "params"),
        ({"kind": "selfcheck", "params": {"steps": "many"}}, "params"),
        ({"kind": "selfcheck", "params": [1, 2]}, "params"),
        ({"kind": "train-the-world"}, "kind"),
        ({}, "kind"),
    ],
)
def test_start_validates(api_as, bob, domain, sent, payload, field):
    response = api_as(bob).post(LIST, payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert not Job.objects.exists() and sent == []


def test_viewer_cannot_start(api_as, vera, domain, sent):
    assert api_as(vera).post(LIST, SELFCHECK, format="json").status_code == 403
    assert not Job.objects.exists()


def test_read_key_cannot_start(domain, sent):
    response = key_client(domain, "read").post(LIST, SELFCHECK, format="json")
    assert response.status_code == 403
    assert not Job.objects.exists()


def test_stranger_cannot_start(api_as, charlie, domain, other_domain, sent):
    assert api_as(charlie).post(LIST, SELFCHECK, format="json").status_code == 404
    assert not Job.objects.exists()


def test_key_of_another_domain_cannot_start(domain, other_domain, sent):
    assert key_client(other_domain).post(LIST, SELFCHECK, format="json").status_code == 404
    assert not Job.objects.exists()


def test_revoked_key_gets_401(domain, finance_job):
    client = key_client(domain, revoked=True)
    assert client.get(LIST).status_code == 401
    assert client.post(LIST, SELFCHECK, format="json").status_code == 401
    assert client.post(f"{detail(finance_job)}cancel/").status_code == 401


def test_anonymous_gets_401(db, domain, finance_job):
    assert APIClient().get(LIST).status_code == 401
    assert APIClient().get(detail(finance_job)).status_code == 401
    assert APIClient().post(LIST, SELFCHECK, format="json").status_code == 401


def test_every_startable_kind_has_a_starter_and_a_handler():
    assert set(api.JOB_STARTERS) == set(STARTABLE_JOB_PARAMS)
    assert set(STARTABLE_JOB_PARAMS) <= set(registered_kinds())


# --- list and detail ---------------------------------------------------------------------


def test_list_shows_only_this_domain(api_as, vera, finance_job, pig_job):
    response = api_as(vera).get(LIST)
    assert response.status_code == 200
    assert [row["id"] for row in response.data["results"]] == [finance_job.pk]
    row = response.data["results"][0]
    assert row["status"] == "queued" and row["kind"] == "selfcheck"
    assert "log_tail" not in row  # the list stays light; the detail has the log


def test_list_filters_by_status_and_kind(api_as, vera, domain, alice, sent):
    queued = enqueue_job(domain=domain, kind="selfcheck", params={"steps": 1, "step_seconds": 0})
    done = enqueue_job(domain=domain, kind="selfcheck", params={"steps": 1, "step_seconds": 0})
    run_job(done.pk)
    Job.objects.create(domain=domain, kind="ingest", status=Job.Status.FAILED, error="bad PDF")
    client = api_as(vera)

    def ids(query: str) -> set[int]:
        response = client.get(f"{LIST}?{query}")
        assert response.status_code == 200, response.data
        return {row["id"] for row in response.data["results"]}

    assert ids("status=queued") == {queued.pk}
    assert ids("status=succeeded") == {done.pk}
    assert ids("status=queued,succeeded") == {queued.pk, done.pk}
    assert ids("kind=selfcheck") == {queued.pk, done.pk}
    assert ids("kind=ingest&status=failed") == {Job.objects.get(kind="ingest").pk}
    assert ids("kind=ingest&status=queued") == set()
    assert ids("") == {job.pk for job in Job.objects.all()}


def test_list_refuses_an_unknown_status(api_as, vera, domain):
    response = api_as(vera).get(f"{LIST}?status=queued,exploded")
    assert response.status_code == 400
    assert "exploded" in str(response.data["status"])


def test_list_is_paginated(api_as, vera, domain, sent):
    for _ in range(3):
        enqueue_job(domain=domain, kind="selfcheck")
    response = api_as(vera).get(f"{LIST}?limit=2")
    assert response.data["count"] == 3 and len(response.data["results"]) == 2 and response.data["next"]


def test_viewer_and_read_key_see_a_job(api_as, vera, domain, finance_job):
    for client in (api_as(vera), key_client(domain, "read")):
        response = client.get(detail(finance_job))
        assert response.status_code == 200
        assert response.data["id"] == finance_job.pk and response.data["message"]


def test_detail_shows_a_failure(api_as, vera, domain):
    job = Job.objects.create(
        domain=domain, kind="ingest", status=Job.Status.FAILED, progress_done=1, progress_total=4,
        error="The PDF is encrypted; upload an unlocked copy.", log_tail="12:00:00 opening handbook.pdf",
        attempts=2, max_attempts=3,
    )
    data = api_as(vera).get(detail(job)).data
    assert data["status"] == "failed" and data["percent"] == 25
    assert data["error"] == "The PDF is encrypted; upload an unlocked copy."
    assert data["log_tail"] == "12:00:00 opening handbook.pdf"
    assert (data["attempts"], data["max_attempts"]) == (2, 3)


def test_stranger_gets_404(api_as, charlie, domain, other_domain, finance_job):
    client = api_as(charlie)
    assert client.get(LIST).status_code == 404
    assert client.get(detail(finance_job)).status_code == 404
    assert client.post(f"{detail(finance_job)}cancel/").status_code == 404
    finance_job.refresh_from_db()
    assert finance_job.status == Job.Status.QUEUED


def test_key_of_another_domain_gets_404(domain, other_domain, finance_job):
    client = key_client(other_domain)
    assert client.get(LIST).status_code == 404
    assert client.get(detail(finance_job)).status_code == 404
    assert client.post(f"{detail(finance_job)}cancel/").status_code == 404
    finance_job.refresh_from_db()
    assert finance_job.status == Job.Status.QUEUED


def test_job_of_another_domain_is_404_under_this_domain(api_as, alice, domain, pig_job):
    client = api_as(alice)
    assert client.get(detail(pig_job)).status_code == 404
    assert client.post(f"{detail(pig_job)}cancel/").status_code == 404
    pig_job.refresh_from_db()
    assert pig_job.status == Job.Status.QUEUED and not pig_job.cancel_requested


def test_key_cannot_reach_a_job_of_another_domain_through_its_own(domain, other_domain, pig_job):
    client = key_client(domain)
    assert client.get(detail(pig_job)).status_code == 404
    assert client.get(detail(pig_job, slug="pigs")).status_code == 404


# --- cancel ------------------------------------------------------------------------------


def test_expert_cancels_a_queued_job(api_as, bob, finance_job):
    response = api_as(bob).post(f"{detail(finance_job)}cancel/")
    assert response.status_code == 200
    assert response.data["status"] == "cancelled" and response.data["cancel_requested"] is True
    finance_job.refresh_from_db()
    assert finance_job.status == Job.Status.CANCELLED


def test_cancel_asks_a_running_job_to_stop(api_as, bob, finance_job):
    Job.objects.filter(pk=finance_job.pk).update(status=Job.Status.RUNNING)
    response = api_as(bob).post(f"{detail(finance_job)}cancel/")
    assert response.status_code == 200
    assert response.data["status"] == "running" and response.data["cancel_requested"] is True


def test_cancel_of_a_finished_job_is_409(api_as, bob, finance_job):
    run_job(finance_job.pk)
    response = api_as(bob).post(f"{detail(finance_job)}cancel/")
    assert response.status_code == 409
    finance_job.refresh_from_db()
    assert finance_job.status == Job.Status.SUCCEEDED and not finance_job.cancel_requested


def test_viewer_cannot_cancel(api_as, vera, finance_job):
    assert api_as(vera).post(f"{detail(finance_job)}cancel/").status_code == 403
    finance_job.refresh_from_db()
    assert finance_job.status == Job.Status.QUEUED and not finance_job.cancel_requested


def test_read_key_cannot_cancel(domain, finance_job):
    assert key_client(domain, "read").post(f"{detail(finance_job)}cancel/").status_code == 403
    finance_job.refresh_from_db()
    assert finance_job.status == Job.Status.QUEUED


def test_jobs_cannot_be_edited_or_deleted(api_as, alice, finance_job):
    client = api_as(alice)
    assert client.patch(detail(finance_job), {"status": "succeeded"}, format="json").status_code == 405
    assert client.delete(detail(finance_job)).status_code == 405
    finance_job.refresh_from_db()
    assert finance_job.status == Job.Status.QUEUED
