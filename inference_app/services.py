"""Retrieval workflows: build the domain's index as a job, search it, compare embedding models.

Views and the API call these keyword-only functions; jobs live in ``inference_app.tasks``.
The engine (``inference_app.engine``) never sees Django: passages and queries are handed to
it as plain dataclasses and tuples.
"""
from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from domains.jobs import enqueue_job
from domains.models import Chunk, Domain, Job
from inference_app.models import EMBEDDED_ENCODER, EmbeddingComparison, RetrievalIndex

METHODS = ("bm25", "dense", "hybrid")
MAX_K = 50
MAX_QUERY_CHARS = 2000
MAX_CANDIDATES = 6
RERANK_CANDIDATES = 20  # hybrid hits the cross-encoder re-scores before the top k are kept
# Questions used to choose fusion weights and to compare models (the domain's own, capped).
MAX_EVAL_QUERIES = 500


def index_for(domain: Domain) -> RetrievalIndex:
    index, _created = RetrievalIndex.objects.get_or_create(domain=domain)
    return index


def index_dir(domain: Domain) -> Path:
    return settings.VSM_DATA_DIR / "domains" / domain.slug / "index"


def embedding_cache_dir() -> Path:
    """Chunk embeddings cached by (model, text): a rebuild embeds only what changed."""
    return settings.VSM_DATA_DIR / "cache" / "embeddings"


def active_embedding_version(domain: Domain):
    from training_app.models import ModelVersion, TrainingRun

    return ModelVersion.objects.for_domain(domain).active().filter(kind=TrainingRun.Kind.EMBEDDING).first()


def version_model_dir(version) -> Path | None:
    """The sentence-transformers folder of an embedding model version, if it is on disk."""
    if version is None or not version.adapter_path:
        return None
    folder = settings.VSM_DATA_DIR / version.adapter_path
    return folder if folder.is_dir() else None


def encoder_spec(index: RetrievalIndex) -> tuple[str, object]:
    """(spec to load, model version or None): the active embedding version wins over the chosen base."""
    version = active_embedding_version(index.domain)
    folder = version_model_dir(version)
    if folder is not None:
        return str(folder), version
    return index.encoder or EMBEDDED_ENCODER, None


def check_encoder_spec(spec: str, field: str = "encoder") -> str:
    """Refuse a spec that cannot work before anything is queued (the job loads it for real)."""
    spec = (spec or "").strip()
    if not spec:
        raise ValidationError({field: f"Choose an embedding model ({EMBEDDED_ENCODER} is the built-in one)."})
    if spec.startswith("embedded:") and spec != EMBEDDED_ENCODER:
        raise ValidationError({field: f"Unknown embedded model {spec!r}; the built-in one is {EMBEDDED_ENCODER}."})
    if spec.startswith(("/", "./", "~")):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise ValidationError({field: f"{spec} is not a folder on this machine."})
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ValidationError({field: f"{spec} holds no config.json or modules.json: not an embedding model."})
    return spec


def passages_of(domain: Domain):
    """The domain's chunks as engine passages, in reading order."""
    from inference_app.engine.index import Passage

    rows = Chunk.objects.for_domain(domain).select_related("document").order_by("document_id", "ordinal")
    return [Passage(id=str(c.pk), text=c.text, document=c.document.filename, document_id=str(c.document_id),
                    page=c.page_start, heading_path=tuple(c.heading_path or ())) for c in rows]


def domain_queries(domain: Domain, limit: int = MAX_EVAL_QUERIES) -> list[tuple[str, set[str]]]:
    """The domain's own questions with the chunk that answers them: retrieval examples and approved pairs."""
    from datasets_app.models import QAPair, RetrievalExample

    by_query: dict[str, set[str]] = {}
    live = set(Chunk.objects.for_domain(domain).values_list("pk", flat=True))
    for query, chunk_id in RetrievalExample.objects.for_domain(domain).filter(chunk__isnull=False) \
            .order_by("pk").values_list("query", "chunk_id"):
        if chunk_id in live and query.strip():
            by_query.setdefault(query.strip(), set()).add(str(chunk_id))
    for question, chunk_id in QAPair.objects.for_domain(domain).filter(
            status=QAPair.Status.APPROVED, chunk__isnull=False).order_by("pk").values_list("question", "chunk_id"):
        if chunk_id in live and question.strip():
            by_query.setdefault(question.strip(), set()).add(str(chunk_id))
    return list(by_query.items())[:limit]


def _active_job(domain: Domain, kind: str) -> Job | None:
    return Job.objects.for_domain(domain).active().filter(kind=kind).order_by("-pk").first()


