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
