"""Serving: generation speed of llama.cpp against transformers on the same model, and a real
server under 20 concurrent chat users, measured in one run.

    python bench/serve.py                  # the embedded Gemma 3 270M (imported once, ~1.5 min)
    python bench/serve.py --tiny           # a 2-layer Gemma with the real tokenizer: a quick check
    python bench/serve.py --users 20 --seconds 60 --tokens 64

Part 1, generation (each backend in its own child process, so neither pays for the other's
threads or OpenMP runtime): the same grounded prompts (English and Chinese passages and
questions, the chat's real prompt), greedy, ``--tokens`` new tokens at most, streamed.
Reported per backend: first-token latency (p50) and decode speed (tokens after the first per
second), tokens counted with the model's own HF tokenizer on both sides; the ratio is
llama.cpp over transformers. llama.cpp reads the q8_0 GGUF that VSM's export writes from the
same weights.

Part 2, load: a fresh data folder and SQLite database, one domain with the sample passages, a
BM25 index, the model as its active version with the GGUF export, and the web server exactly
as ``scripts/quickstart.sh`` starts it (gunicorn, 2 workers x 4 threads). ``--users`` clients
(the official ``openai`` package against ``/v1/chat/completions``, half of the requests
streamed) ask questions in a loop for ``--seconds``. Reported: requests, errors (target 0),
p50/p95 latency, p50/p95 first token of the streamed ones, requests per second.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSAGES = [
    ("manual.md", 12, "Fault E100 (over-current): the output current exceeded 200% of the rated current. Check the "
                      "motor cable for short circuits and lengthen the acceleration time (parameter P0.12)."),
    ("manual.md", 13, "Fault E100.1 (over-current during acceleration): the acceleration time is too short for the "
                      "load. Increase P0.12 to at least 10 s, or reduce the torque boost (P0.15)."),
    ("manual.md", 20, "Fault E200 (over-voltage): the DC bus voltage rose above 820 V while braking. Fit a braking "
                      "resistor or lengthen the deceleration time (P0.13)."),
    ("报销管理办法.pdf", 2, "第三条 报销单据金额在3000元及以上的，需要签订协议。未签订协议的，财务处不予报销。"),
    ("报销管理办法.pdf", 2, "第四条 单笔支出达到10000元及以上的，必须签订合同，并附验收单。"),
    ("报销管理办法.pdf", 5, "第八条 出差人员应当在返回后10个工作日内办理报销手续，逾期不予受理。"),
    ("报销管理办法.pdf", 5, "第九条 住宿费标准为每人每天500元，超出部分由个人承担。"),
]
QUESTIONS = [
    "What does fault E100.1 mean and how do I fix it?",
    "Which parameter sets the acceleration time?",
    "What causes fault E200?",
    "报销单据金额在3000元及以上需要签订什么？",
    "单笔支出达到10000元需要什么？",
    "出差回来多久内要报销？",
    "住宿费标准是多少？",
    "What is the warranty period of the drive?",  # not in the passages
]


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


# --------------------------------------------------------------------------- models


def prepare_models(tiny: bool, work: Path) -> tuple[Path, Path]:
    """(HF model folder, q8_0 GGUF of it)."""
    from training_app.engine.export import export_gguf

    if tiny:
        from tests.training_engine.tiny_gemma import build_gemma_tokenizer, build_tiny_gemma

        model_dir = build_tiny_gemma(work / "tiny-gemma", build_gemma_tokenizer(work / "gemma-tokenizer"))
    else:
        from training_app.engine.base_models import EMBEDDED_GEMMA, resolve_base_model

        print("Importing the embedded Gemma 3 270M (once; cached under var/models/base)…", flush=True)
        model_dir = resolve_base_model(EMBEDDED_GEMMA, ROOT / "var" / "models" / "base")
    gguf = work / "model-q8_0.gguf"
    if not gguf.exists():
        print("Converting it to GGUF q8_0 with llama.cpp's converter…", flush=True)
        export_gguf(Path(model_dir), gguf, outtype="f32" if tiny else "q8_0", quantize=None)
    return Path(model_dir), gguf


def side(backend: str, model: str, tokens: int) -> None:
    """Child process: stream every prompt once (after one warm-up) and print timings as JSON."""
    from inference_app.engine.answering import grounded_messages
    from inference_app.engine.generation import GenerationSettings, load_generator
    from inference_app.engine.index import Passage

    passages = [Passage(id=str(i), text=t, document=d, page=p) for i, (d, p, t) in enumerate(PASSAGES)]
    gen = load_generator(model, backend=backend, device="cpu")
    settings = GenerationSettings.greedy(max_new_tokens=tokens)
    rows = []
    for i, question in enumerate([QUESTIONS[0]] + QUESTIONS):
        picked = passages[:3] if i < 4 else passages[3:]
        messages = grounded_messages(question, picked)
        t0 = time.perf_counter()
        first, pieces = None, []
        for piece in gen.stream(messages, settings):
            if first is None:
                first = time.perf_counter()
            pieces.append(piece)
        end = time.perf_counter()
        if i:  # the first prompt warms up
            rows.append({"first_ms": ((first or end) - t0) * 1000, "seconds": end - (first or end),
                         "text": "".join(pieces)})
    print("RESULT " + json.dumps(rows, ensure_ascii=False))


def run_side(backend: str, model: Path, tokens: int, tokenizer_dir: Path) -> dict:
    from transformers import AutoTokenizer

    proc = subprocess.run([sys.executable, __file__, "--side", backend, "--model", str(model), "--tokens", str(tokens)],
                          capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{backend} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = json.loads(line[len("RESULT "):])
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    decode_rates, totals = [], 0
    for r in rows:
        n = len(tok(r["text"], add_special_tokens=False)["input_ids"])
        totals += n
        if n > 1 and r["seconds"] > 0:
            decode_rates.append((n - 1) / r["seconds"])
    return {"first_ms_p50": percentile([r["first_ms"] for r in rows], 50),
            "decode_tok_s": statistics.median(decode_rates) if decode_rates else None,
            "tokens": totals, "prompts": len(rows)}


# --------------------------------------------------------------------------- load


def setup_site() -> None:
    """Child process (Django configured by the environment): the domain, its index, its model."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from domains.jobs import run_job
    from domains.models import ApiKey, Chunk, Document, Domain, Membership, Role
    from inference_app import services
    from inference_app.models import Deployment, RetrievalIndex
    from training_app.models import ModelExport, ModelVersion

    data_dir = Path(os.environ["VSM_DATA_DIR"])
    owner = get_user_model().objects.create_user("bench", password="bench-password")
    domain = Domain.objects.create(slug="bench", name="Bench", language="en")
    Membership.objects.create(domain=domain, user=owner, role=Role.OWNER)
    docs = {}
    for i, (name, page, text) in enumerate(PASSAGES):
        if name not in docs:
            docs[name] = Document.objects.create(domain=domain, filename=name, content_hash=f"{len(docs):064d}",
                                                 status=Document.Status.READY)
        Chunk.objects.create(domain=domain, document=docs[name], ordinal=i, text=text, length=len(text),
                             page_start=page, page_end=page, content_hash=f"{i:064d}")
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    run_job(services.start_index_build(domain=domain).pk)
    version = ModelVersion.objects.create(domain=domain, number=1, kind="sft", base_model="bench",
                                          base_path=os.environ["BENCH_MODEL"], is_active=True)
    export = ModelExport.objects.create(domain=domain, model_version=version, quantize="", gguf_outtype="q8_0")
    folder = data_dir / "domains" / "bench" / "exports" / str(export.pk)
    folder.mkdir(parents=True)
    target = folder / "bench-v1-q8_0.gguf"
    os.link(os.environ["BENCH_GGUF"], target) if Path(os.environ["BENCH_GGUF"]).stat().st_dev == \
        folder.stat().st_dev else shutil.copy(os.environ["BENCH_GGUF"], target)
    ModelExport.objects.filter(pk=export.pk).update(
        output_path=str(folder.relative_to(data_dir)),
        files={"gguf": {"name": target.name, "path": str(target.relative_to(data_dir)), "bytes": target.stat().st_size,
                        "sha256": ""}})
    Deployment.objects.create(domain=domain, k=3, rate_limit=100000,
                              generation={"max_new_tokens": int(os.environ["BENCH_TOKENS"])})
    _key, secret = ApiKey.issue(domain=domain, name="bench", scope="read", created_by=owner)
    print("KEY " + secret)


