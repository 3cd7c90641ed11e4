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

import errno
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
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import F, Q
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


def queue_for(kind: str) -> str | None:
    """The django-q2 queue of a job kind: VSM_GPU_QUEUE for the GPU kinds when set, else the main one."""
    if settings.VSM_GPU_QUEUE and kind in settings.VSM_GPU_JOB_KINDS:
        return settings.VSM_GPU_QUEUE
    return None


def _send(job_id: int) -> None:
    """Hand a job id to the broker (transport only), on the queue of its kind."""
    from django_q.tasks import async_task

    kind = Job.objects.filter(pk=job_id).values_list("kind", flat=True).first() or ""
    queue = queue_for(kind)
    async_task(TASK_PATH, job_id, task_name=f"job-{job_id}", group="vsm-jobs", **({"cluster": queue} if queue else {}))


def _dispatch(job_id: int) -> None:
    """Send the id; when the broker is down (Redis restarting), keep the job queued, unsent: the
    reaper sends it again within a minute. Never an error for whoever queued the job."""
    Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    try:
        _send(job_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure: the row is the truth, sending is retried
        logger.warning("job %s could not be handed to the broker (%s: %s); it will be sent again",
                       job_id, type(exc).__name__, exc)
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            enqueued_at=None, message=gettext_noop("Waiting for the job queue"))


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


def restart_job(job: Job, *, by=None) -> Job:
    """Queue a failed or cancelled job again. Its handler continues from what the job finished before
    (every handler checkpoints), so this is "resume", not "start over"."""
    updated = Job.objects.filter(pk=job.pk, status__in=[Job.Status.FAILED, Job.Status.CANCELLED]).update(
        status=Job.Status.QUEUED, cancel_requested=False, attempts=0, error="", finished_at=None,
        lease_owner="", lease_expires_at=None, message=gettext_noop("Waiting for a worker"),
        log_tail=_append_log(job.log_tail, f"{timezone.now():%H:%M:%S} started again"
                                           + (f" by {by}" if by is not None and by.is_authenticated else "")),
    )
    if updated:
        transaction.on_commit(lambda: _dispatch(job.pk))
    job.refresh_from_db()
    return job


def cancel_job(job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next check. A job that runs
    another one inside it (the pipeline) names it in ``result["child_job"]``; that one is cancelled too."""
    child = (job.result or {}).get("child_job")
    if child and child != job.pk:
        found = Job.objects.filter(pk=child, domain_id=job.domain_id).first()
        if found is not None and not found.is_finished:
            cancel_job(found)
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
    except (OperationalError, InterfaceError) as exc:  # the database went away: transient
        return _retry_after_database_error(ctx, job, exc)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return _crashed(ctx, job_id, exc)
        where = exc.filename or settings.VSM_DATA_DIR
        return _finish(ctx, Job.Status.FAILED, error=(
            f"The disk is full (writing {where}). Free space on the disk that holds VSM_DATA_DIR (or move it) "
            "and start the job again: what it finished before is kept."))
    except Exception as exc:
        return _crashed(ctx, job_id, exc)
    finally:
        beat.stop_event.set()
        beat.join(timeout=5)
    return _finish(ctx, Job.Status.SUCCEEDED, result=result or {}, message=gettext_noop("Done"))


def _crashed(ctx: JobContext, job_id: int, exc: Exception) -> str:
    logger.exception("job %s crashed", job_id)
    ctx._log = _append_log(ctx._log, traceback.format_exc(limit=8))
    return _finish(ctx, Job.Status.FAILED, error=f"{type(exc).__name__}: {exc}")


def _retry_after_database_error(ctx: JobContext, job: Job, exc: Exception, waits=(1, 2, 4, 8, 15, 30)) -> str:
    """The database went away mid-job (a restart, a failover). Wait for it, then put the job back in
    the queue (its finished work is kept; the retry continues), or fail it after max_attempts. If the
    database stays away, the row stays RUNNING and the reaper requeues it when the lease expires."""
    import time

    logger.warning("job %s: database error, will retry: %s", job.pk, exc)
    for wait in (0, *waits):
        time.sleep(wait)
        try:
            if not connection.in_atomic_block:  # a worker's own connection: drop the broken one
                connection.close()
            if job.attempts >= job.max_attempts:
                return _finish(ctx, Job.Status.FAILED, error=(
                    f"The database was unavailable ({type(exc).__name__}: {exc}) on each of {job.attempts} "
                    "attempt(s). Check the database server; the job can be started again."))
            if Job.objects.filter(pk=job.pk, cancel_requested=True).exists():  # nobody would take it again
                return _finish(ctx, Job.Status.CANCELLED, message=gettext_noop("Cancelled"))
            note = f"{timezone.now():%H:%M:%S} database error ({type(exc).__name__}); requeued"
            if Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_owner=ctx._token).update(
                status=Job.Status.QUEUED, lease_owner="", lease_expires_at=None,
                message=gettext_noop("Requeued after a database error"), log_tail=_append_log(ctx._log, note),
            ):
                _dispatch(job.pk)
            return "requeued"
        except (OperationalError, InterfaceError):
            continue
    return "database unavailable"


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
    unsent = Q(enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=5))  # the broker was down
    for job_id in Job.objects.filter(Q(enqueued_at__lt=lost_before) | unsent, status=Job.Status.QUEUED).values_list(
        "pk", flat=True
    ):
        # Harmless if the first message still arrives: only one delivery can take the job.
        resent += 1
        _dispatch(job_id)
    return {"requeued": requeued, "failed": failed, "resent": resent}


def ensure_schedule() -> None:
    """Install the every-minute reaper and the five-minute alert checks in django-q2's scheduler (idempotent)."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="vsm-reap-stale-jobs",
        defaults={"func": REAPER_PATH, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )
    # Drift and error-rate alerts (inference_app.monitoring), every five minutes.
    Schedule.objects.update_or_create(
        name="vsm-alerts",
        defaults={"func": "inference_app.monitoring.run_alert_checks", "schedule_type": Schedule.MINUTES,
                  "minutes": 5, "repeats": -1},
    )
