"""Weighted reciprocal rank fusion, and choosing its weights on a domain's own questions.

RRF (Cormack et al., 2009) fuses rankings by rank, not by score, so a BM25 score and a
cosine need no calibration against each other: ``score(d) = Σ_m w_m / (k + rank_m(d))``.

Why the weights are *chosen*, per domain, and may come out as "BM25 only": on Chinese text
the embedded English MiniLM finds the right passage first 14% of the time where BM25 finds
it 93% (FACTS.md), and fusing a weak ranker in with equal weight pulls good BM25 rankings
down. ``choose_fusion`` measures BM25 alone, dense alone and a small grid of weights on the
domain's own (question, passage) pairs and only moves off BM25 when that scores strictly
better; a fine-tuned embedding model earns its weight the same way.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from inference_app.engine.index import Encoder, RetrievalIndex


@dataclass(frozen=True)
class FusionWeights:
    """How hybrid search fuses its two rankings. ``FusionWeights(bm25=1, dense=0)`` is BM25
    only (exactly the BM25 ranking); ``FusionWeights(bm25=0, dense=1)`` is dense only."""

    bm25: float = 1.0  # weight of the BM25 ranking
    dense: float = 1.0  # weight of the embedding ranking
    rrf_k: int = 60  # RRF's rank offset: larger flattens the advantage of the very top ranks

    def __post_init__(self) -> None:
        if self.bm25 < 0 or self.dense < 0:
            raise ValueError(f"fusion weights must be ≥ 0 (got bm25={self.bm25}, dense={self.dense})")
        if self.bm25 == 0 and self.dense == 0:
            raise ValueError("at least one fusion weight must be > 0")
        if int(self.rrf_k) != self.rrf_k or self.rrf_k < 0:
            raise ValueError(f"rrf_k must be a non-negative integer (got {self.rrf_k!r})")

    @property
    def name(self) -> str:
        if self.dense == 0:
            return "bm25"
        if self.bm25 == 0:
            return "dense"
        return f"hybrid(bm25={self.bm25:g}, dense={self.dense:g}, k={self.rrf_k})"

    def to_dict(self) -> dict[str, Any]:
        return {"bm25": float(self.bm25), "dense": float(self.dense), "rrf_k": int(self.rrf_k)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FusionWeights:
        """From ``to_dict``'s output (missing keys take the defaults; unknown keys ignored)."""
        d = dict(d or {})
        default = cls()
        return cls(
            bm25=float(d.get("bm25", default.bm25)),
            dense=float(d.get("dense", default.dense)),
            rrf_k=int(d.get("rrf_k", default.rrf_k)),
        )


BM25_ONLY = FusionWeights(bm25=1.0, dense=0.0)
DENSE_ONLY = FusionWeights(bm25=0.0, dense=1.0)


def rrf_fuse(
    rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float], k: int = 60
) -> list[tuple[str, float]]:
    """Fuse named rankings (ids, best first) into ``[(id, score)]``, best first.

    ``score(d) = Σ_m weights[m] / (k + rank_m(d))`` with 1-based ranks; a method with weight
    0 (or no weight) is dropped entirely, so an id only it ranked does not appear. Ties break
    deterministically: the better best single rank first, then the id. An id repeated within
    one ranking counts at its first rank.
    """
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    for method, ranked in rankings.items():
        w = float(weights.get(method, 0.0))
        if w <= 0:
            continue
        seen: set[str] = set()
        for rank, doc in enumerate(ranked, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
            best[doc] = min(best.get(doc, rank), rank)
    # Round for the comparison only: the same terms summed in another order may differ by an ulp.
    return sorted(scores.items(), key=lambda kv: (-round(kv[1], 12), best[kv[0]], kv[0]))


# --------------------------------------------------------------------------- choosing weights

DEFAULT_DENSE_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_RRF_KS = (10, 60)
METRICS = ("hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10")


def default_grid() -> list[FusionWeights]:
    """Dense weight in {0.25, 0.5, 1, 2, 4} × BM25 weight 1 × rrf_k in {10, 60} (BM25 only
    and dense only are always evaluated besides the grid)."""
    return [FusionWeights(1.0, d, k) for k in DEFAULT_RRF_KS for d in DEFAULT_DENSE_WEIGHTS]


@dataclass(frozen=True)
class FusionChoice:
    """The chosen weights and the table they were chosen from (one row per candidate)."""

    weights: FusionWeights
    table: list[dict[str, Any]] = field(default_factory=list)
    chosen: str = "bm25"
    queries: int = 0
    metric: str = "mrr@10"

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.to_dict(), "table": self.table, "chosen": self.chosen,
                "queries": self.queries, "metric": self.metric}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FusionChoice:
        return cls(FusionWeights.from_dict(d.get("weights")), list(d.get("table", [])),
                   str(d.get("chosen", "bm25")), int(d.get("queries", 0)), str(d.get("metric", "mrr@10")))


