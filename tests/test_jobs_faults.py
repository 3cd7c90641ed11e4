"""Jobs facing a database that went away for a moment and a full disk."""
from __future__ import annotations

import errno

from django.db import OperationalError

from domains.jobs import enqueue_job, job_handler, run_job
from domains.models import Job

CALLS: list[int] = []


@job_handler("test-db-blip")
def _db_blip(ctx):
    CALLS.append(ctx.job_id)
    if CALLS.count(ctx.job_id) == 1:
        raise OperationalError("server closed the connection unexpectedly")
    return {"ok": True}


@job_handler("test-db-down")
def _db_down(ctx):
    raise OperationalError("could not connect to server: Connection refused")


@job_handler("test-disk-full")
def _disk_full(ctx):
    raise OSError(errno.ENOSPC, "No space left on device", "/data/domains/finance/exports/1/.model.gguf.tmp")


def test_a_database_error_requeues_the_job_and_the_retry_finishes(domain, alice, sent, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    job = enqueue_job(domain=domain, kind="test-db-blip", created_by=alice)
    assert run_job(job.pk) == "requeued"
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.attempts == 1 and job.message == "Requeued after a database error"
    assert "database error (OperationalError); requeued" in job.log_tail and sent.count(job.pk) == 1
    assert run_job(job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 2 and job.result == {"ok": True}


def test_a_database_that_stays_broken_fails_the_job_after_its_attempts(domain, alice, sent, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    job = enqueue_job(domain=domain, kind="test-db-down", created_by=alice)
    for _ in range(job.max_attempts - 1):
        assert run_job(job.pk) == "requeued"
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == job.max_attempts
    assert "The database was unavailable" in job.error and "Check the database server" in job.error


def test_a_full_disk_fails_with_what_to_do(domain, alice, sent):
    job = enqueue_job(domain=domain, kind="test-disk-full", created_by=alice)
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error.startswith("The disk is full (writing /data/domains/finance/exports/1/.model.gguf.tmp)")
    assert "Free space" in job.error and "Traceback" not in job.log_tail


def test_a_broker_that_is_down_when_a_job_is_queued_loses_nothing(domain, alice, sent, monkeypatch,
                                                                  django_capture_on_commit_callbacks):
    from datetime import timedelta

    import redis
    from django.utils import timezone

    from domains import jobs

    def down(job_id):
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(jobs, "_send", down)
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_job(domain=domain, kind="test-db-blip", created_by=alice)  # no error for whoever queued it
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.enqueued_at is None and job.message == "Waiting for the job queue"
    monkeypatch.setattr(jobs, "_send", sent.append)  # the broker is back
    assert jobs.reap_stale_jobs()["resent"] == 0  # a job queued this instant may still be on its way
    assert jobs.reap_stale_jobs(now=timezone.now() + timedelta(seconds=30))["resent"] == 1
    job.refresh_from_db()
    assert sent == [job.pk] and job.enqueued_at is not None
