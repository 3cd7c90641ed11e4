"""Run a parser on a hostile file in a child process with a wall-clock and memory limit.

PyMuPDF's extraction and rendering have hung for hours and allocated without bound on
crafted PDFs; a worker must survive that. The child is started with the ``forkserver``
context (a clean single-threaded server forks it; forking the worker itself, which may hold
threads and a database connection, is unsafe). The child reports progress and its result
through a pipe that the parent reads while it waits, so per-page progress reaches the job
even though parsing happens elsewhere.

Protocol on the pipe (child → parent): ``("progress", done, total)``, then exactly one of
``("ok", result)`` or ``("error", class_name, message, traceback_text)``.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from .errors import ERRORS, LoadError, MemoryLimit, ParserCrashed, Timeout

ProgressFn = Callable[[int, int], None]

_IN_CHILD = False
_MEMORY_HINTS = ("out of memory", "bad_alloc", "failed to allocate", "cannot allocate memory", "malloc")


def in_child() -> bool:
    """True inside a sandbox child (loaders skip process-wide caches that would not survive)."""
    return _IN_CHILD


class _PipeProgress:
    """``on_page`` inside the child: forwards (done, total) to the parent."""

    def __init__(self, conn) -> None:
        self._conn = conn

    def __call__(self, done: int, total: int) -> None:
        self._conn.send(("progress", int(done), int(total)))


def _set_limits(memory_mb: int | None, cpu_s: int | None) -> None:
    if memory_mb:
        limit = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_s:
        # Backstop for an orphaned child: the parent's wall clock is the real limit.
        soft = int(cpu_s)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))


def _die_with_parent() -> None:
    """Ask Linux to kill this child when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except Exception:
        pass


def _classify(exc: BaseException) -> tuple[str, str]:
    """Class name and message to send for an exception raised in the child."""
    if isinstance(exc, LoadError):
        return type(exc).__name__, exc.message
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or any(h in str(exc).lower() for h in _MEMORY_HINTS):
        return "MemoryLimit", ""
    return "LoadError", f"The parser failed on this file ({text})."


def _child_main(conn, func, args, kwargs, memory_mb, cpu_s, progress) -> None:
    global _IN_CHILD
    _IN_CHILD = True
    _die_with_parent()
    _set_limits(memory_mb, cpu_s)
    try:
        if progress:
            kwargs = dict(kwargs, on_page=_PipeProgress(conn))
        result = func(*args, **kwargs)
        try:
            conn.send(("ok", result))
        except Exception as exc:  # an unpicklable result, or no memory to pickle it
            name, message = _classify(exc)
            conn.send(("error", name, message, traceback.format_exc()))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
        name, message = _classify(exc)
        try:
            conn.send(("error", name, message, traceback.format_exc()))
        except Exception:
            pass
    finally:
        conn.close()


# Modules the fork server imports once before forking children (thread-free imports only).
PRELOAD = ("domains.engine.preload",)
_preload_set = False


def _set_preload(ctx) -> None:
    """Ask the fork server to preload PyMuPDF; no effect if it already runs (children then import it)."""
    global _preload_set
    _preload_set = True
    try:
        ctx.set_forkserver_preload(list(PRELOAD))
    except Exception:
        pass


def _start(proc) -> None:
    """Start ``proc`` even from a daemonic process (django-q2 runs its workers daemonic).

    multiprocessing refuses children of daemonic processes so that they cannot outlive the
    daemon. Our child cannot: the parent always joins or kills it, it is killed when its
    parent dies (PDEATHSIG), and RLIMIT_CPU ends it regardless.
    """
    current = multiprocessing.current_process()
    config = getattr(current, "_config", {})
    was_daemon = bool(config.get("daemon"))
    if was_daemon:
        config["daemon"] = False
    try:
        proc.start()
    finally:
        if was_daemon:
            config["daemon"] = True


def run_isolated(
    func: Callable[..., Any],
    *args: Any,
    timeout_s: float,
    memory_mb: int | None,
    idle_timeout_s: float | None = None,
    on_progress: ProgressFn | None = None,
    **kwargs: Any,
) -> Any:
    """Call ``func(*args, **kwargs)`` in a child process and return its result.

    ``func`` must be importable by name (a module-level function). With ``on_progress``
    the child calls ``func(..., on_page=...)`` and each call reaches ``on_progress`` in this
    process; an exception raised by ``on_progress`` (a cancelled job) stops the child and
    propagates. ``idle_timeout_s``: fail when no progress arrived for that long (a stuck
    page), besides the overall ``timeout_s``. Raises Timeout, MemoryLimit, ParserCrashed, or
    the LoadError the child raised (same class, same message; its traceback in ``detail``).
    """
    ctx = multiprocessing.get_context("forkserver")
    if not _preload_set:
        _set_preload(ctx)
    reader, writer = ctx.Pipe(duplex=False)
    cpu_s = int(timeout_s * max(os.cpu_count() or 1, 1) + 30)
    proc = ctx.Process(
        target=_child_main,
        args=(writer, func, args, kwargs, memory_mb, cpu_s, on_progress is not None),
        name="vsm-sandbox",
        daemon=True,
    )
    start = time.monotonic()
    _start(proc)
    writer.close()
    deadline = start + timeout_s
    last_progress = start
    done = 0
    try:
        while True:
            now = time.monotonic()
            limit = deadline
            if idle_timeout_s:
                limit = min(limit, last_progress + idle_timeout_s)
            if now >= limit:
                if now >= deadline:
                    raise Timeout(
                        f"Reading this file took longer than {timeout_s:g} s and was stopped. "
                        "It may be crafted to hang parsers; if it is a very long scan, raise the time limit."
                    )
                raise Timeout(
                    f"Reading stalled on page {done + 1}: nothing finished for {idle_timeout_s:g} s, "
                    "so it was stopped. The file may be damaged or crafted to hang parsers."
                )
            if not reader.poll(min(limit - now, 0.5)):
                continue
            try:
                message = reader.recv()
            except EOFError:
                break  # the child died without a word
            if message[0] == "progress":
                done = message[1]
                last_progress = time.monotonic()
                if on_progress is not None:
                    on_progress(message[1], message[2])
            elif message[0] == "ok":
                return message[1]
            elif message[0] == "error":
                _, name, text, trace = message
                if name == "MemoryLimit":
                    raise MemoryLimit(
                        f"Reading this file needed more than the {memory_mb} MB memory limit and was "
                        "stopped. The file may be crafted to exhaust memory.",
                        detail=trace,
                    )
                raise ERRORS.get(name, LoadError)(text, detail=trace)
        proc.join(5)
        code = proc.exitcode
        if code is not None and code < 0 and -code in (signal.SIGXCPU,):
            raise Timeout("Reading this file used up its CPU time limit and was stopped.")
        if code is not None and code < 0 and -code == signal.SIGKILL:
            raise MemoryLimit(
                "The process reading this file was killed (usually for using too much memory)."
            )
        raise ParserCrashed(
            f"The parser crashed on this file (exit code {code}). The file is probably damaged "
            "or crafted to crash parsers."
        )
    finally:
        reader.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        try:
            proc.close()
        except ValueError:
            pass
