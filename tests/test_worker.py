"""A real ``manage.py qcluster`` subprocess runs jobs end to end, and survives kill -9 of its worker.

Runs against whatever the suite is configured with: the ORM broker on SQLite by default,
the Redis broker on PostgreSQL when ``.ci/run`` sets DATABASE_URL and VSM_BROKER.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from domains.jobs import reap_stale_jobs
from domains.models import Job
from domains.services import start_selfcheck

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
LEASE = 2


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def cluster(tmp_path):
    """Start qcluster with one worker on the test database; stop it after the test."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _database_url(),
        "VSM_DATA_DIR": str(settings.VSM_DATA_DIR),  # a test's private data_dir, when it asked for one first
        "VSM_WORKERS": "1",
        "VSM_JOB_LEASE": str(LEASE),
        "VSM_JOB_TIMEOUT": "120",
        "VSM_JOB_RETRY": "300",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "qcluster.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc, log
    finally:
        # The test is over: stop the whole cluster at once (a graceful stop waits for idle workers).
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait(predicate, timeout: float, log: Path, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-4000:]}")


def _job(pk: int) -> Job:
    return Job.objects.get(pk=pk)


def test_broker_matches_the_database():
    """The suite proves both deployments: ORM broker with SQLite, Redis broker with PostgreSQL."""
    on_postgres = connection.vendor == "postgresql"
    assert ("redis" in settings.Q_CLUSTER) == on_postgres, (
        "run the PostgreSQL suite with VSM_BROKER=redis://… and the SQLite suite with the ORM broker"
    )


def test_worker_runs_a_job_to_the_end(cluster, domain, alice):
    _proc, log = cluster
    job = start_selfcheck(domain=domain, created_by=alice, steps=4, step_seconds=0.1)
    done = _wait(lambda: _job(job.pk).is_finished and _job(job.pk), 60, log, "the job to finish")
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert (done.progress_done, done.progress_total, done.percent) == (4, 4, 100)
    assert done.attempts == 1 and done.result == {"steps": 4}
    assert done.worker and not done.worker.endswith(f":{os.getpid()}")  # ran in the worker, not here


def test_killed_worker_is_detected_and_the_job_recovers(cluster, domain, alice):
    _proc, log = cluster
    job = start_selfcheck(domain=domain, created_by=alice, steps=30, step_seconds=0.2)
    running = _wait(
        lambda: (j := _job(job.pk)).status == Job.Status.RUNNING and j.progress_done >= 2 and j,
        60, log, "the job to make progress",
    )
    worker_pid = int(running.worker.rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)

    # The dead worker stops renewing its lease: the row does not claim to be healthy for long.
    stale = _wait(lambda: Job.objects.stale().filter(pk=job.pk).exists(), 5 * LEASE, log, "the lease to expire")
    assert stale
    assert reap_stale_jobs()["requeued"] == 1  # what the every-minute schedule does

    done = _wait(lambda: _job(job.pk).is_finished and _job(job.pk), 90, log, "the requeued job to finish")
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert done.attempts == 2
    assert done.worker != running.worker  # the cluster replaced the killed worker
    assert "stopped responding" in done.log_tail
    assert Job.objects.filter(domain=domain).count() == 1  # recovered, not duplicated


def test_worker_ingests_an_uploaded_pdf(cluster, domain, bob, tmp_path):
    """Ingestion runs its parser in a sandbox child process, from inside a daemonic django-q2 worker."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from domains.models import Document
    from domains.services import upload_documents

    from .engine import docs

    _proc, log = cluster
    pdf = docs.regulation_pdf(tmp_path / "rules.pdf").read_bytes()
    [outcome] = upload_documents(domain=domain, uploaded_by=bob, files=[SimpleUploadedFile("rules.pdf", pdf)])
    doc = outcome.document
    done = _wait(lambda: (d := Document.objects.get(pk=doc.pk)).status in ("ready", "failed") and d, 120, log,
                 "the document to be read")
    assert done.status == Document.Status.READY, done.error
    assert done.page_count > 1 and done.chunk_count > 0
    assert done.last_job.status == Job.Status.SUCCEEDED and done.last_job.percent == 100
