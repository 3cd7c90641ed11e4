"""Load: API clients and reviewing experts against the web server while a training job runs.

    python bench/load.py                          # 50 API clients + 5 experts for 120 s, LoRA SFT of the embedded Gemma
    python bench/load.py --clients 10 --seconds 30 --tiny   # a quick check (a 2-layer Gemma trains instead)

The site is fresh (SQLite and the ORM broker under ``var/bench-load``), served as
``scripts/quickstart.sh`` serves it: gunicorn with 2 workers x 4 threads and one ``qcluster``
worker. One domain holds sample passages, a BM25 index, a frozen dataset version and 600
pending QA pairs.

1. Baseline: one API client alone for ``--baseline`` seconds, no job running.
2. Load: a LoRA SFT run is started through the API; then ``--clients`` API clients (a read key:
   job, document and pair lists, hit testing, extractive answers) and ``--experts`` experts
   (user tokens: the review queue, then approving pairs with their version, so two experts on
   one pair get a 409 conflict, which counts as a correct answer, not an error) work for
   ``--seconds``.
3. The training job must still finish; its time is reported.

Printed: requests, errors (target 0), p50/p95 latency per kind of client, p95 under load over
p95 alone (the ratio), and the training job's status and duration.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve import PASSAGES, QUESTIONS, fmt, percentile  # noqa: E402

PORT = 8766
N_PAIRS = 600
EXPERTS = 5


def setup_site(tiny_model: str) -> None:
    """Child process (Django configured by the environment)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from datasets_app.models import QADataset, QAPair
    from datasets_app.versions import freeze_dataset
    from domains.jobs import run_job
    from domains.models import ApiKey, Chunk, Document, Domain, Membership, Role
    from inference_app import services
    from inference_app.models import Deployment, RetrievalIndex

    users = get_user_model()
    owner = users.objects.create_user("owner", password="bench-password")
    domain = Domain.objects.create(slug="bench", name="Bench", language="en")
    Membership.objects.create(domain=domain, user=owner, role=Role.OWNER)
    for i in range(EXPERTS):
        expert = users.objects.create_user(f"expert{i}", password="bench-password")
        Membership.objects.create(domain=domain, user=expert, role=Role.EXPERT)
    document = Document.objects.create(domain=domain, filename="manual.md", content_hash="0" * 64,
                                       status=Document.Status.READY)
    chunks = [Chunk.objects.create(domain=domain, document=document, ordinal=i, text=text, length=len(text),
                                   page_start=page, page_end=page, content_hash=f"{i:064d}")
              for i, (_name, page, text) in enumerate(PASSAGES)]
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    run_job(services.start_index_build(domain=domain).pk)
    Deployment.objects.create(domain=domain, mode="extractive", rate_limit=1_000_000)
    dataset = QADataset.default_for(domain)
    for i, chunk in enumerate(chunks * 3):  # approved: what the run trains on
        QAPair.objects.create(domain=domain, dataset=dataset, question=f"{QUESTIONS[i % len(QUESTIONS)]} ({i})",
                              answer=chunk.text[:120], chunk=chunk, status=QAPair.Status.APPROVED,
                              reviewed_by=owner, origin_key=f"train-{i}")
    version = freeze_dataset(dataset=dataset, by=owner).version
    QAPair.objects.bulk_create([
        QAPair(domain=domain, dataset=dataset, question=f"Pending question {i}?", answer=f"Pending answer {i}.",
               chunk=chunks[i % len(chunks)], origin_key=f"pending-{i}") for i in range(N_PAIRS)])
    _key, secret = ApiKey.issue(domain=domain, name="load", scope="read", created_by=owner)
    print("SETUP " + json.dumps({"key": secret, "version": version.pk, "model": tiny_model}))


