"""Job lifecycle, run in-process: success, failure, cancel, duplicate delivery, stale workers."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from domains.jobs import JobContext, cancel_job, enqueue_job, job_handler, reap_stale_jobs, run_job
from domains.models import Job

CALLS: list[int] = []


@job_handler("test-ok", "Test success")
def _ok(ctx: JobContext):
    CALLS.append(ctx.job_id)
    for i in range(1, 4):
        ctx.progress(i, 3, message=f"step {i}")
    ctx.log("all three steps done")
    return {"answer": 42}


@job_handler("test-error")
def _error(ctx: JobContext):
    ctx.progress(1, 4)
    ctx.fail("The PDF is encrypted; upload an unlocked copy.")


@job_handler("test-crash")
def _crash(ctx: JobContext):
    raise ValueError("boom in the engine")


@job_handler("test-cancel-midway")
def _cancel_midway(ctx: JobContext):
    ctx.progress(1, 10, message="working")
    cancel_job(Job.objects.get(pk=ctx.job_id))  # someone presses cancel in the browser
    for i in range(2, 11):
        ctx.progress(i, 10)  # raises JobCancelled at the next check
    return {"finished": True}


@job_handler("test-stolen")
def _stolen(ctx: JobContext):
    # The reaper gave the job to another worker while this one was stalled.
    Job.objects.filter(pk=ctx.job_id).update(lease_owner="someone-else")
    ctx.progress(1, 2, message="still here")
    return {"finished": True}


@job_handler("test-slow")
def _slow(ctx: JobContext):
    time.sleep(ctx.params.get("seconds", 2))
    return {}


def test_enqueue_sends_only_after_commit(domain, alice, django_capture_on_commit_callbacks, sent):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = enqueue_job(domain=domain, kind="test-ok", created_by=alice)
    assert sent == []
    assert job.status == Job.Status.QUEUED and job.created_by == alice
    for callback in callbacks:
        callback()
    assert sent == [job.pk]


def test_enqueue_refuses_unknown_kind(domain):
    with pytest.raises(ValueError, match="unknown job kind"):
        enqueue_job(domain=domain, kind="no-such-kind")
    assert not Job.objects.exists()


def test_success_records_progress_result_and_log(domain, sent):
    job = enqueue_job(domain=domain, kind="test-ok")
    assert run_job(job.pk) == Job.Status.SUCCEEDED
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert (job.progress_done, job.progress_total, job.percent) == (3, 3, 100)
    assert job.result == {"answer": 42}
    assert "all three steps done" in job.log_tail
    assert job.attempts == 1 and job.started_at and job.finished_at and job.lease_expires_at is None
    assert job.worker.endswith(f":{__import__('os').getpid()}")


def test_failure_keeps_the_readable_message(domain, sent):
    job = enqueue_job(domain=domain, kind="test-error")
    assert run_job(job.pk) == Job.Status.FAILED
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "The PDF is encrypted; upload an unlocked copy."
    assert job.progress_done == 1 and job.percent == 25
    assert "error: The PDF is encrypted" in job.log_tail


def test_crash_is_a_failure_with_type_and_traceback(domain, sent):
    job = enqueue_job(domain=domain, kind="test-crash")
    assert run_job(job.pk) == Job.Status.FAILED
    job.refresh_from_db()
    assert job.error == "ValueError: boom in the engine"
    assert "Traceback" in job.log_tail


def test_cancel_while_queued_never_runs(domain, sent):
    CALLS.clear()
    job = enqueue_job(domain=domain, kind="test-ok")
    assert cancel_job(job).status == Job.Status.CANCELLED
    assert run_job(job.pk) == "skipped"
    assert CALLS == []
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.attempts == 0


def test_cancel_while_running_stops_at_next_check(domain, sent):
    job = enqueue_job(domain=domain, kind="test-cancel-midway")
    assert run_job(job.pk) == Job.Status.CANCELLED
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.progress_done == 1  # stopped before step 2 was recorded
    assert job.result == {}


def test_cancel_of_finished_job_changes_nothing(domain, sent):
    job = enqueue_job(domain=domain, kind="test-ok")
    run_job(job.pk)
    assert cancel_job(job).status == Job.Status.SUCCEEDED


def test_duplicate_delivery_runs_once(domain, sent):
    CALLS.clear()
    job = enqueue_job(domain=domain, kind="test-ok")
    assert run_job(job.pk) == Job.Status.SUCCEEDED
    assert run_job(job.pk) == "skipped"
    assert CALLS == [job.pk]
    job.refresh_from_db()
    assert job.attempts == 1


def test_missing_job_id_is_ignored(db):
    assert run_job(999_999) == "skipped"


def test_unknown_kind_in_the_row_fails_clearly(domain, sent):
    job = Job.objects.create(domain=domain, kind="retired-kind")
    assert run_job(job.pk) == Job.Status.FAILED
    job.refresh_from_db()
    assert "No handler is installed for jobs of kind 'retired-kind'" in job.error


def test_lost_lease_drops_the_outcome(domain, sent):
    job = enqueue_job(domain=domain, kind="test-stolen")
    assert run_job(job.pk) == "lost"
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.lease_owner == "someone-else"
    assert job.result == {}


def _stale(job: Job, *, attempts: int) -> Job:
    past = timezone.now() - timedelta(minutes=10)
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, lease_owner="dead-worker", lease_expires_at=past, heartbeat_at=past,
        started_at=past, attempts=attempts, worker="host:4242",
    )
    job.refresh_from_db()
    return job


def test_reaper_requeues_a_job_whose_worker_died(domain, sent):
    job = _stale(enqueue_job(domain=domain, kind="test-ok"), attempts=1)
    assert reap_stale_jobs() == {"requeued": 1, "failed": 0, "resent": 0}
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.lease_owner == ""
    assert "host:4242 stopped responding" in job.log_tail
    assert sent == [job.pk]
    # The requeued job runs to the end on the next delivery, counting its second attempt.
    assert run_job(job.pk) == Job.Status.SUCCEEDED
    job.refresh_from_db()
    assert job.attempts == 2 and "attempt 2 of 3" in job.log_tail


def test_reaper_fails_a_job_after_max_attempts(domain, sent):
    job = _stale(enqueue_job(domain=domain, kind="test-ok"), attempts=3)
    assert reap_stale_jobs()["failed"] == 1
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "stopped responding" in job.error and "3 time(s) out of 3" in job.error
    assert sent == []


def test_reaper_leaves_live_jobs_alone(domain, sent):
    job = enqueue_job(domain=domain, kind="test-ok")
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, lease_owner="alive", lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    assert reap_stale_jobs() == {"requeued": 0, "failed": 0, "resent": 0}
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.lease_owner == "alive"


def test_reaper_cancels_a_dead_job_that_was_being_cancelled(domain, sent):
    job = _stale(enqueue_job(domain=domain, kind="test-ok"), attempts=1)
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    reap_stale_jobs()
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert sent == []


def test_reaper_resends_queued_jobs_the_broker_lost(domain, sent):
    job = enqueue_job(domain=domain, kind="test-ok")
    Job.objects.filter(pk=job.pk).update(enqueued_at=timezone.now() - timedelta(hours=1))
    assert reap_stale_jobs()["resent"] == 1
    assert sent == [job.pk]
    assert reap_stale_jobs()["resent"] == 0  # not again until the resend window passes


def test_reaper_is_scheduled_every_minute(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="vsm-reap-stale-jobs")
    assert schedule.func == "domains.jobs.reap_stale_jobs"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats < 0


@pytest.mark.django_db(transaction=True)
def test_heartbeat_renews_the_lease_during_a_long_call(domain, sent, settings):
    settings.VSM_JOB_LEASE = 1.5
    job = enqueue_job(domain=domain, kind="test-slow", params={"seconds": 2.2})
    first_deadline = timezone.now() + timedelta(seconds=1.5)
    beats: list = []
    import threading

    def watch():
        from django.db import connection

        try:
            for _ in range(20):
                time.sleep(0.1)
                row = Job.objects.filter(pk=job.pk).values("status", "lease_expires_at").first()
                if row and row["status"] == Job.Status.RUNNING:
                    beats.append(row["lease_expires_at"])
        finally:
            connection.close()  # a thread's connection would keep the test database busy

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert run_job(job.pk) == Job.Status.SUCCEEDED
    watcher.join()
    # Without a heartbeat the lease would have ended ~1.5 s in, while the call ran 2.2 s.
    assert max(beats) > first_deadline


def test_gpu_kinds_go_to_the_gpu_queue_and_the_rest_to_the_main_one(domain, settings):
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    from domains import jobs

    settings.VSM_GPU_QUEUE, settings.VSM_GPU_JOB_KINDS = "vsm-test-gpu", ["train", "evaluate"]
    gpu, main = get_broker("vsm-test-gpu"), get_broker(Conf.CLUSTER_NAME)
    gpu.purge_queue()
    before = main.queue_size()
    train = Job.objects.create(domain=domain, kind="train")
    ingest = Job.objects.create(domain=domain, kind="ingest")
    assert jobs.queue_for("train") == "vsm-test-gpu" and jobs.queue_for("ingest") is None
    jobs._send(train.pk)
    jobs._send(ingest.pk)
    try:
        assert gpu.queue_size() == 1 and main.queue_size() == before + 1
    finally:
        gpu.purge_queue()
    settings.VSM_GPU_QUEUE = ""
    assert jobs.queue_for("train") is None  # no GPU queue: everything on the main one
