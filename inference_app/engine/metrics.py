"""Retrieval metrics: what "the index finds the right passage" means in numbers.

The ranking functions are pure Python over passage ids (a ranking is a list of ids, best
first; the relevant set holds the ids a query should find), so they can be checked by hand.
The helpers at the bottom run a ``RetrievalIndex`` over a domain's own questions:
``evaluate_retriever`` for one method, ``score_distributions`` for the cosine histogram of
positives against the nearest non-relevant passages, ``compare_encoders`` for choosing an
embedding model (with BM25 as the floor every candidate has to beat).

Conventions: a query with no relevant id counts as a miss (0) rather than being dropped, so
a mean is always over the queries given; nDCG uses linear gains (``rel / log2(rank + 1)``,
as trec_eval and scikit-learn do), binary when ``relevant`` is a set.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from inference_app.engine.index import Encoder, FusionWeights, Passage, RetrievalIndex

DEFAULT_KS = (1, 3, 5, 10)


def hit_at_k(ranked_ids: Sequence[str], relevant: set[str] | Mapping[str, float], k: int) -> float:
    """1.0 when a relevant id is among the first ``k``, else 0.0."""
    return 1.0 if any(i in relevant for i in list(ranked_ids)[:k]) else 0.0


def mrr_at_k(ranked_ids: Sequence[str], relevant: set[str] | Mapping[str, float], k: int = 10) -> float:
    """1 / rank of the first relevant id within the first ``k`` (0.0 when none)."""
    for rank, i in enumerate(list(ranked_ids)[:k], start=1):
        if i in relevant:
            return 1.0 / rank
    return 0.0


def _gains(relevant: set[str] | Mapping[str, float]) -> dict[str, float]:
    if isinstance(relevant, Mapping):
        return {str(i): float(g) for i, g in relevant.items() if float(g) > 0}
    return {str(i): 1.0 for i in relevant}


def ndcg_at_k(ranked_ids: Sequence[str], relevant: set[str] | Mapping[str, float], k: int = 10) -> float:
    """Normalised discounted cumulative gain at ``k``.

    ``relevant`` is a set (binary gains) or a mapping id → graded gain (e.g. 2 = answers the
    question, 1 = related). DCG = Σ gain(d_r) / log2(r + 1) over ranks r ≤ k; divided by the
    DCG of the ideal ordering. A repeated id earns its gain only once.
    """
    gains = _gains(relevant)
    if not gains:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for rank, i in enumerate(list(ranked_ids)[:k], start=1):
        if i in gains and i not in seen:
            dcg += gains[i] / math.log2(rank + 1)
        seen.add(i)
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 1) for r, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def evaluate_rankings(
    rankings: Sequence[Sequence[str]],
    relevants: Sequence[set[str] | Mapping[str, float]],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float | int]:
    """Means over queries: ``{"queries", "hit@<k>" for each k, "mrr@10", "ndcg@10"}``."""
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings but {len(relevants)} relevant sets")
    n = len(rankings)
    out: dict[str, float | int] = {"queries": n}
    for k in ks:
        out[f"hit@{k}"] = sum(hit_at_k(r, rel, k) for r, rel in zip(rankings, relevants)) / n if n else 0.0
    out["mrr@10"] = sum(mrr_at_k(r, rel, 10) for r, rel in zip(rankings, relevants)) / n if n else 0.0
    out["ndcg@10"] = sum(ndcg_at_k(r, rel, 10) for r, rel in zip(rankings, relevants)) / n if n else 0.0
    return out


def _average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for t in range(i, j + 1):
            ranks[order[t]] = avg
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson on average ranks, so ties are handled).

    None for fewer than two points or when either side is constant (undefined), e.g. to
    compare expert scores with an automatic metric.
    """
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} xs but {len(ys)} ys")
    if len(xs) < 2:
        return None
    rx, ry = _average_ranks([float(x) for x in xs]), _average_ranks([float(y) for y in ys])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


# --------------------------------------------------------------------------- over an index


