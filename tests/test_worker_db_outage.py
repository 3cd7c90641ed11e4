"""The database goes away under a running job on a real qcluster worker: on PostgreSQL every
connection of the worker is terminated (what a server restart does to clients); on SQLite the
database is locked for longer than the worker waits. The job is requeued, not lost, and finishes."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import connection

from domains.models import Job
from domains.services import start_selfcheck

from .test_worker import _job, _wait, cluster  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _outage() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return
    path = connection.settings_dict["NAME"]
    lock = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")  # every other connection now waits, then fails with "database is locked"

    def release():
        time.sleep(8)  # longer than the 5 s a Django SQLite connection waits for a lock
        lock.execute("COMMIT")
        lock.close()

    threading.Thread(target=release, daemon=True).start()


def test_a_database_outage_under_a_running_job_requeues_it_and_it_finishes(cluster, domain, alice):
    _proc, log = cluster
    job = start_selfcheck(domain=domain, created_by=alice, steps=40, step_seconds=0.25)
    _wait(lambda: (j := _job(job.pk)).status == Job.Status.RUNNING and j.progress_done >= 3 and j, 60, log,
          "the job to make progress")
    _outage()
    time.sleep(9)
    connection.close()  # this test's own connection may have been cut too
    done = _wait(lambda: _job(job.pk).is_finished and _job(job.pk), 180, log, "the job to finish")
    assert done.status == Job.Status.SUCCEEDED, done.error + done.log_tail
    assert done.result == {"steps": 40}
    # It either waited the lock out, or was requeued and ran again: never lost, never failed.
    assert done.attempts == 1 or ("database error" in done.log_tail and "requeued" in done.log_tail)
    if connection.vendor == "postgresql":  # its connection was cut: that is always an error, then a retry
        assert done.attempts == 2
