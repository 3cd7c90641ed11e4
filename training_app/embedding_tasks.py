"""The embedding half of the training job: pairs from a frozen version, the engine, then retrieval evaluation.

A run of kind ``embedding`` trains a sentence-embedding model on the version's retrieval
examples and approved QA pairs (query → the chunk that answers it), then measures it on the
version's held-out questions against the domain's chunks: hit@1/3/5/10, MRR@10 and nDCG@10
for BM25 (the floor), the base model, the fine-tuned model and hybrid fusion, plus the score
distributions of positives and negatives and, when examples carry scores, Spearman.
"""
from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext_noop

from domains.jobs import JobCancelled, JobContext
from domains.models import Chunk
from training_app.models import ModelVersion, TrainingRun

MAX_EVAL_QUERIES = 500
MAX_FUSION_QUERIES = 300


def pair_rows(version, split: str) -> list[dict]:
    """Engine rows ``{query, positive, negatives, score, positive_id}`` of one split, one per query."""
    from datasets_app import versions

    rows, seen = [], set()
    for r in versions.load_retrieval(version, split):
        key = (r.query.strip(), r.positive_text.strip())
        if key[0] and key[1] and key not in seen:
            seen.add(key)
            rows.append({"query": key[0], "positive": key[1], "negatives": [text for _id, text in r.negatives],
                         "score": r.score, "positive_id": r.positive_id or ""})
    for r in versions.load_qa(version, split):
        key = (r.question.strip(), (r.chunk_text or "").strip())
        if key[0] and key[1] and key not in seen:
            seen.add(key)
            rows.append({"query": key[0], "positive": key[1], "negatives": [], "score": None,
                         "positive_id": r.source_chunk_id or ""})
    return rows


def eval_queries(rows: list[dict], passages) -> list[tuple[str, set[str]]]:
    """(query, relevant chunk ids) for rows whose chunk is still in the index (by id, else by its text)."""
    ids = {p.id for p in passages}
    by_text: dict[str, str] = {}
    for p in passages:
        by_text.setdefault(p.text.strip(), p.id)
    out = []
    for row in rows:
        pid = row.get("positive_id") or ""
        if pid not in ids:
            pid = by_text.get(row["positive"].strip(), "")
        if pid:
            out.append((row["query"], {pid}))
    return out[:MAX_EVAL_QUERIES]


def _held_out(version) -> tuple[str, list[dict]]:
    for split in ("test", "validation"):
        rows = pair_rows(version, split)
        if rows:
            return split, rows
    return "", []


