"""Offline teacher on CMRC 2018 trial passages: coverage, filters, and retrievability.

Each passage is a chunk (title as heading). The generated questions are run against a
BM25 index (jieba tokens) of all passages: a question that finds its own passage is
specific enough to train on; the CMRC human questions give the reference hit@1.
Writes a seeded sample of 50 pairs to var/offline_teacher_sample.md for a human check.

    python bench/offline_teacher_cmrc.py [--data PATH] [--sample 50] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets_app.engine.filters import FilterConfig, apply_filters
from datasets_app.engine.offline_teacher import (
    OfflineTeacherConfig,
    TeacherChunk,
    generate_pairs,
)


def tokenize(texts: list[str]) -> list[list[str]]:
    """jieba search-mode tokens, punctuation/space dropped, lower-cased."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    out = []
    for t in texts:
        toks = [w.strip().lower() for w in jieba.cut_for_search(t)]
        out.append([w for w in toks if w and any(ch.isalnum() for ch in w)] or ["∅"])
    return out


def hits(retriever, queries: list[str], gold: list[int], k: int = 5) -> tuple[float, float]:
    """hit@1 and hit@k of the gold passage index."""
    if not queries:
        return 0.0, 0.0
    docs, _ = retriever.retrieve(tokenize(queries), k=k, show_progress=False)
    h1 = sum(int(row[0] == g) for row, g in zip(docs, gold)) / len(gold)
    hk = sum(int(g in row) for row, g in zip(docs, gold)) / len(gold)
    return h1, hk


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/benchmarks/cmrc2018_trial.json")
    ap.add_argument("--sample", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "var" / "offline_teacher_sample.md"))
    args = ap.parse_args()

    import bm25s

    passages = json.loads(Path(args.data).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    tcfg, fcfg = OfflineTeacherConfig(seed=args.seed), FilterConfig()
    generated: list[tuple[int, object]] = []
    kept: list[tuple[int, object]] = []
    rejections: Counter[str] = Counter()
    rules_gen: Counter[str] = Counter()
    rules_kept: Counter[str] = Counter()
    seen: list[str] = []
    for i, p in enumerate(passages):
        chunk = TeacherChunk(p["context_text"], (p["title"],), "zh")
        pairs = generate_pairs(chunk, tcfg)
        generated += [(i, c) for c in pairs]
        rules_gen.update(c.rule for c in pairs)
        ok, _rej, counts = apply_filters(pairs, chunk.text, fcfg, seen_questions=seen)
        rejections.update({k: v for k, v in counts.items() if v})
        kept += [(i, c) for c in ok]
        rules_kept.update(c.rule for c in ok)
        seen += [c.question for c in ok]
    gen_s = time.perf_counter() - t0

    retriever = bm25s.BM25()
    retriever.index(tokenize([p["context_text"] for p in passages]), show_progress=False)
    g1, g5 = hits(retriever, [c.question for _, c in kept], [i for i, _ in kept])
    # The "关于<title>，" lead-in names the passage; measure without it too (title leakage).
    bare = [c.question.removeprefix(f"关于{re.split(r'[（(]', passages[i]['title'])[0].strip()}，") for i, c in kept]
    b1, b5 = hits(retriever, bare, [i for i, _ in kept])
    human_q = [(i, q["query_text"]) for i, p in enumerate(passages) for q in p["qas"]]
    h1, h5 = hits(retriever, [q for _, q in human_q], [i for i, _ in human_q])

    n = len(passages)
    with_pair = len({i for i, _ in kept})
    print(f"passages: {n}; teacher+filters time: {gen_s:.2f} s")
    print(f"generated pairs: {len(generated)}; kept after filters: {len(kept)}")
    print(f"passages with >=1 kept pair: {with_pair} ({with_pair / n:.1%}); "
          f"kept pairs per passage: {len(kept) / n:.2f} (generated {len(generated) / n:.2f})")
    print("rules (generated -> kept):", {r: f"{rules_gen[r]}->{rules_kept[r]}" for r in rules_gen})
    print("filter rejections:", dict(rejections) or "none")
    print(f"BM25(jieba) over {n} passages, generated questions: hit@1 {g1:.3f}  hit@5 {g5:.3f}  (n={len(kept)})")
    print(f"  same, with the '关于<title>，' lead-in removed: hit@1 {b1:.3f}  hit@5 {b5:.3f}")
    print(f"BM25(jieba) over {n} passages, CMRC human questions: hit@1 {h1:.3f}  hit@5 {h5:.3f}  (n={len(human_q)})")

    rng = random.Random(args.seed)
    sample = rng.sample(kept, min(args.sample, len(kept)))
    lines = [f"# Offline teacher sample (CMRC 2018 trial, seed {args.seed}, {len(sample)} of {len(kept)} kept pairs)", ""]
    for k, (i, c) in enumerate(sample, 1):
        text = passages[i]["context_text"]
        lo, hi = max(0, c.start - 20), min(len(text), c.end + 20)
        lines += [
            f"## {k}. [{c.rule}] {passages[i]['title']}",
            f"- Q: {c.question}",
            f"- A: {c.answer}",
            f"- Passage: …{text[lo:hi]}…",
            "",
        ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"\nwrote {out}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