def load(model: Path, gguf: Path, users: int, seconds: int, tokens: int, work: Path) -> dict:
    from openai import OpenAI

    site = work / "site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    port = 8765
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "vsm_site.settings", "SECRET_KEY": "bench-" + "x" * 40,
           "VSM_DATA_DIR": str(site), "ALLOWED_HOSTS": "127.0.0.1,localhost", "VSM_SECURE_COOKIES": "0",
           "BENCH_MODEL": str(model), "BENCH_GGUF": str(gguf), "BENCH_TOKENS": str(tokens), "VSM_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.pop("VSM_BROKER", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run([sys.executable, __file__, "--setup"], cwd=ROOT, env=env, capture_output=True, text=True)
    key = next((ln[4:] for ln in out.stdout.splitlines() if ln.startswith("KEY ")), None)
    if key is None:
        raise SystemExit(f"setting up the site failed:\n{out.stderr[-3000:]}")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen([str(gunicorn), "vsm_site.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                               "--threads", "4", "--timeout", "300"], cwd=ROOT, env=env,
                              stdout=open(site / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=600)
        for _ in range(60):
            try:
                client.models.list()
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        for q in QUESTIONS[:4]:  # load the model in both workers
            client.chat.completions.create(model="bench", messages=[{"role": "user", "content": q}])
        latencies, firsts, errors, lock = [], [], [], threading.Lock()
        stop_at = time.monotonic() + seconds

        def user(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < stop_at:
                q = rng.choice(QUESTIONS)
                stream = rng.random() < 0.5
                t0 = time.perf_counter()
                try:
                    if stream:
                        first = None
                        for chunk in client.chat.completions.create(
                                model="bench", messages=[{"role": "user", "content": q}], stream=True):
                            if first is None and chunk.choices and chunk.choices[0].delta.content:
                                first = time.perf_counter() - t0
                        with lock:
                            if first is not None:
                                firsts.append(first)
                    else:
                        done = client.chat.completions.create(model="bench", messages=[{"role": "user", "content": q}])
                        assert done.choices[0].message.content is not None
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001 - counted
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

        started = time.monotonic()
        threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3], "wall_s": wall,
                "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
                "first_p50_s": percentile(firsts, 50), "first_p95_s": percentile(firsts, 95),
                "rps": len(latencies) / wall if wall else None}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--side", choices=["transformers", "llama_cpp"])
    parser.add_argument("--model")
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    if args.side:
        return side(args.side, args.model, args.tokens)
    if args.setup:
        return setup_site()
    work = ROOT / "var" / "bench-serve" / ("tiny" if args.tiny else "gemma")
    work.mkdir(parents=True, exist_ok=True)
    model, gguf = prepare_models(args.tiny, work)
    print(f"\nGeneration: {len(QUESTIONS)} grounded prompts, greedy, at most {args.tokens} new tokens, 2 CPU threads")
    hf = run_side("transformers", model, args.tokens, model)
    ll = run_side("llama_cpp", gguf, args.tokens, model)
    print(f"{'backend':<14}{'first token p50 (ms)':>22}{'decode tok/s (median)':>24}{'tokens':>8}")
    for name, r in (("transformers", hf), ("llama.cpp", ll)):
        print(f"{name:<14}{fmt(r['first_ms_p50']):>22}{fmt(r['decode_tok_s']):>24}{r['tokens']:>8}")
    if hf["decode_tok_s"] and ll["decode_tok_s"]:
        print(f"llama.cpp / transformers: decode {ll['decode_tok_s'] / hf['decode_tok_s']:.2f}x, first token "
              f"{hf['first_ms_p50'] / ll['first_ms_p50']:.2f}x faster")
    if args.skip_load:
        return
    print(f"\nLoad: {args.users} users for {args.seconds} s against gunicorn (2 workers x 4 threads), llama.cpp backend")
    r = load(model, gguf, args.users, args.seconds, args.tokens, work)
    print(f"requests {r['requests']}, errors {r['errors']}, {fmt(r['rps'], 2)} req/s over {fmt(r['wall_s'])} s")
    print(f"latency p50 {fmt(r['p50_s'], 2)} s, p95 {fmt(r['p95_s'], 2)} s; streamed first token p50 "
          f"{fmt(r['first_p50_s'], 2)} s, p95 {fmt(r['first_p95_s'], 2)} s")
    for e in r["first_errors"]:
        print("  error:", e)


if __name__ == "__main__":
    main()