def train_embedding_run(ctx: JobContext, run: TrainingRun) -> dict:
    from inference_app.engine.index import EncoderError, resolve_encoder_path
    from training_app.engine.embedding import EmbeddingConfig, train_embedding

    ctx.progress(0, 0, message=gettext_noop("Preparing the base model"))
    try:
        base = resolve_encoder_path(run.base_model)
    except EncoderError as exc:
        ctx.fail(str(exc))
    if run.parent_id and run.parent and run.parent.adapter_path:
        parent_dir = settings.VSM_DATA_DIR / run.parent.adapter_path
        if parent_dir.is_dir():
            base = parent_dir
    ctx.log(f"base embedding model {run.base_model} → {base}")
    config = EmbeddingConfig.from_dict({**run.config, "base_model": str(base)})
    rows = []
    if config.objective != "tsdae":
        try:
            rows = pair_rows(run.dataset_version, "train")
        except Exception as exc:  # a dataset version whose files went missing, and the like
            ctx.fail(f"The training data could not be read: {exc}")
        if not rows:
            ctx.fail("There is nothing to train on: the dataset version's train split has no retrieval examples "
                     "or QA pairs with their chunk.")
    texts = [t for t in Chunk.objects.for_domain(run.domain).order_by("document_id", "ordinal")
             .values_list("text", flat=True)] if config.objective in ("tsdae", "augsbert") else []
    out_dir = Path(settings.VSM_DATA_DIR) / "domains" / run.domain.slug / "runs" / str(run.pk)
    ctx.log(f"{len(rows)} training pair(s), {len(texts)} chunk text(s), objective {config.objective}, "
            f"strategy {config.strategy}, {config.epochs} epoch(s), lr {config.learning_rate}")
    history: list[dict] = []
    from training_app.tasks import experiment_log

    explog = experiment_log(run, out_dir)

    def on_progress(p) -> None:
        if p.phase != "cross_encoder":
            history.append({"step": p.step, "epoch": round(p.epoch, 3), "loss": p.loss})
            explog.log_progress(p.step, p)
        # Augmented SBERT trains its cross-encoder first, with its own step count.
        message = gettext_noop("Training the cross-encoder") if p.phase == "cross_encoder" \
            else gettext_noop("Training")
        ctx.progress(p.step, p.total_steps, message=message)
        ctx.report(step=p.step, total_steps=p.total_steps, epoch=round(p.epoch, 3), loss=p.loss,
                   learning_rate=p.learning_rate, history=history[-200:])

    try:
        result = train_embedding(config, [{k: v for k, v in r.items() if k != "positive_id"} for r in rows],
                                 out_dir, texts=texts, on_progress=on_progress, should_stop=ctx.should_stop)
    except ValueError as exc:
        ctx.fail(str(exc))
    finally:
        explog.close()
        for error in explog.errors:
            ctx.log(f"experiment log: {error}")
    metrics = result.to_dict()
    metrics["final_train_loss"] = metrics.get("final_loss")
    metrics["experiment_log"] = {"tensorboard": os.path.relpath(explog.log_dir, settings.VSM_DATA_DIR),
                                 **({"wandb_url": explog.wandb_url} if explog.wandb_url else {})}
    if result.stopped_reason == "cancelled":
        TrainingRun.objects.filter(pk=run.pk).update(output_path=os.path.relpath(out_dir, settings.VSM_DATA_DIR),
                                                     metrics=metrics)
        ctx.log(f"cancelled at step {result.steps}")
        raise JobCancelled()

    evaluation = None
    if run.dataset_version is not None:
        ctx.progress(0, 0, message=gettext_noop("Evaluating retrieval on held-out questions"))
        try:
            evaluation = evaluate_embedding(run, base, Path(result.model_dir), out_dir / "eval", ctx)
        except EncoderError as exc:
            ctx.log(f"evaluation skipped: {exc}")
    if evaluation is not None:
        metrics["retrieval"] = evaluation
    TrainingRun.objects.filter(pk=run.pk).update(output_path=os.path.relpath(out_dir, settings.VSM_DATA_DIR),
                                                 metrics=metrics)
    with transaction.atomic():
        version, _created = ModelVersion.objects.get_or_create(
            run=run,
            defaults=dict(
                domain=run.domain, number=ModelVersion.next_number(run.domain), kind=run.kind, parent=run.parent,
                base_model=run.base_model, base_path=str(base), dataset_hash=run.dataset_hash, config=run.config,
                adapter_path=os.path.relpath(result.model_dir, settings.VSM_DATA_DIR),
                metrics={**{k: metrics.get(k) for k in ("final_train_loss", "steps", "elapsed_s", "objective",
                                                         "strategy", "trained_parameters", "silver")},
                         **({"retrieval": evaluation} if evaluation else {})},
            ),
        )
    summary = ""
    if evaluation:
        table = {row["name"]: row for row in evaluation["table"]}
        summary = ", ".join(f"{name} hit@1 {table[name]['hit@1']:.3f}" for name in ("bm25", "base", "fine-tuned")
                            if name in table)
    ctx.log(f"embedding model v{version.number}: final loss {result.final_loss}" + (f"; {summary}" if summary else ""))
    return {"run_id": run.pk, "model_version_id": version.pk, "model_version": version.number,
            "final_train_loss": result.final_loss, "steps": result.steps,
            **({"retrieval": {r["name"]: {k: r.get(k) for k in ("hit@1", "mrr@10")} for r in evaluation["table"]}}
               if evaluation else {})}