def purity(clusters: Sequence[Any], labels: Sequence[Any]) -> float | None:
    """Clustering purity: each cluster counts its most common label; the share of items so counted."""
    if not labels or len(clusters) != len(labels):
        return None
    by_cluster: dict[Any, dict[Any, int]] = {}
    for c, label in zip(clusters, labels):
        counts = by_cluster.setdefault(c, {})
        counts[label] = counts.get(label, 0) + 1
    return sum(max(counts.values()) for counts in by_cluster.values()) / len(labels)


def cluster_report(vectors, labels: Sequence[Any], *, seed: int = 0) -> dict | None:
    """k-means with k = the number of distinct labels over the vectors; purity and NMI against the labels.
    None when there are fewer than two labels or no more items than labels (nothing to measure)."""
    k = len(set(labels))
    if k < 2 or len(labels) <= k:
        return None
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    assigned = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)
    return {"purity": round(purity(list(assigned), list(labels)), 4),
            "nmi": round(float(normalized_mutual_info_score(list(labels), list(assigned))), 4),
            "labels": k, "items": len(labels)}


def _split(queries: Sequence[tuple[str, Any]]) -> tuple[list[str], list[set[str]]]:
    texts = [q for q, _ in queries]
    rels = [rel if isinstance(rel, Mapping) else {str(r) for r in rel} for _, rel in queries]
    return texts, rels


def evaluate_retriever(
    index: RetrievalIndex,
    queries: Sequence[tuple[str, set[str]]],
    *,
    method: str,
    encoder: Encoder | None = None,
    weights: FusionWeights | None = None,
    k: int = 10,
    ks: Sequence[int] = DEFAULT_KS,
    candidates: int = 100,
) -> dict[str, float | int]:
    """Run ``method`` ("bm25", "dense", "hybrid") for every (query, relevant ids) pair and
    return ``evaluate_rankings``. Queries are embedded in one batch for dense and hybrid."""
    from inference_app.engine.index import FusionWeights, encode_queries

    texts, rels = _split(queries)
    weights = weights or FusionWeights()
    needs_vec = method == "dense" or (method == "hybrid" and encoder is not None and weights.dense > 0
                                      and index.has_embeddings)
    if needs_vec:
        index.check_encoder(encoder)
    qvecs = encode_queries(encoder, texts) if needs_vec and texts else None
    rankings = []
    for i, q in enumerate(texts):
        if method == "bm25":
            hits = index.bm25(q, k)
        elif method == "dense":
            hits = index.dense_vec(qvecs[i], k)
        elif method == "hybrid":
            hits = index.hybrid(q, k, encoder=encoder, weights=weights, candidates=candidates,
                                query_vec=None if qvecs is None else qvecs[i])
        else:
            raise ValueError(f"unknown retrieval method {method!r}; use 'bm25', 'dense' or 'hybrid'")
        rankings.append([h.id for h in hits])
    return evaluate_rankings(rankings, rels, ks)


