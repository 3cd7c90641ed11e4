"""The sandbox: hangs time out, memory hogs hit the cap, errors and progress cross the boundary."""
from __future__ import annotations

import multiprocessing
import time

import pytest

from domains.engine.errors import CorruptFile, MemoryLimit, ParserCrashed, Timeout
from domains.engine.sandbox import run_isolated

from . import docs


def test_returns_the_childs_result_and_progress():
    seen = []
    result = run_isolated(docs.paged_loader, 5, timeout_s=30, memory_mb=1024, on_progress=lambda d, t: seen.append((d, t)))
    assert result == [1, 2, 3, 4, 5]
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_hanging_parser_times_out_quickly():
    started = time.monotonic()
    with pytest.raises(Timeout, match="longer than 1.5 s"):
        run_isolated(docs.sleepy_loader, 60, timeout_s=1.5, memory_mb=1024)
    assert time.monotonic() - started < 10


def test_stalled_page_hits_the_idle_timeout():
    seen = []
    with pytest.raises(Timeout, match="stalled on page 2"):
        run_isolated(docs.stalling_loader, timeout_s=60, memory_mb=1024, idle_timeout_s=1.0, on_progress=lambda d, t: seen.append(d))
    assert seen == [1]


def test_memory_cap_stops_a_hog():
    with pytest.raises(MemoryLimit, match="512 MB"):
        run_isolated(docs.hungry_loader, 2048, timeout_s=30, memory_mb=512)


def test_the_cap_leaves_room_for_normal_work():
    assert run_isolated(docs.hungry_loader, 64, timeout_s=30, memory_mb=512) == 64 * 1024 * 1024


def test_child_error_keeps_class_message_and_traceback():
    with pytest.raises(CorruptFile, match="page 7 is garbage") as caught:
        run_isolated(docs.failing_loader, timeout_s=30, memory_mb=512)
    assert "failing_loader" in caught.value.detail


def test_native_crash_is_reported():
    with pytest.raises(ParserCrashed, match="crashed"):
        run_isolated(docs.crashing_loader, timeout_s=30, memory_mb=512)


class Cancelled(Exception):
    pass


def test_progress_callback_can_cancel_the_child():
    def cancel(done, total):
        if done == 2:
            raise Cancelled()

    started = time.monotonic()
    with pytest.raises(Cancelled):
        run_isolated(docs.paged_loader, 500, timeout_s=60, memory_mb=512, on_progress=cancel)
    assert time.monotonic() - started < 4  # 500 pages would take 5 s


def test_works_from_a_daemonic_worker(monkeypatch):
    """django-q2 runs its workers as daemonic processes, which multiprocessing forbids to fork."""
    current = multiprocessing.current_process()
    monkeypatch.setitem(current._config, "daemon", True)
    assert run_isolated(docs.paged_loader, 2, timeout_s=30, memory_mb=512) == [1, 2]
    assert current._config["daemon"] is True


def test_fork_server_is_single_threaded_and_preloads_pymupdf():
    """Children fork from the server: it must run no threads (fork safety), and PyMuPDF is
    imported there once, lean, instead of in every child."""
    facts = run_isolated(docs.fork_server_facts, timeout_s=30, memory_mb=1024)
    assert facts == {"server_threads": 1, "pymupdf_preloaded": True, "optional_extras": []}
