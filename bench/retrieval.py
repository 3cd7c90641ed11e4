"""VSM's retrieval index (``inference_app.engine.index``): speed against rank-bm25 measured in
the same run, and quality on CMRC 2018 (BM25, dense base, dense fine-tuned, hybrid).

    python bench/retrieval.py                 # 10k and 100k chunks, full CMRC trial set
    python bench/retrieval.py --quick         # 2k chunks, 64 CMRC passages, a short fine-tune
    python bench/retrieval.py --sections latency --sizes 10000

Speed (``latency``)
  * Corpus: synthetic chunks of 3-7 sentences drawn (seeded) from the CMRC trial passages, so
    the text is realistic Chinese (~220 characters, ~100 jieba tokens a chunk). Every sentence
    is tokenised once with ``textproc.tokenize`` and a chunk's tokens are its sentences'
    tokens: what jieba costs is measured separately, on real chunks (``tokenize`` row).
  * Queries: CMRC questions, tokenised at query time by every method (the same tokenizer).
  * Baseline: ``rank_bm25.BM25Okapi`` over the same tokens (``get_scores`` + top 10), the
    library most RAG tutorials reach for.
  * VSM: ``RetrievalIndex.bm25`` (bm25s sparse matrix, memory-mapped), ``dense_vec`` (numpy
    matrix-vector product over the memory-mapped (N, 384) normalised matrix, with einsum), and
    ``hybrid`` (BM25 top 100 + dense top 100 + weighted RRF). For reference, the same dense
    product through BLAS (``E @ q``, OpenBLAS threads) is timed too: on a busy 2-core machine
    its thread start-up dominates, which is why the engine uses einsum. Dense vectors are random normalised 384-dim vectors: embedding 10k-100k
    chunks with MiniLM on 2 cores would take hours, and a matmul's speed does not depend on
    the values. The index is written by ``build_index`` and loaded from disk as in serving.
  * Per query, every method runs back to back (interleaved), so drift hits all alike;
    p50 / p95 in milliseconds and the speed ratio against rank-bm25's p50.
  * Build: passages/s for bm25s indexing (VSM), BM25Okapi (baseline), jieba tokenisation,
    the whole ``build_index`` (BM25 + vectors + files), and (``embed``) embedding chunks with
    the embedded all-MiniLM-L6-v2.

Quality (``quality``), CMRC 2018 trial: the 256 passages are the corpus, questions are
queries, the annotated passage the positive. Passages are split in two halves by a seeded
hash: the fine-tune learns from the questions of half A (80% of them by a second seeded
hash; the other 20% of A's questions choose the fusion weights) and every row is measured on
half B's questions, retrieving from the whole corpus. Rows: BM25; dense with the embedded
MiniLM (base); naive hybrid (equal weights) and hybrid with ``choose_fusion`` weights; the same
for the fine-tuned model. hit@1, hit@5, MRR@10 and the MRR ratio against BM25.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CMRC = "/work/shared/benchmarks/cmrc2018_trial.json"


# --------------------------------------------------------------------------- data


def load_cmrc(path: str, limit: int | None = None):
    from inference_app.engine.index import Passage

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if limit:
        data = data[:limit]
    passages = [Passage(c["context_id"], c["context_text"], c.get("title", "")) for c in data]
    questions = [(q["query_id"], q["query_text"].strip(), c["context_id"]) for c in data for q in c["qas"]
                 if q["query_text"].strip()]  # the trial split holds one empty question
    return passages, questions


def seeded_half(key: str, seed: int, share: float = 0.5) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    return (h % 10_000) < share * 10_000


def synthetic_corpus(passages, n: int, seed: int = 0):
    """``n`` chunks of 3-7 CMRC sentences each, with their tokens (per-sentence tokens joined)."""
    from inference_app.engine.textproc import tokenize

    sents = [s for p in passages for s in re.split(r"(?<=[。！？])", p.text) if len(s.strip()) >= 5]
    sent_tokens = [tokenize(s) for s in sents]
    rng = random.Random(seed)
    texts, tokens = [], []
    for _ in range(n):
        picks = [rng.randrange(len(sents)) for _ in range(rng.randint(3, 7))]
        texts.append("".join(sents[i] for i in picks))
        tokens.append([t for i in picks for t in sent_tokens[i]])
    return texts, tokens


class RandomVectors:
    """An Encoder with seeded random normalised vectors (latency only: values don't matter)."""

    model_id = "bench:random-384"
    dim = 384

    def __init__(self, seed: int = 0):
        import numpy as np

        self.rng = np.random.default_rng(seed)

    def encode(self, texts, batch_size: int = 32):
        import numpy as np

        m = self.rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def table(headers, rows, title=""):
    if title:
        print(f"\n{title}")
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


# --------------------------------------------------------------------------- speed


def bench_latency(passages, questions, sizes, n_queries, workdir: Path, seed: int):
    import numpy as np
    from rank_bm25 import BM25Okapi

    from inference_app.engine.fusion import FusionWeights
    from inference_app.engine.index import BM25Core, Passage, RetrievalIndex, build_index
    from inference_app.engine.textproc import tokenize

    rng = random.Random(seed)
    queries = [q for _, q, _ in rng.sample(questions, min(n_queries, len(questions)))]

    # jieba on real chunks (the synthetic corpus reuses per-sentence tokens)
    sample, _ = synthetic_corpus(passages, 1000, seed + 1)
    tokenize("预热")
    t0 = time.perf_counter()
    for t in sample:
        tokenize(t)
    tok_rate = len(sample) / (time.perf_counter() - t0)

    build_rows = [("tokenize (jieba, textproc)", "1,000", f"{tok_rate:,.0f}", "")]
    lat_rows = []
    for n in sizes:
        texts, toks = synthetic_corpus(passages, n, seed)
        ps = [Passage(f"s{i}", t) for i, t in enumerate(texts)]

        t0 = time.perf_counter()
        BM25Core.build(texts, tokens=toks)
        t_bm25s = time.perf_counter() - t0
        gc.collect()
        t0 = time.perf_counter()
        okapi = BM25Okapi(toks)
        t_okapi = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_index(ps, workdir / f"idx{n}", encoder=RandomVectors(seed), tokens=toks, batch_size=1024)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        ix = RetrievalIndex.load(workdir / f"idx{n}")
        t_load = time.perf_counter() - t0
        build_rows += [
            (f"rank-bm25 BM25Okapi (baseline), {n:,}", f"{n:,}", f"{n / t_okapi:,.0f}", "1.00"),
            (f"VSM bm25s index, {n:,}", f"{n:,}", f"{n / t_bm25s:,.0f}", f"{t_okapi / t_bm25s:.2f}"),
            (f"VSM build_index (BM25 + vectors + files), {n:,}", f"{n:,}", f"{n / t_build:,.0f}",
             f"{t_okapi / t_build:.2f}"),
            (f"VSM RetrievalIndex.load (mmap), {n:,}", f"{n:,}", f"{t_load * 1000:,.0f} ms", ""),
        ]

        qvecs = RandomVectors(seed + 7).encode(queries)
        weights = FusionWeights(1.0, 1.0, 60)

        def okapi_search(q):
            s = okapi.get_scores(tokenize(q))
            top = np.argpartition(-s, 10)[:10]
            return top[np.argsort(-s[top])]

        methods = {
            "rank-bm25 BM25Okapi (baseline)": lambda i, q: okapi_search(q),
            "VSM bm25 (bm25s)": lambda i, q: ix.bm25(q, 10),
            "VSM dense (numpy einsum, mmap)": lambda i, q: ix.dense_vec(qvecs[i], 10),
            "VSM hybrid (RRF of top 100 + top 100)": lambda i, q: ix.hybrid(q, 10, encoder=None, weights=weights,
                                                                              query_vec=qvecs[i]),
        }
        for fn in methods.values():  # warm-up (page in the memory maps)
            fn(0, queries[0])
        times = {m: [] for m in methods}
        for i, q in enumerate(queries):
            for m, fn in methods.items():
                t0 = time.perf_counter()
                fn(i, q)
                times[m].append((time.perf_counter() - t0) * 1000)
        # The BLAS reference runs after the interleaved loop: OpenBLAS threads keep spinning
        # after a call and would slow down whatever runs next.
        ref = "  dense via BLAS E @ q (reference)"
        times[ref] = []
        for i in range(len(queries)):
            t0 = time.perf_counter()
            np.argpartition(-(ix.embeddings @ qvecs[i]), 10)[:10]
            times[ref].append((time.perf_counter() - t0) * 1000)
        base = statistics.median(times["rank-bm25 BM25Okapi (baseline)"])
        for m, ts in times.items():
            p50 = statistics.median(ts)
            lat_rows.append((f"{n:,}", m, f"{p50:.2f}", f"{pct(ts, 0.95):.2f}", f"{base / p50:.1f}x"))
        okapi = ix = methods = times = None  # free the index before the next size
        gc.collect()
        shutil.rmtree(workdir / f"idx{n}", ignore_errors=True)

    table(["chunks", "method", "p50 ms", "p95 ms", "speed vs rank-bm25 (p50)"], lat_rows,
          f"Query latency, {len(queries)} CMRC questions, top 10 (dense vectors: random normalised, dim 384)")
    table(["build step", "passages", "passages/s", "speed vs rank-bm25"], build_rows, "Index build throughput")


def bench_embed(passages, questions, n_passages, n_queries, seed):
    from inference_app.engine.index import EMBEDDED_ENCODER, load_encoder

    t0 = time.perf_counter()
    enc = load_encoder(EMBEDDED_ENCODER)
    t_load = time.perf_counter() - t0
    texts, _ = synthetic_corpus(passages, n_passages, seed + 3)
    enc.encode(texts[:8])
    t0 = time.perf_counter()
    enc.encode(texts, batch_size=32)
    rate = len(texts) / (time.perf_counter() - t0)
    rng = random.Random(seed)
    qs = [q for _, q, _ in rng.sample(questions, min(n_queries, len(questions)))]
    ts = []
    for q in qs:
        t0 = time.perf_counter()
        enc.encode_queries([q])
        ts.append((time.perf_counter() - t0) * 1000)
    table(["what", "value"], [
        ("model load (first call, torch import included)", f"{t_load:.1f} s"),
        (f"embed {len(texts)} synthetic chunks, batch 32", f"{rate:,.1f} passages/s"),
        ("  → 10k chunks would take", f"{10_000 / rate / 60:,.1f} min"),
        (f"query embedding p50 / p95 ({len(qs)} questions, one at a time)",
         f"{statistics.median(ts):.1f} / {pct(ts, 0.95):.1f} ms"),
    ], "Embedding with the embedded all-MiniLM-L6-v2 (max 256 tokens, CPU)")


# --------------------------------------------------------------------------- quality


def fine_tune(base_folder: str, rows: list[dict], out_dir: Path, epochs: int, batch_size: int, seed: int):
    """Fine-tune the embedding model on (query, positive) rows; returns (model folder, how)."""
    try:
        from training_app.engine.embedding import EmbeddingConfig, train_embedding
    except ImportError:
        train_embedding = None
    if train_embedding is not None:
        config = EmbeddingConfig(base_model=base_folder, epochs=epochs, batch_size=batch_size, seed=seed,
                                 device="cpu")
        res = train_embedding(config, rows, out_dir)
        return Path(res.model_dir), "training_app.engine.embedding.train_embedding"

    # TODO: switch to training_app.engine.embedding.train_embedding once it lands; until then
    # the same recipe directly: MultipleNegativesRankingLoss (in-batch negatives), batches
    # without duplicate texts (several questions share a passage).
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(base_folder, device="cpu", local_files_only=True)
    ds = Dataset.from_dict({"anchor": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "trainer"), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=5e-5, warmup_steps=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no",
        report_to="none", logging_steps=10, seed=seed, use_cpu=True, disable_tqdm=True,
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                               loss=MultipleNegativesRankingLoss(model)).train()
    model.save(str(out_dir / "model"))
    return out_dir / "model", "SentenceTransformerTrainer + MultipleNegativesRankingLoss (direct)"


def bench_quality(args, workdir: Path):
    from inference_app.engine.fusion import FusionWeights, choose_fusion
    from inference_app.engine.index import (
        EMBEDDED_ENCODER,
        RetrievalIndex,
        build_index,
        embedded_encoder_path,
        load_encoder,
    )
    from inference_app.engine.metrics import evaluate_retriever

    passages, questions = load_cmrc(args.cmrc, args.passages)
    half_a = {p.id for p in passages if seeded_half(p.id, args.seed)}
    qa = [(qid, q, pid) for qid, q, pid in questions if pid in half_a]
    a_train = [x for x in qa if not seeded_half(x[0], args.seed + 1, 0.2)]
    a_dev = [x for x in qa if seeded_half(x[0], args.seed + 1, 0.2)]
    b_eval = [(q, {pid}) for qid, q, pid in questions if pid not in half_a]
    if args.max_train:
        a_train = a_train[: args.max_train]
    dev = [(q, {pid}) for _, q, pid in a_dev]
    text_of = {p.id: p.text for p in passages}
    print(f"\nCMRC 2018 trial: {len(passages)} passages ({len(half_a)} in half A), {len(questions)} questions; "
          f"fine-tune on {len(a_train)} questions of half A, fusion weights chosen on {len(dev)} other questions "
          f"of half A, measured on {len(b_eval)} questions of half B against all {len(passages)} passages.")

    base = load_encoder(EMBEDDED_ENCODER)
    cache = workdir / "embedding-cache"
    t0 = time.perf_counter()
    build_index(passages, workdir / "cmrc-base", encoder=base, embedding_cache=cache)
    t_index = time.perf_counter() - t0
    ix = RetrievalIndex.load(workdir / "cmrc-base")

    rows = []

    def add(name, index, method, encoder=None, weights=None, note=""):
        m = evaluate_retriever(index, b_eval, method=method, encoder=encoder, weights=weights)
        rows.append((name, m, note))

    add("BM25 (jieba tokens, bm25s)", ix, "bm25", note="baseline")
    add("dense, all-MiniLM-L6-v2 (base)", ix, "dense", base)
    add("hybrid base, equal weights (1, 1, k=60)", ix, "hybrid", base, FusionWeights(1, 1, 60), "naive fusion")
    choice = choose_fusion(ix, dev, encoder=base)
    add("hybrid base, choose_fusion weights", ix, "hybrid", base, choice.weights, f"chose {choice.chosen}")

    t0 = time.perf_counter()
    train_rows = [{"query": q, "positive": text_of[pid], "negatives": [], "score": None} for _, q, pid in a_train]
    model_dir, how = fine_tune(str(embedded_encoder_path()), train_rows, workdir / "ft", args.epochs,
                               args.batch_size, args.seed)
    t_ft = time.perf_counter() - t0
    tuned = load_encoder(str(model_dir), model_id="bench:minilm-cmrc-half-a")
    t0 = time.perf_counter()
    build_index(passages, workdir / "cmrc-ft", encoder=tuned, embedding_cache=cache)
    t_index_ft = time.perf_counter() - t0
    ixf = RetrievalIndex.load(workdir / "cmrc-ft")
    add("dense, fine-tuned on half A", ixf, "dense", tuned)
    add("hybrid fine-tuned, equal weights (1, 1, k=60)", ixf, "hybrid", tuned, FusionWeights(1, 1, 60), "naive fusion")
    choice_ft = choose_fusion(ixf, dev, encoder=tuned)
    add("hybrid fine-tuned, choose_fusion weights", ixf, "hybrid", tuned, choice_ft.weights,
        f"chose {choice_ft.chosen}")

    bm = rows[0][1]["mrr@10"]
    table(["retriever", "hit@1", "hit@5", "MRR@10", "MRR vs BM25", "note"],
          [(n, f"{m['hit@1']:.3f}", f"{m['hit@5']:.3f}", f"{m['mrr@10']:.3f}",
            f"{m['mrr@10'] / bm:.2f}" if bm else "-", note) for n, m, note in rows],
          f"Retrieval quality, CMRC 2018 trial, {len(b_eval)} held-out questions (half B)")
    table(["weights", "mrr@10 (choice set)", "hit@1"],
          [(r["name"] + (" ←" if r["chosen"] else ""), f"{r['mrr@10']:.3f}", f"{r['hit@1']:.3f}")
           for r in choice_ft.table], f"choose_fusion table for the fine-tuned model ({len(dev)} questions of half A)")
    print(f"\nfine-tune: {how}; {len(train_rows)} pairs, {args.epochs} epoch(s), batch {args.batch_size}: "
          f"{t_ft:.0f} s. Index build with embeddings: base {t_index:.0f} s, fine-tuned {t_index_ft:.0f} s "
          f"({len(passages)} passages).")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a quick check")
    ap.add_argument("--sections", default="latency,embed,quality", help="comma list of latency, embed, quality")
    ap.add_argument("--sizes", default=None, help="corpus sizes for latency (default 10000,100000)")
    ap.add_argument("--queries", type=int, default=None, help="queries timed per size (default 200)")
    ap.add_argument("--cmrc", default=CMRC)
    ap.add_argument("--passages", type=int, default=None, help="use the first N CMRC passages only")
    ap.add_argument("--max-train", type=int, default=None, help="at most N fine-tune pairs")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.sizes = args.sizes or "2000"
        args.queries = args.queries or 40
        args.passages = args.passages or 64
        args.max_train = args.max_train or 48
    sizes = [int(s) for s in (args.sizes or "10000,100000").split(",")]
    n_queries = args.queries or 200
    sections = set(args.sections.split(","))

    import logging

    logging.getLogger("jieba").setLevel(logging.WARNING)
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    passages, questions = load_cmrc(args.cmrc)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vsm-bench-retrieval-") as tmp:
        workdir = Path(tmp)
        if "latency" in sections:
            bench_latency(passages, questions, sizes, n_queries, workdir, args.seed)
        if "embed" in sections:
            bench_embed(passages, questions, 64 if args.quick else 256, 20 if args.quick else 50, args.seed)
        if "quality" in sections:
            bench_quality(args, workdir)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
