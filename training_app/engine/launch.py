"""Data-parallel training through ``accelerate launch``: one process per GPU.

``train_data_parallel`` writes the run's inputs beside its outputs, starts
``accelerate launch --multi_gpu --num_processes N -m training_app.engine.launch <out_dir>``,
relays rank 0's progress lines to ``on_progress`` and turns ``should_stop`` into a stop file
that rank 0 reads (every process then stops at the same step, see ``sft.DataParallel``).
The result is read back from ``metrics.json``, so a caller sees the same ``TrainResult`` as
from an in-process ``train``. Checkpoints are the same too: a retried run resumes from them,
in one process or in several.

On a machine without GPUs the processes talk over gloo on the CPU (that is how the tests
run it); with GPUs over NCCL. No Django here.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import TrainConfig

PROGRESS_PREFIX = "VSM-PROGRESS "
INPUTS = "launch"        # folder under out_dir with config.json, rows.jsonl, eval_rows.jsonl
STOP_FILE = "STOP"       # created in that folder when the caller asks the run to stop
LAUNCH_RETRIES = 1       # a failed launch is started once more (fresh port; it resumes from checkpoints)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def wants_data_parallel(config: TrainConfig) -> int:
    """How many processes a run should use: one per GPU when several are present and the config
    lets training pick its device (4-bit QLoRA stays on one GPU); 1 otherwise."""
    n = gpu_count()
    if n > 1 and config.device in ("auto", "cuda") and config.quantization == "none":
        return n
    return 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_data_parallel(config: TrainConfig, rows: Iterable[dict[str, Any]], out_dir: str | os.PathLike, *,
                        num_processes: int, eval_rows: Iterable[dict[str, Any]] = (),
                        on_progress: Callable[[Any], None] | None = None,
                        should_stop: Callable[[], bool] | None = None,
                        timeout: float | None = None):
    """Run ``train`` in ``num_processes`` processes started by ``accelerate launch``."""
    from .sft import TrainResult, check_base_model

    check_base_model(config.base_model)  # fail here, not in N processes
    if num_processes < 2:
        raise ValueError("num_processes: a data-parallel run needs at least 2 processes")
    out = Path(out_dir)
    inputs = out / INPUTS
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / STOP_FILE).unlink(missing_ok=True)
    (inputs / "config.json").write_text(config.to_json(), encoding="utf-8")
    if not _write_jsonl(inputs / "rows.jsonl", rows):
        raise ValueError("no training rows")
    _write_jsonl(inputs / "eval_rows.jsonl", eval_rows)
    (out / "metrics.json").unlink(missing_ok=True)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    stop_requested = False

    def wants_stop() -> bool:
        nonlocal stop_requested
        if should_stop is not None and should_stop():
            stop_requested = True
        return stop_requested

    started = time.monotonic()
    failures: list[str] = []
    for attempt in range(1 + LAUNCH_RETRIES):
        remaining = None if timeout is None else max(1.0, timeout - (time.monotonic() - started))
        code, tail = _launch_once(num_processes, out, env, on_progress, wants_stop, remaining, timeout)
        if code == 0 and (out / "metrics.json").is_file():
            return TrainResult(**json.loads((out / "metrics.json").read_text(encoding="utf-8")))
        failures.append(f"attempt {attempt + 1} (exit {code}):\n" + "\n".join(tail[-40:]))
        if stop_requested:
            break
        # A launch can fail for reasons of the moment (the rendezvous port taken between picking
        # and binding it, a gloo connection reset): start again on a fresh port; the processes
        # resume from the run's checkpoints, so nothing trained is repeated.
    raise RuntimeError(f"data-parallel training over {num_processes} processes failed; "
                       + "\n".join(failures))  # the failing rank's own lines too


def _launch_once(num_processes: int, out: Path, env: dict[str, str], on_progress, wants_stop,
                 remaining: float | None, timeout: float | None) -> tuple[int, list[str]]:
    from .sft import Progress

    inputs = out / INPUTS
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "training_app.engine.launch", str(out)]
    proc = subprocess.Popen(cmd, cwd=str(PROJECT_ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, encoding="utf-8", errors="replace")
    tail: list[str] = []
    # The reader thread only queues progress; the caller's thread runs on_progress (a Job writes
    # to its database connection, which belongs to that thread).
    reports: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith(PROGRESS_PREFIX):
                reports.put(Progress(**json.loads(line[len(PROGRESS_PREFIX):])))
                continue
            tail.append(line.rstrip("\n"))
            del tail[:-40]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    started = time.monotonic()

    def relay() -> None:
        while True:
            try:
                p = reports.get_nowait()
            except queue.Empty:
                return
            if on_progress is not None:
                on_progress(p)

    while proc.poll() is None:
        relay()
        if wants_stop():
            (inputs / STOP_FILE).touch()
        if remaining is not None and time.monotonic() - started > remaining:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"data-parallel training ran past {timeout:.0f}s and was stopped")
        time.sleep(0.2)
    reader.join(timeout=10)
    relay()
    return proc.returncode, tail


def main(argv: list[str] | None = None) -> int:
    """One process of a launched run: ``python -m training_app.engine.launch <out_dir>``."""
    from .sft import train

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training_app.engine.launch <out_dir>", file=sys.stderr)
        return 2
    out = Path(args[0])
    inputs = out / INPUTS
    config = TrainConfig.from_json((inputs / "config.json").read_text(encoding="utf-8"))
    main_rank = int(os.environ.get("RANK", "0") or 0) == 0

    def report(p) -> None:
        from dataclasses import asdict

        print(PROGRESS_PREFIX + json.dumps(asdict(p)), flush=True)

    train(config, _read_jsonl(inputs / "rows.jsonl"), out, eval_rows=_read_jsonl(inputs / "eval_rows.jsonl"),
          on_progress=report if main_rank else None,
          should_stop=(lambda: (inputs / STOP_FILE).exists()) if main_rank else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
