"""Running long work as Jobs on django-q2 workers.

The Job row is the truth and the broker only transport (DESIGN.md, "Lessons on
reliability"):

- ``enqueue_job`` writes a QUEUED row and sends its id to the broker when the
  transaction commits.
- ``run_job`` (the django-q2 task) takes the job with a compare-and-swap from QUEUED to
  RUNNING under a lease. A second delivery of the same id finds it taken and returns.
- While the handler runs, a heartbeat thread renews the lease. A worker killed with
  ``kill -9`` stops renewing; ``reap_stale_jobs`` (scheduled every minute) puts the job
  back in the queue, counting attempts itself, and fails it after ``max_attempts``.
- Handlers are registered per kind with ``@job_handler("kind")`` and receive a
  ``JobContext`` for progress, log lines and cancellation checks.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_noop  # messages are stored in English and translated when shown

from domains.models import Domain, Job

logger = logging.getLogger("vsm.jobs")

TASK_PATH = "domains.jobs.run_job"
REAPER_PATH = "domains.jobs.reap_stale_jobs"


class JobError(Exception):
    """A failure whose message is written for the person who started the job."""


class JobCancelled(Exception):
    """Raised inside a handler when a cancel was requested; the job ends as cancelled."""


class LeaseLost(Exception):
    """This worker no longer owns the job (it was reaped or cancelled); stop without writing."""


@dataclass(frozen=True)
class JobKind:
    name: str
    label: Any
    handler: Callable[[JobContext], dict | None]


_REGISTRY: dict[str, JobKind] = {}


def job_handler(kind: str, label: Any = None):
    """Register ``func(ctx) -> dict | None`` as the handler of one job kind."""

    def register(func):
        _REGISTRY[kind] = JobKind(kind, label or kind, func)
        return func

    return register


def kind_label(kind: str):
    entry = _REGISTRY.get(kind)
    return entry.label if entry else kind


def registered_kinds() -> dict[str, JobKind]:
    return dict(_REGISTRY)


def _send(job_id: int) -> None:
    """Hand a job id to the broker (transport only)."""
    from django_q.tasks import async_task

    async_task(TASK_PATH, job_id, task_name=f"job-{job_id}", group="vsm-jobs")


def _dispatch(job_id: int) -> None:
    Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    _send(job_id)


def enqueue_job(*, domain: Domain, kind: str, params: dict | None = None, created_by=None) -> Job:
    """Create a queued Job and hand it to the workers once the surrounding transaction commits."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown job kind {kind!r}")
    job = Job.objects.create(
        domain=domain,
        kind=kind,
        params=params or {},
        created_by=created_by if created_by and created_by.is_authenticated else None,
        max_attempts=settings.VSM_JOB_MAX_ATTEMPTS,
        message=gettext_noop("Waiting for a worker"),
    )
    transaction.on_commit(lambda: _dispatch(job.pk))
    return job


def cancel_job(job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next check."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
        status=Job.Status.CANCELLED, cancel_requested=True, finished_at=now, message=gettext_noop("Cancelled")
    ):
        pass
    else:
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
            cancel_requested=True, message=gettext_noop("Cancelling…")
        )
    job.refresh_from_db()
    return job


def _append_log(tail: str, line: str) -> str:
    lines = (tail + "\n" + line).strip("\n").splitlines()
    return "\n".join(lines[-Job.LOG_TAIL_LINES:])