def best_threshold(positive: Sequence[float], negative: Sequence[float]) -> tuple[float | None, float]:
    """The score threshold that best separates positives (≥ t) from negatives (< t), by
    balanced accuracy, and that accuracy. (None, 0.0) when either side is empty."""
    if not positive or not negative:
        return None, 0.0
    points = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative], key=lambda p: p[0])
    npos, nneg = len(positive), len(negative)
    best_t, best_acc = points[0][0], 0.5  # threshold at the minimum: everything positive
    below_pos = below_neg = 0
    i = 0
    while i < len(points):
        s = points[i][0]
        # candidate threshold t = s: everything strictly below s is called negative
        acc = ((npos - below_pos) / npos + below_neg / nneg) / 2
        if acc > best_acc:
            best_t, best_acc = s, acc
        while i < len(points) and points[i][0] == s:
            below_pos += points[i][1]
            below_neg += 1 - points[i][1]
            i += 1
    return float(best_t), best_acc


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting half."""
    if not positive or not negative:
        return None
    ranks = _average_ranks([float(s) for s in positive] + [float(s) for s in negative])
    rank_sum = sum(ranks[: len(positive)])
    npos, nneg = len(positive), len(negative)
    return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg)


def score_distributions(
    index: RetrievalIndex,
    queries: Sequence[tuple[str, set[str]]],
    *,
    encoder: Encoder,
    negatives_per_query: int = 5,
) -> dict[str, Any]:
    """Cosine scores of (query, positive) pairs and of (query, nearest non-relevant passage)
    pairs, for a histogram that shows whether the embedding model separates them.

    Returns ``{"positive": [...], "negative": [...], "threshold": t, "balanced_accuracy": a,
    "separation": AUC}``: ``threshold`` best separates the two lists, ``separation`` is the
    share of (positive, negative) pairs ordered correctly (0.5 = chance, 1.0 = perfect).
    """
    from inference_app.engine.index import encode_queries

    index.check_encoder(encoder)
    texts, rels = _split(queries)
    positive: list[float] = []
    negative: list[float] = []
    if texts:
        qvecs = encode_queries(encoder, texts)
        for qv, rel in zip(qvecs, rels):
            rows = [index.row_of(pid) for pid in rel if index.has_passage(pid)]
            positive.extend(float(index.embeddings[r] @ qv) for r in rows)
            hits = index.dense_vec(qv, negatives_per_query + len(rel))
            negative.extend([h.score for h in hits if h.id not in rel][:negatives_per_query])
    threshold, acc = best_threshold(positive, negative)
    return {
        "positive": positive,
        "negative": negative,
        "threshold": threshold,
        "balanced_accuracy": acc,
        "separation": auc(positive, negative),
    }


def compare_encoders(
    passages: Sequence[Passage],
    queries: Sequence[tuple[str, set[str]]],
    encoders: Mapping[str, Encoder],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    language: str = "auto",
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Model selection: for each candidate encoder, embed the passages and queries in memory
    and rank by cosine; a "bm25" row over the same passages is the floor. Rows carry
    ``name, kind, model_id, dim, seconds`` and the ``evaluate_rankings`` metrics, best
    ``mrr@10`` first (ties keep BM25 first, then the given order)."""
    import numpy as np

    from inference_app.engine.index import BM25Core, encode_queries, topk_indices

    ids = [p.id for p in passages]
    texts, rels = _split(queries)
    kmax = max(ks) if ks else 10
    kmax = max(kmax, 10)
    rows: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    core = BM25Core.build([p.text for p in passages], language=language)
    rankings = [[ids[i] for i, _ in core.top(q, kmax)] for q in texts]
    rows.append({"name": "bm25", "kind": "bm25", "model_id": "bm25", "dim": None,
                 "seconds": time.perf_counter() - t0, **evaluate_rankings(rankings, rels, ks)})

    for name, enc in encoders.items():
        t0 = time.perf_counter()
        pm = np.asarray(enc.encode([p.text for p in passages], batch_size=batch_size), dtype=np.float32)
        qm = encode_queries(enc, texts, batch_size=batch_size) if texts else np.zeros((0, pm.shape[1]), np.float32)
        scores = qm @ pm.T if len(passages) else np.zeros((len(texts), 0), np.float32)
        rankings = [[ids[i] for i in topk_indices(s, kmax)] for s in scores]
        rows.append({"name": name, "kind": "dense", "model_id": getattr(enc, "model_id", name),
                     "dim": int(pm.shape[1]) if pm.ndim == 2 else None,
                     "seconds": time.perf_counter() - t0, **evaluate_rankings(rankings, rels, ks)})
    order = {id(r): i for i, r in enumerate(rows)}
    rows.sort(key=lambda r: (-r["mrr@10"], order[id(r)]))
    return rows


__all__ = [
    "auc",
    "best_threshold",
    "compare_encoders",
    "evaluate_rankings",
    "evaluate_retriever",
    "hit_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "score_distributions",
    "spearman",
]