def start_index_build(*, domain: Domain, by=None, reason: str = "") -> Job:
    """Queue a rebuild of the domain's index; a build already queued serves (no second one)."""
    with transaction.atomic():
        index = RetrievalIndex.objects.select_for_update().get(pk=index_for(domain).pk)
        queued = Job.objects.for_domain(domain).filter(kind="index", status=Job.Status.QUEUED).order_by("-pk").first()
        if queued is not None:
            return queued
        job = enqueue_job(domain=domain, kind="index", params={"reason": reason[:200]}, created_by=by)
        RetrievalIndex.objects.filter(pk=index.pk).update(job=job)
    return job


def check_reranker(path: str) -> str:
    path = (path or "").strip()
    if not path:
        return ""
    folder = Path(path).expanduser()
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ValidationError({"reranker": f"{path} is not a cross-encoder folder on this machine (a folder with "
                                           f"config.json)."})
    return str(folder)


def update_index_settings(*, domain: Domain, by, encoder: str | None = None,
                          dense_enabled: bool | None = None, reranker: str | None = None) -> Job | None:
    """Change the embedding model or switch dense retrieval (either rebuilds the index), or the reranker."""
    index = index_for(domain)
    if reranker is not None:
        reranker = check_reranker(reranker)
        if reranker != index.reranker:
            RetrievalIndex.objects.filter(pk=index.pk).update(reranker=reranker)  # used at search time only
    changes = {}
    if encoder is not None:
        encoder = check_encoder_spec(encoder)
        if encoder != index.encoder:
            changes["encoder"] = encoder
    if dense_enabled is not None and bool(dense_enabled) != index.dense_enabled:
        changes["dense_enabled"] = bool(dense_enabled)
    if not changes:
        return None
    RetrievalIndex.objects.filter(pk=index.pk).update(stale=True, **changes)
    return start_index_build(domain=domain, by=by, reason="settings changed")


def refresh_if_built(domain_id: int, reason: str, *, build_anyway: bool = False) -> None:
    """Documents or the active embedding model changed: mark the index stale and rebuild it.

    Document changes rebuild only an index that was built before (a domain still uploading
    builds its first index when someone asks); a new active embedding model always does.
    """
    RetrievalIndex.objects.filter(domain_id=domain_id).update(stale=True)
    index = RetrievalIndex.objects.filter(domain_id=domain_id).select_related("domain").first()
    if index is not None and index.is_built or build_anyway:
        domain = index.domain if index is not None else Domain.objects.get(pk=domain_id)
        if build_anyway and not Chunk.objects.for_domain(domain).exists():
            return
        transaction.on_commit(lambda: start_index_build(domain=domain, reason=reason))


# Searching ----------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_loaded: dict[str, tuple[object, object]] = {}


def loaded_index(index: RetrievalIndex):
    """The engine's index for this row, loaded once per process and reloaded when rebuilt."""
    from inference_app.engine.index import RetrievalIndex as EngineIndex

    path = index.path
    if path is None:
        return None
    manifest = path / "manifest.json"
    # A rebuild renames a new folder into place: a new file, so a new inode and mtime.
    stamp = (manifest.stat().st_ino, manifest.stat().st_mtime_ns) if manifest.exists() else None
    key = str(path)
    with _cache_lock:
        hit = _loaded.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        engine_index = EngineIndex.load(path)
        _loaded[key] = (stamp, engine_index)
        return engine_index


def _encoder_for(index: RetrievalIndex):
    from inference_app.engine.index import load_encoder

    if not index.dense_enabled or not index.built_encoder:
        return None
    return load_encoder(index.built_encoder)


def fusion_weights(index: RetrievalIndex):
    from inference_app.engine.index import FusionWeights

    if not index.dense_enabled or not index.built_encoder:
        return FusionWeights(bm25=1.0, dense=0.0)
    return FusionWeights.from_dict(index.fusion) if index.fusion else FusionWeights()