def evaluate_embedding(run: TrainingRun, base: Path, tuned: Path, work: Path, ctx: JobContext | None = None) -> dict | None:
    """Base vs fine-tuned vs BM25 vs hybrid on the version's held-out questions, over the domain's chunks."""
    from inference_app.engine.index import build_index, choose_fusion, load_encoder
    from inference_app.engine.index import RetrievalIndex as EngineIndex
    from inference_app.engine.metrics import evaluate_retriever, score_distributions, spearman
    from inference_app.services import embedding_cache_dir, passages_of

    passages = passages_of(run.domain)
    split, held = _held_out(run.dataset_version)
    queries = eval_queries(held, passages) if passages else []
    if not queries:
        if ctx is not None:
            ctx.log("evaluation skipped: no held-out question whose chunk is still in the documents")
        return None
    encoders = {"base": load_encoder(str(base)), "fine-tuned": load_encoder(str(tuned))}
    indexes = {}
    for name, encoder in encoders.items():
        info = build_index(passages, work / name, encoder=encoder, embedding_cache=embedding_cache_dir())
        indexes[name] = EngineIndex.load(info.path)
    table = [{"name": "bm25", **evaluate_retriever(indexes["base"], queries, method="bm25")}]
    for name in encoders:
        table.append({"name": name, **evaluate_retriever(indexes[name], queries, method="dense",
                                                         encoder=encoders[name])})
    # Fusion weights are chosen on the train split's questions, never on the held-out ones they are scored on.
    fusion_queries = eval_queries(pair_rows(run.dataset_version, "train"), passages)[:MAX_FUSION_QUERIES]
    choice = choose_fusion(indexes["fine-tuned"], fusion_queries, encoder=encoders["fine-tuned"]) \
        if fusion_queries else None
    weights = choice.weights if choice else None
    hybrid = evaluate_retriever(indexes["fine-tuned"], queries, method="hybrid", encoder=encoders["fine-tuned"],
                                **({"weights": weights} if weights else {}))
    table.append({"name": "hybrid (fine-tuned)", **hybrid})
    distributions = {name: score_distributions(indexes[name], queries, encoder=encoders[name]) for name in encoders}
    scored = [r for r in held if r.get("score") is not None]
    correlations = {}
    if len(scored) >= 2:
        for name, encoder in encoders.items():
            q = encoder.encode([r["query"] for r in scored])
            p = encoder.encode([r["positive"] for r in scored])
            cosines = [float((a * b).sum()) for a, b in zip(q, p)]
            correlations[name] = spearman(cosines, [float(r["score"]) for r in scored])
    return {"split": split, "queries": len(queries), "passages": len(passages), "table": table,
            "fusion": {**weights.to_dict(), "chosen": choice.chosen} if choice else None,
            "distributions": distributions, "spearman": correlations or None,
            "clustering": clustering_of(passages, encoders) or None}


MAX_CLUSTER_PASSAGES = 3000


def _section(passage) -> str | None:
    """A chunk's section: the headings above its own (its chapter), or its only heading."""
    path = [h for h in passage.heading_path if h]
    if not path:
        return None
    return f"{passage.document_id}/" + "/".join(path[:-1] if len(path) > 1 else path)


def clustering_of(passages, encoders: dict) -> dict:
    """How well each model's chunk embeddings group by document and by section (the headings above
    a chunk's own): k-means purity and NMI, base beside fine-tuned."""
    from inference_app.engine.metrics import cluster_report

    sample = passages[:MAX_CLUSTER_PASSAGES]
    labelings = {"document": [p.document_id for p in sample], "section": [_section(p) for p in sample]}
    out: dict = {}
    for name, encoder in encoders.items():
        vectors = encoder.encode([p.text for p in sample])
        for by, labels in labelings.items():
            keep = [i for i, label in enumerate(labels) if label is not None]
            report = cluster_report(vectors[keep], [labels[i] for i in keep]) if keep else None
            if report:
                out.setdefault(by, {})[name] = report
    return out