class Client:
    """A tiny JSON client on urllib (one per thread); every call is timed and checked."""

    def __init__(self, auth: str):
        self.auth = auth

    def call(self, method: str, path: str, body: dict | None = None, ok=(200,)) -> tuple[int, dict | None, float]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=data, method=method,
                                     headers={"Authorization": self.auth, "Content-Type": "application/json"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        elapsed = time.perf_counter() - t0
        if status not in ok:
            raise RuntimeError(f"{method} {path} → {status}: {raw[:200]!r}")
        try:
            return status, json.loads(raw or b"null"), elapsed
        except ValueError:
            return status, None, elapsed


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.conflicts = 0

    def ok(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def api_client(key: str, stop_at: float, tally: Tally, seed: int) -> None:
    client, rng = Client(f"Bearer {key}"), random.Random(seed)
    calls = [
        ("GET", "/api/domains/bench/jobs/?limit=20", None),
        ("GET", "/api/domains/bench/documents/", None),
        ("GET", "/api/domains/bench/pairs/?limit=20", None),
        ("GET", "/api/domains/bench/retrieval/search/?q=E100.1+over-current&k=5", None),
    ]
    while time.monotonic() < stop_at:
        if rng.random() < 0.4:
            method, path, body = "POST", "/api/domains/bench/ask/", {"question": rng.choice(QUESTIONS)}
        else:
            method, path, body = rng.choice(calls)
        try:
            _s, _b, seconds = client.call(method, path, body)
            tally.ok("api", seconds)
        except Exception as exc:  # noqa: BLE001 - counted
            tally.error(f"api: {exc}")


def expert(token: str, stop_at: float, tally: Tally, seed: int) -> None:
    client, rng = Client(f"Token {token}"), random.Random(seed)
    while time.monotonic() < stop_at:
        try:
            _s, page, seconds = client.call("GET", "/api/domains/bench/pairs/?status=pending&limit=10")
            tally.ok("review", seconds)
            rows = (page or {}).get("results") or []
            if not rows:
                continue
            pair = rng.choice(rows)
            status, _b, seconds = client.call("POST", f"/api/domains/bench/pairs/{pair['id']}/review/",
                                              {"action": "approve", "version": pair["version"]}, ok=(200, 409))
            tally.ok("review", seconds)
            if status == 409:
                with tally.lock:
                    tally.conflicts += 1
        except Exception as exc:  # noqa: BLE001 - counted
            tally.error(f"expert: {exc}")


def run_clients(key, tokens, clients, experts, seconds) -> tuple[Tally, float]:
    tally, stop_at = Tally(), time.monotonic() + seconds
    threads = [threading.Thread(target=api_client, args=(key, stop_at, tally, i)) for i in range(clients)]
    threads += [threading.Thread(target=expert, args=(tokens[i % len(tokens)], stop_at, tally, 1000 + i))
                for i in range(experts)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--experts", type=int, default=EXPERTS)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--baseline", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="train a 2-layer Gemma instead of the embedded 270M")
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    if args.setup:
        return setup_site(args.model)

    site = ROOT / "var" / "bench-load"
    shutil.rmtree(site, ignore_errors=True)
    (site / "models").mkdir(parents=True)
    base = ROOT / "var" / "models" / "base"
    if base.is_dir():  # the embedded model imported once by the app or bench/serve.py: not again
        os.symlink(base, site / "models" / "base")
    model = "embedded:gemma3-270m"
    if args.tiny:
        from tests.training_engine.tiny_gemma import build_gemma_tokenizer, build_tiny_gemma

        work = ROOT / "var" / "bench-serve" / "tiny"
        model = str(build_tiny_gemma(work / "tiny-gemma", build_gemma_tokenizer(work / "gemma-tokenizer")))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "vsm_site.settings", "SECRET_KEY": "bench-" + "y" * 40,
           "VSM_DATA_DIR": str(site), "ALLOWED_HOSTS": "127.0.0.1,localhost", "VSM_SECURE_COOKIES": "0",
           "VSM_LOG_LEVEL": "WARNING", "VSM_WORKERS": "1", "VSM_API_RATE": "1000000/minute"}
    for name in ("DATABASE_URL", "VSM_BROKER", "VSM_CACHE"):
        env.pop(name, None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run([sys.executable, __file__, "--setup", "--model", model], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SETUP ")), None)
    if line is None:
        raise SystemExit(f"setting up the site failed:\n{out.stderr[-3000:]}")
    setup = json.loads(line[len("SETUP "):])
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen([str(gunicorn), "vsm_site.wsgi", "--bind", f"127.0.0.1:{PORT}", "--workers", "2",
                               "--threads", "4", "--timeout", "300"], cwd=ROOT, env=env,
                              stdout=open(site / "server.log", "w"), stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                              stdout=open(site / "worker.log", "w"), stderr=subprocess.STDOUT)
    try:
        anon = Client("")
        for _ in range(60):
            try:
                anon.call("GET", "/api/schema/")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        tokens = [anon.call("POST", "/api/auth/token/", {"username": f"expert{i}", "password": "bench-password"}
                            )[1]["token"] for i in range(min(args.experts, EXPERTS))]
        print(f"Baseline: 1 API client alone for {args.baseline} s")
        alone, _ = run_clients(setup["key"], tokens, 1, 0, args.baseline)
        owner = anon.call("POST", "/api/auth/token/", {"username": "owner", "password": "bench-password"})[1]["token"]
        overrides = {"epochs": 1, "batch_size": 2, "grad_accum": 1, "max_length": 128}
        _s, run, _t = Client(f"Token {owner}").call("POST", "/api/domains/bench/runs/", {
            "dataset_version": setup["version"], "kind": "sft", "base_model": setup["model"],
            "overrides": overrides}, ok=(201,))
        job_id, job_started = run["job"]["id"] if isinstance(run.get("job"), dict) else run["job"], time.monotonic()
        print(f"Load: {args.clients} API clients + {args.experts} experts for {args.seconds} s while training "
              f"run {run['id']} ({setup['model']}, job {job_id}) runs")
        tally, wall = run_clients(setup["key"], tokens, args.clients, args.experts, args.seconds)
        status = None
        for _ in range(3600):
            status = Client(f"Token {owner}").call("GET", f"/api/domains/bench/jobs/{job_id}/")[1]
            if status["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(2)
        job_seconds = time.monotonic() - job_started
    finally:
        for proc in (server, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (server, worker):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    base95 = percentile(alone.latencies.get("api", []), 95)
    requests = sum(len(v) for v in tally.latencies.values())
    print(f"\nrequests {requests} in {fmt(wall)} s ({fmt(requests / wall, 1)}/s), errors {len(tally.errors)}, "
          f"review conflicts answered 409: {tally.conflicts}")
    for kind, values in sorted(tally.latencies.items()):
        print(f"  {kind:<7} n={len(values):<6} p50 {fmt(percentile(values, 50) * 1000, 0)} ms   "
              f"p95 {fmt(percentile(values, 95) * 1000, 0)} ms")
    under = percentile(tally.latencies.get("api", []), 95)
    if base95 and under:
        print(f"API p95 alone {fmt(base95 * 1000, 0)} ms, under load {fmt(under * 1000, 0)} ms: {under / base95:.1f}x")
    print(f"training job: {status['status'] if status else '?'} after {fmt(job_seconds)} s"
          + (f" ({status.get('error')})" if status and status.get("error") else ""))
    for e in tally.errors[:5]:
        print("  error:", e)


if __name__ == "__main__":
    main()