def choose_fusion(
    index: RetrievalIndex,
    queries: Sequence[tuple[str, set[str]]],
    *,
    encoder: Encoder | None,
    k: int = 10,
    grid: Sequence[FusionWeights] | None = None,
    metric: str = "mrr@10",
    candidates: int = 100,
    min_gain: float = 0.0,
) -> FusionChoice:
    """Pick fusion weights for ``index`` on (query, relevant passage ids) pairs.

    Evaluates BM25 only, dense only and ``grid`` (``default_grid()`` when None) and returns
    the best by ``metric``, but never one scoring below BM25 only: anything else must beat
    BM25 by more than ``min_gain`` (ties → BM25 only; among equal others, the earlier row).
    Without an encoder or embeddings, or without queries, the answer is BM25 only.
    Each query is searched once per method; the grid only re-fuses the candidate lists.
    """
    from inference_app.engine.index import encode_queries
    from inference_app.engine.metrics import evaluate_rankings

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    texts = [q for q, _ in queries]
    rels = [{str(r) for r in rel} for _, rel in queries]
    ks = (1, 3, 5, 10)

    def row(w: FusionWeights, rankings: list[list[str]]) -> dict[str, Any]:
        m = evaluate_rankings(rankings, rels, ks)
        return {"name": w.name, "bm25": w.bm25, "dense": w.dense, "rrf_k": w.rrf_k, **m}

    bm25_lists = [[h.id for h in index.bm25(q, max(candidates, k))] for q in texts]
    table = [row(BM25_ONLY, [r[:k] for r in bm25_lists])]
    use_dense = encoder is not None and index.has_embeddings and bool(texts)
    candidates_w = [BM25_ONLY]
    if use_dense:
        index.check_encoder(encoder)
        qvecs = encode_queries(encoder, texts)
        dense_lists = [[h.id for h in index.dense_vec(v, max(candidates, k))] for v in qvecs]
        table.append(row(DENSE_ONLY, [r[:k] for r in dense_lists]))
        candidates_w.append(DENSE_ONLY)
        for w in (default_grid() if grid is None else grid):
            if w in candidates_w:
                continue
            if w.dense == 0 or w.bm25 == 0:  # the same rankings as the two rows above
                lists = bm25_lists if w.dense == 0 else dense_lists
                table.append(row(w, [r[:k] for r in lists]))
            else:
                fused = [
                    [d for d, _ in rrf_fuse({"bm25": b, "dense": dn}, {"bm25": w.bm25, "dense": w.dense}, w.rrf_k)[:k]]
                    for b, dn in zip(bm25_lists, dense_lists)
                ]
                table.append(row(w, fused))
            candidates_w.append(w)

    best_i, floor = 0, table[0][metric]
    for i, r in enumerate(table[1:], start=1):
        if r[metric] > floor + min_gain and r[metric] > table[best_i][metric]:
            best_i = i
    for i, r in enumerate(table):
        r["chosen"] = i == best_i
    return FusionChoice(candidates_w[best_i], table, table[best_i]["name"], len(texts), metric)


__all__ = [
    "BM25_ONLY",
    "DENSE_ONLY",
    "FusionChoice",
    "FusionWeights",
    "choose_fusion",
    "default_grid",
    "rrf_fuse",
]