class JobContext:
    """What a handler sees of its job: parameters, progress, log and cancellation."""

    def __init__(self, job: Job, token: str):
        self.job = job
        self.job_id = job.pk
        self.domain = job.domain
        self.params = dict(job.params)
        self._token = token
        self._lost = threading.Event()
        self._cancel = threading.Event()
        self._log = job.log_tail
        self._last_write = 0.0
        self._partial: dict[str, Any] = dict(job.result or {})

    def _owned(self):
        return Job.objects.filter(pk=self.job_id, lease_owner=self._token, status=Job.Status.RUNNING)

    def _write(self, **fields) -> None:
        now = timezone.now()
        fields.setdefault("heartbeat_at", now)
        fields.setdefault("lease_expires_at", now + timedelta(seconds=settings.VSM_JOB_LEASE))
        if not self._owned().update(**fields):
            self._lost.set()
            raise LeaseLost(f"job {self.job_id} is no longer held by this worker")

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Report progress; writes are throttled, but the first, the last and any message change are kept."""
        import time

        fields: dict[str, Any] = {"progress_done": done}
        if total is not None:
            fields["progress_total"] = total
            if done > total:
                fields["progress_done"] = total
        if message is not None:
            fields["message"] = message[:500]
        now = time.monotonic()
        final = total is not None and done >= total
        if message is None and not final and now - self._last_write < 0.5:
            if self._lost.is_set():
                raise LeaseLost(f"job {self.job_id} is no longer held by this worker")
            if self._cancel.is_set():  # set by the heartbeat; no query on the hot path
                raise JobCancelled()
            return
        self.check_cancelled()
        self._last_write = now
        self._write(**fields)

    def report(self, **data) -> None:
        """Publish partial results while the job runs (counters a person watches, e.g. filter counts)."""
        self._partial.update(data)
        self._write(result=dict(self._partial))

    def log(self, line: str) -> None:
        logger.info("job %s: %s", self.job_id, line)
        self._log = _append_log(self._log, f"{timezone.now():%H:%M:%S} {line}")
        self._write(log_tail=self._log)

    def should_stop(self) -> bool:
        """For engines that poll a callback: True once a cancel was asked for or the job was taken away.

        Cheap enough to call every step: the heartbeat thread watches the database and sets the flags.
        """
        return self._cancel.is_set() or self._lost.is_set()

    def check_cancelled(self) -> None:
        """Raise JobCancelled if someone asked to cancel, LeaseLost if the job was taken away."""
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job_id} is no longer held by this worker")
        if self._cancel.is_set() or Job.objects.filter(pk=self.job_id, cancel_requested=True).exists():
            raise JobCancelled()

    def fail(self, message: str):
        raise JobError(message)


class _Heartbeat(threading.Thread):
    """Renews the lease while a handler runs, even when it is busy in one long call."""

    def __init__(self, ctx: JobContext):
        super().__init__(name=f"job-{ctx.job_id}-heartbeat", daemon=True)
        self.ctx = ctx
        self.stop_event = threading.Event()
        self.interval = max(0.5, settings.VSM_JOB_LEASE / 3)

    def run(self) -> None:
        try:
            while not self.stop_event.wait(self.interval):
                try:
                    now = timezone.now()
                    renewed = self.ctx._owned().update(
                        heartbeat_at=now, lease_expires_at=now + timedelta(seconds=settings.VSM_JOB_LEASE)
                    )
                    if not renewed:
                        self.ctx._lost.set()
                        return
                    if Job.objects.filter(pk=self.ctx.job_id, cancel_requested=True).exists():
                        self.ctx._cancel.set()
                except Exception:  # a database hiccup: try again next beat, the lease has slack
                    logger.exception("heartbeat of job %s failed", self.ctx.job_id)
                    close_old_connections()
        finally:
            connection.close()


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: int) -> str:
    """The django-q2 task: take the job if it is still queued, run its handler, record the outcome."""
    token = uuid.uuid4().hex
    now = timezone.now()
    taken = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED, cancel_requested=False).update(
        status=Job.Status.RUNNING,
        lease_owner=token,
        lease_expires_at=now + timedelta(seconds=settings.VSM_JOB_LEASE),
        heartbeat_at=now,
        started_at=now,
        attempts=F("attempts") + 1,
        worker=_worker_name(),
        error="",
        message=gettext_noop("Running"),
    )
    if not taken:
        logger.info("job %s not taken: it is not queued (duplicate delivery, cancelled or gone)", job_id)
        return "skipped"
    job = Job.objects.select_related("domain").get(pk=job_id)
    kind = _REGISTRY.get(job.kind)
    ctx = JobContext(job, token)
    if kind is None:
        _finish(ctx, Job.Status.FAILED, error=f"No handler is installed for jobs of kind {job.kind!r}.")
        return "failed"
    if job.attempts > 1:
        ctx.log(f"attempt {job.attempts} of {job.max_attempts}")
    beat = _Heartbeat(ctx)
    beat.start()
    try:
        result = kind.handler(ctx)
    except LeaseLost:
        logger.warning("job %s: lease lost, leaving the row to its new owner", job_id)
        return "lost"
    except JobCancelled:
        return _finish(ctx, Job.Status.CANCELLED, message=gettext_noop("Cancelled"))
    except JobError as exc:
        return _finish(ctx, Job.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("job %s crashed", job_id)
        ctx._log = _append_log(ctx._log, traceback.format_exc(limit=8))
        return _finish(ctx, Job.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
    finally:
        beat.stop_event.set()
        beat.join(timeout=5)
    return _finish(ctx, Job.Status.SUCCEEDED, result=result or {}, message=gettext_noop("Done"))


def _finish(ctx: JobContext, status: str, *, error: str = "", result: dict | None = None, message: str = "") -> str:
    fields: dict[str, Any] = {
        "status": status,
        "finished_at": timezone.now(),
        "lease_expires_at": None,
        "log_tail": ctx._log,
    }
    if error:
        fields["error"] = error
        fields["message"] = gettext_noop("Failed")
        fields["log_tail"] = _append_log(ctx._log, f"error: {error}")
    if message:
        fields["message"] = message
    if result is not None:
        fields["result"] = result
    if status == Job.Status.SUCCEEDED:
        fields["progress_done"] = F("progress_total")
    if not ctx._owned().update(**fields):
        logger.warning("job %s finished as %s but its lease was lost; outcome dropped", ctx.job_id, status)
        return "lost"
    return status


def reap_stale_jobs(now=None) -> dict[str, int]:
    """Requeue running jobs whose worker stopped heart-beating; fail them after max_attempts.

    Also re-sends queued jobs that no worker picked up for a lease period (a Redis broker
    loses an in-flight message when a worker dies). Safe to run from several places at once:
    every change is a compare-and-swap.
    """
    now = now or timezone.now()
    requeued = failed = resent = 0
    for job in Job.objects.stale(now):
        if job.cancel_requested:
            if Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_owner=job.lease_owner).update(
                status=Job.Status.CANCELLED, finished_at=now, lease_expires_at=None, message=gettext_noop("Cancelled")
            ):
                failed += 1
            continue
        silent = int((now - (job.heartbeat_at or job.started_at or now)).total_seconds())
        if job.attempts >= job.max_attempts:
            error = (
                f"The worker running this job ({job.worker}) stopped responding (no heartbeat for {silent}s), "
                f"{job.attempts} time(s) out of {job.max_attempts}. Check the worker logs; the job can be started again."
            )
            if Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_owner=job.lease_owner).update(
                status=Job.Status.FAILED, finished_at=now, lease_expires_at=None, error=error,
                message=gettext_noop("Failed"), log_tail=_append_log(job.log_tail, f"error: {error}"),
            ):
                failed += 1
                logger.error("job %s failed: %s", job.pk, error)
            continue
        note = f"{now:%H:%M:%S} worker {job.worker} stopped responding (no heartbeat for {silent}s); requeued"
        if Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_owner=job.lease_owner).update(
            status=Job.Status.QUEUED, lease_owner="", lease_expires_at=None,
            message=gettext_noop("Requeued after the worker stopped responding"),
            log_tail=_append_log(job.log_tail, note),
        ):
            requeued += 1
            logger.warning("job %s requeued: %s", job.pk, note)
            _dispatch(job.pk)
    lost_before = now - timedelta(seconds=max(600, 10 * settings.VSM_JOB_LEASE))
    for job_id in Job.objects.filter(status=Job.Status.QUEUED, enqueued_at__lt=lost_before).values_list(
        "pk", flat=True
    ):
        # Harmless if the first message still arrives: only one delivery can take the job.
        resent += 1
        _dispatch(job_id)
    return {"requeued": requeued, "failed": failed, "resent": resent}


def ensure_schedule() -> None:
    """Install the every-minute reaper in django-q2's scheduler (idempotent)."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="vsm-reap-stale-jobs",
        defaults={"func": REAPER_PATH, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )
