"""Retrieval jobs: build the domain's index (and choose its fusion weights), compare embedding models.

Short adapters: rows become engine passages and (query, relevant chunk ids) pairs, the engine
does the work, the results go back on the rows. A cancelled or killed build never leaves a
half-written index in place: the engine writes a temp folder and renames it when whole.
"""
from __future__ import annotations

import hashlib
import logging
import os

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from domains.jobs import JobCancelled, JobContext, job_handler
from domains.models import Chunk
from inference_app import services
from inference_app.models import EmbeddingComparison, RetrievalIndex

logger = logging.getLogger("vsm.retrieval")


def _chunk_signature(domain) -> str:
    digest = hashlib.sha256()
    for pk, content_hash in Chunk.objects.for_domain(domain).order_by("pk").values_list("pk", "content_hash"):
        digest.update(f"{pk}:{content_hash}\n".encode())
    return digest.hexdigest()


@job_handler("index", _("Build the retrieval index"))
def build_index(ctx: JobContext) -> dict:
    from inference_app.engine.index import (
        EncoderError,
        FusionWeights,
        IndexCancelled,
        choose_fusion,
        load_encoder,
    )
    from inference_app.engine.index import RetrievalIndex as EngineIndex
    from inference_app.engine.index import build_index as engine_build

    domain = ctx.domain
    index = services.index_for(domain)
    signature = _chunk_signature(domain)
    passages = services.passages_of(domain)
    if not passages:
        ctx.fail("The domain has no document chunks yet: upload documents and let them be read first.")
    spec, version = services.encoder_spec(index)
    encoder = None
    if index.dense_enabled:
        ctx.progress(0, len(passages), message=gettext_noop("Loading the embedding model"))
        try:
            encoder = load_encoder(spec)
        except EncoderError as exc:
            ctx.fail(str(exc))
        ctx.log(f"embedding model {spec}" + (f" (model version v{version.number})" if version else ""))
    else:
        ctx.log("dense retrieval is off: BM25 only")
    try:
        info = engine_build(
            passages, services.index_dir(domain), encoder=encoder,
            embedding_cache=services.embedding_cache_dir(),
            on_progress=lambda done, total: ctx.progress(done, total, message=gettext_noop("Embedding chunks")),
            should_stop=ctx.should_stop,
        )
    except IndexCancelled:
        raise JobCancelled() from None
    ctx.log(f"{info.passages} chunk(s) indexed in {info.seconds:.1f}s: {info.embedded} embedded, "
            f"{info.reused} reused from the cache")

    queries = services.domain_queries(domain)
    engine_index = EngineIndex.load(info.path)
    if encoder is None:
        weights, table, chosen = FusionWeights(bm25=1.0, dense=0.0), [], "bm25"
    elif not queries:
        # Without questions there is no evidence that the dense model helps; BM25 is the safe floor.
        weights, table, chosen = FusionWeights(bm25=1.0, dense=0.0), [], "bm25"
        ctx.log("no questions linked to chunks yet: hybrid ranks as BM25 until the domain has some")
    else:
        ctx.progress(info.passages, info.passages, message=gettext_noop("Choosing fusion weights"))
        choice = choose_fusion(engine_index, queries, encoder=encoder)
        weights, table, chosen = choice.weights, choice.table, choice.chosen
        ctx.log(f"fusion chosen on {len(queries)} question(s): {chosen} "
                f"(bm25 {weights.bm25:g}, dense {weights.dense:g}, rrf_k {weights.rrf_k})")
    changed = _chunk_signature(domain) != signature
    RetrievalIndex.objects.filter(pk=index.pk).update(
        storage_path=os.path.relpath(info.path, settings.VSM_DATA_DIR), built_encoder=spec if encoder else "",
        model_version=version, passages=info.passages, dim=info.dim, manifest=engine_index.manifest,
        fusion={**weights.to_dict(), "chosen": chosen}, fusion_table=table, fusion_queries=len(queries),
        stale=changed, built_at=timezone.now(),
    )
    if changed:  # documents changed while we built: build again with what is there now
        ctx.log("documents changed during the build; another build is queued")
        transaction.on_commit(lambda: services.start_index_build(domain=domain, reason="documents changed"))
    return {"passages": info.passages, "embedded": info.embedded, "reused": info.reused, "dim": info.dim,
            "encoder": spec if encoder else "", "fusion": weights.to_dict(), "chosen": chosen,
            "queries": len(queries)}


@job_handler("embedding_compare", _("Compare embedding models"))
def compare_embeddings(ctx: JobContext) -> dict:
    from inference_app.engine.index import EncoderError, load_encoder
    from inference_app.engine.metrics import compare_encoders

    comparison = EmbeddingComparison.objects.filter(pk=ctx.params.get("comparison_id"), domain=ctx.domain).first()
    if comparison is None:
        ctx.fail("The comparison was deleted before it started.")
    passages = services.passages_of(ctx.domain)
    queries = services.domain_queries(ctx.domain)
    if not passages or not queries:
        ctx.fail("The domain needs document chunks and questions linked to them to compare models.")
    encoders, failed = {}, []
    for number, spec in enumerate(comparison.candidates, start=1):
        ctx.progress(number - 1, len(comparison.candidates), message=gettext_noop("Loading embedding models"))
        try:
            encoders[spec] = load_encoder(services.resolve_candidate(ctx.domain, spec))
        except (EncoderError, ValidationError, OSError, ValueError) as exc:  # one bad candidate must not sink the rest
            failed.append({"name": spec, "error": str(exc)[:500]})
            ctx.log(f"{spec}: {exc}")
    ctx.progress(len(comparison.candidates), len(comparison.candidates),
                 message=gettext_noop("Scoring on the domain's questions"))
    rows = compare_encoders(passages, queries, encoders) if encoders else []
    rows = list(rows) + failed
    EmbeddingComparison.objects.filter(pk=comparison.pk).update(results=rows, queries=len(queries),
                                                                passages=len(passages))
    ctx.log(f"{len(encoders)} model(s) scored on {len(queries)} question(s) over {len(passages)} chunk(s)")
    return {"comparison_id": comparison.pk, "models": len(encoders), "failed": len(failed),
            "queries": len(queries)}


@job_handler("answer_batch", _("Answer a batch of questions"))
def answer_batch(ctx: JobContext) -> dict:
    """Answer every question of an ``AnswerBatch``; each answer is appended to the checkpoint file
    as it is made, so a retried job continues where it stopped."""
    import csv
    import io
    import json

    from inference_app import serving
    from inference_app.models import AnswerBatch

    batch = AnswerBatch.objects.filter(pk=ctx.params.get("batch_id"), domain=ctx.domain).first()
    if batch is None:
        ctx.fail("The batch was deleted before it started.")
    folder = batch.folder
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "answers.jsonl"
    done: dict[int, dict] = {}
    if checkpoint.exists():
        for line in checkpoint.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed worker: answered again below
            done[int(row["position"])] = row
    total = len(batch.questions)
    ctx.progress(len(done), total, message=gettext_noop("Answering the questions"))
    try:
        engine = serving.engine_for(ctx.domain, need_generator=(batch.mode or serving.deployment_for(ctx.domain).mode)
                                    != "extractive")
        mode = engine.mode_for(batch.mode or None)
    except (serving.ServingError, ValidationError) as exc:
        ctx.fail(" ".join(getattr(exc, "messages", [str(exc)])))
    from inference_app.engine.answering import answer_question
    from inference_app.engine.generation import GenerationError

    with open(checkpoint, "a", encoding="utf-8") as out:
        for position, question in enumerate(batch.questions):
            if position in done:
                continue
            ctx.check_cancelled()
            row = {"position": position, "question": question}
            try:
                answer = answer_question(question, **serving.call_kwargs(engine, mode, None, None))
                row.update(answer.to_dict())
            except GenerationError as exc:
                row.update(error=str(exc))
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            done[position] = row
            ctx.progress(len(done), total, message=gettext_noop("Answering the questions"))
    version = engine.version.number if engine.version is not None else ""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(serving.CSV_COLUMNS)
    for position in range(total):
        row = done[position]
        cites = row.get("citations") or []
        writer.writerow([
            row["question"], row.get("text", ""), {True: "yes", False: "no"}.get(row.get("covered"), ""),
            row.get("mode", ""),
            "; ".join(f"[{c['rank']}] {c['document']}" + (f" p.{c['page']}" if c.get("page") else "") for c in cites),
            json.dumps([{k: c.get(k) for k in ("rank", "document", "page", "passage_id", "score")} for c in cites],
                       ensure_ascii=False),
            version if row.get("model_id") else "", row.get("error", ""),
        ])
    tmp = folder / ".answers.csv.tmp"
    tmp.write_text("\ufeff" + buffer.getvalue(), encoding="utf-8")  # BOM: Excel opens Chinese text correctly
    os.replace(tmp, folder / "answers.csv")
    covered = sum(1 for r in done.values() if r.get("covered"))
    AnswerBatch.objects.filter(pk=batch.pk).update(answered=len(done), covered=covered)
    return {"batch_id": batch.pk, "answered": len(done), "covered": covered,
            "errors": sum(1 for r in done.values() if r.get("error"))}