def search(*, domain: Domain, query: str, k: int = 5, methods=METHODS) -> dict:
    """Top-k chunks per method, with scores and where each chunk sits. A ValidationError says what is wrong."""
    from inference_app.engine.index import EncoderError, RetrievalIndexError

    query = (query or "").strip()
    if not query:
        raise ValidationError({"q": "Type a question to search for."})
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationError({"q": f"The query is longer than {MAX_QUERY_CHARS} characters."})
    if not 1 <= k <= MAX_K:
        raise ValidationError({"k": f"k must be between 1 and {MAX_K}."})
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValidationError({"methods": f"Unknown method(s) {', '.join(unknown)}; use {', '.join(METHODS)}."})
    index = index_for(domain)
    if not index.is_built:
        raise ValidationError({"index": "The domain has no retrieval index yet: build it first."})
    try:
        engine_index = loaded_index(index)
        encoder = _encoder_for(index) if set(methods) & {"dense", "hybrid"} else None
    except (RetrievalIndexError, EncoderError) as exc:
        raise ValidationError({"index": str(exc)}) from None
    weights = fusion_weights(index)
    reranker = None
    if index.reranker and "hybrid" in methods:
        from inference_app.engine.index import load_reranker

        try:
            reranker = load_reranker(index.reranker)
        except EncoderError as exc:
            raise ValidationError({"reranker": str(exc)}) from None
    chunk_ids = set()
    results: dict[str, list] = {}
    for method in methods:
        if method == "dense" and encoder is None:
            results[method] = []
            continue
        if method == "hybrid" and reranker is not None:
            from inference_app.engine.index import rerank

            candidates = engine_index.search(query, max(k, RERANK_CANDIDATES), method=method, encoder=encoder,
                                             weights=weights)
            hits = rerank(query, candidates, engine_index, reranker, top_n=max(k, RERANK_CANDIDATES))[:k]
        else:
            hits = engine_index.search(query, k, method=method, encoder=encoder, weights=weights)
        results[method] = hits
        chunk_ids.update(int(h.id) for h in hits)
    chunks = {c.pk: c for c in Chunk.objects.for_domain(domain).filter(pk__in=chunk_ids).select_related("document")}
    out = {}
    for method, hits in results.items():
        rows = []
        for h in hits:
            chunk = chunks.get(int(h.id))
            passage = engine_index.passage(h.id)
            rows.append({
                "rank": h.rank, "score": round(float(h.score), 6), "chunk_id": int(h.id),
                "document_id": chunk.document_id if chunk else None,
                "document": chunk.document.filename if chunk else passage.document,
                "page": chunk.page_start if chunk else passage.page,
                "heading": " › ".join(chunk.heading_path if chunk else passage.heading_path),
                "text": chunk.text if chunk else passage.text,
                "current": chunk is not None,  # False: the chunk changed since the index was built
            })
        out[method] = rows
    return {"query": query, "k": k, "results": out, "weights": weights.to_dict(),
            "encoder": index.built_encoder if encoder is not None else "", "stale": index.stale,
            "reranker": index.reranker if reranker is not None else ""}


# Comparing embedding models -----------------------------------------------------------------


def resolve_candidate(domain: Domain, spec: str) -> str:
    """``model:<n>`` names an embedding model version of this domain; anything else is a model spec."""
    from training_app.models import ModelVersion, TrainingRun

    spec = (spec or "").strip()
    if spec.startswith("model:"):
        number = spec[6:].lstrip("v")
        version = ModelVersion.objects.for_domain(domain).filter(
            kind=TrainingRun.Kind.EMBEDDING, number=int(number) if number.isdigit() else -1).first()
        folder = version_model_dir(version)
        if folder is None:
            raise ValidationError({"candidates": f"{spec}: no embedding model version {number} with weights on disk."})
        return str(folder)
    return check_encoder_spec(spec, "candidates")


def start_comparison(*, domain: Domain, by, candidates: list[str]) -> EmbeddingComparison:
    cleaned = []
    for spec in candidates:
        spec = (spec or "").strip()
        if spec and spec not in cleaned:
            resolve_candidate(domain, spec)
            cleaned.append(spec)
    if not cleaned:
        raise ValidationError({"candidates": "Name at least one embedding model to compare."})
    if len(cleaned) > MAX_CANDIDATES:
        raise ValidationError({"candidates": f"Compare at most {MAX_CANDIDATES} models at once."})
    if not domain_queries(domain, limit=1):
        raise ValidationError({"candidates": "The domain has no questions linked to a chunk yet (approved QA pairs or "
                                             "retrieval examples): there is nothing to score the models on."})
    with transaction.atomic():
        comparison = EmbeddingComparison.objects.create(
            domain=domain, candidates=cleaned, created_by=by if getattr(by, "is_authenticated", False) else None)
        job = enqueue_job(domain=domain, kind="embedding_compare", params={"comparison_id": comparison.pk},
                          created_by=by)
        EmbeddingComparison.objects.filter(pk=comparison.pk).update(job=job)
        comparison.job = job
    return comparison


def default_candidates(domain: Domain) -> list[str]:
    from training_app.models import ModelVersion, TrainingRun

    index = index_for(domain)
    specs = [EMBEDDED_ENCODER]
    if index.encoder and index.encoder not in specs:
        specs.append(index.encoder)
    for version in ModelVersion.objects.for_domain(domain).filter(kind=TrainingRun.Kind.EMBEDDING)[:3]:
        specs.append(f"model:{version.number}")
    return specs

