"""Freezing a dataset into an immutable DatasetVersion, and exporting versions in training formats.

A version's files are written once under ``<data>/domains/<slug>/datasets/<hash>/`` (temp
folder, renamed when whole) and every download is derived from them, so what a training run
reads is exactly what the version's hash says.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils.translation import gettext_lazy as _

from datasets_app.models import (
    DatasetVersion,
    EntityExample,
    JudgeExample,
    QADataset,
    QAPair,
    RetrievalExample,
)
from domains.models import Chunk

SPLITS = ("train", "validation", "test")
KINDS = ("qa", "retrieval", "entities", "judge")


def trainable_pairs(dataset: QADataset):
    """Approved pairs; with double review, only those the second reviewer approved too."""
    qs = QAPair.objects.filter(dataset=dataset, status=QAPair.Status.APPROVED)
    if dataset.double_review:
        qs = qs.filter(Q(second_verdict=QAPair.Status.APPROVED))
    return qs


def qa_record(pair: QAPair):
    from datasets_app.engine.formats import QARecord

    chunk = pair.chunk
    return QARecord(
        question=pair.question, answer=pair.answer,
        source_chunk_id=str(pair.chunk_id) if pair.chunk_id else None, chunk_text=pair.source_text,
        document=pair.document.filename if pair.document_id else "",
        heading_path=tuple(chunk.heading_path or ()) if chunk else (), held_out=pair.held_out,
        tags=tuple(t for t in (pair.source, pair.rule) if t), group=f"pair-{pair.parent_id or pair.pk}",
        history=tuple((str(u), str(a)) for u, a in (pair.history or ())),
    )


def _entity_split(text: str, seed: int, validation_fraction: float) -> str:
    h = int(hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "validation" if h < validation_fraction else "train"


@dataclass(frozen=True)
class FreezeOutcome:
    version: DatasetVersion
    created: bool


def freeze_dataset(*, dataset: QADataset, by=None, note: str = "", seed: int = 0,
                   validation_fraction: float = 0.05, test_fraction: float = 0.0) -> FreezeOutcome:
    """Snapshot the approved data. Freezing unchanged data again returns the existing version."""
    from datasets_app.engine import versioning
    from datasets_app.engine.formats import EntityRecord, EntitySpan, RetrievalRecord

    pairs = list(trainable_pairs(dataset).select_related("chunk", "document").order_by("pk"))
    if not pairs:
        raise ValueError("There are no approved pairs to freeze yet; approve some in the review queue first.")
    config = versioning.SplitConfig(seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction)
    records = {p.pk: qa_record(p) for p in pairs}
    frozen = versioning.freeze(records.values(), config,
                               chunks_total=Chunk.objects.for_domain(dataset.domain).count())
    group_split = versioning.assign_splits(list(records.values()), config)
    pair_split = {pk: group_split[versioning.group_key(r)] for pk, r in records.items()}

    rows: dict[str, dict[str, list]] = {k: {s: [] for s in SPLITS} for k in KINDS}
    for name, recs in frozen.splits.items():
        rows["qa"][name] = list(recs)
    # Examples made from a pair follow its split (a held-out question stays out of training in every
    # form); imported examples with no pair are split by a seeded hash of their text.
    def split_of(ex, text: str) -> str:
        return pair_split[ex.pair_id] if ex.pair_id else _entity_split(text, seed, validation_fraction)

    linked = Q(pair_id__in=list(records)) | Q(pair__isnull=True)
    for ex in RetrievalExample.objects.filter(linked, dataset=dataset).order_by("pk"):
        rows["retrieval"][split_of(ex, ex.query)].append(RetrievalRecord(
            ex.query, str(ex.chunk_id or ""), ex.positive_text, tuple(tuple(n) for n in ex.negatives), ex.score))
    for ex in JudgeExample.objects.filter(linked, dataset=dataset).order_by("pk"):
        rows["judge"][split_of(ex, ex.question)].append({"messages": ex.messages, "label": ex.label})
    for ex in EntityExample.objects.filter(dataset=dataset, approved=True).order_by("pk"):
        spans = tuple(EntitySpan(s["label"], int(s["start"]), int(s["end"]), s["mention"]) for s in ex.spans)
        rows["entities"][_entity_split(ex.text, seed, validation_fraction)].append(EntityRecord(ex.text, spans))

    all_rows = [(kind, split, versioning.canonical_json(r)) for kind in KINDS for split in SPLITS
                for r in rows[kind][split]]
    digest = hashlib.sha256(f"{frozen.version_hash}\n".encode())
    for line in sorted(f"{k}\0{s}\0{j}" for k, s, j in all_rows):
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    full_hash = digest.hexdigest()

    existing = DatasetVersion.objects.filter(dataset=dataset, version_hash=full_hash).first()
    if existing is not None and existing.path.exists():
        return FreezeOutcome(existing, False)

    rel = os.path.join("domains", dataset.domain.slug, "datasets", full_hash[:24])
    final = settings.VSM_DATA_DIR / rel
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".freeze-", dir=final.parent)
        try:
            for kind in KINDS:
                os.makedirs(os.path.join(tmp, kind))
                for split in SPLITS:
                    with open(os.path.join(tmp, kind, f"{split}.jsonl"), "w", encoding="utf-8") as fh:
                        fh.write(versioning.records_to_jsonl(rows[kind][split]))
            counts = {k: {s: len(rows[k][s]) for s in SPLITS} for k in KINDS}
            manifest = {**frozen.manifest(), "version_hash": full_hash, "qa_version_hash": frozen.version_hash,
                        "counts": counts, "dataset": dataset.name, "domain": dataset.domain.slug}
            with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, ensure_ascii=False, indent=2, sort_keys=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    counts = {k: {s: len(rows[k][s]) for s in SPLITS} for k in KINDS}
    with transaction.atomic():
        if existing is not None:  # its folder was lost; the row stays, the files are back
            return FreezeOutcome(existing, False)
        number = (DatasetVersion.objects.filter(dataset=dataset).aggregate(n=Max("number"))["n"] or 0) + 1
        version = DatasetVersion.objects.create(
            domain=dataset.domain, dataset=dataset, number=number, name=note[:200], content_hash=frozen.content_hash,
            version_hash=full_hash, split_config=dataclasses.asdict(config),
            stats=dataclasses.asdict(frozen.stats), counts=counts, storage_path=rel, created_by=by,
        )
    return FreezeOutcome(version, True)


# Reading a version back ----------------------------------------------------------------------


class VersionFilesMissing(Exception):
    pass


def _read(version: DatasetVersion, kind: str, split: str) -> list[dict]:
    path = version.path / kind / f"{split}.jsonl"
    if not path.exists():
        raise VersionFilesMissing(
            f"The files of {version} are missing from {version.path}; restore the data folder from a backup.")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or all")
    return (split,)


def load_qa(version: DatasetVersion, split: str = "train"):
    from datasets_app.engine.formats import QARecord

    out = []
    for s in _splits(split):
        for row in _read(version, "qa", s):
            out.append(QARecord(**{**row, "heading_path": tuple(row.get("heading_path") or ()),
                                   "tags": tuple(row.get("tags") or ()),
                                   "history": tuple(tuple(t) for t in row.get("history") or ())}))
    return out


def load_retrieval(version: DatasetVersion, split: str = "train"):
    from datasets_app.engine.formats import RetrievalRecord

    return [RetrievalRecord(r["query"], r["positive_id"], r["positive_text"],
                            tuple(tuple(n) for n in r.get("negatives") or ()), r.get("score"))
            for s in _splits(split) for r in _read(version, "retrieval", s)]


def load_entities(version: DatasetVersion, split: str = "train"):
    from datasets_app.engine.formats import EntityRecord, EntitySpan

    return [EntityRecord(r["text"], tuple(EntitySpan(**sp) for sp in r.get("spans") or ()))
            for s in _splits(split) for r in _read(version, "entities", s)]


def load_judge(version: DatasetVersion, split: str = "train") -> list[dict]:
    return [r for s in _splits(split) for r in _read(version, "judge", s)]


# Exports -------------------------------------------------------------------------------------

EXPORT_FORMATS = {
    "alpaca": _("Alpaca JSONL"),
    "sharegpt": _("ShareGPT messages JSONL"),
    "llamafactory": _("LLaMA-Factory folder (zip: ShareGPT + Alpaca + dataset_info.json)"),
    "qa-jsonl": _("VSM QA JSONL (every field)"),
    "st-pairs": _("sentence-transformers pairs JSONL"),
    "st-triplets": _("sentence-transformers triplets JSONL"),
    "st-scored": _("sentence-transformers scored pairs JSONL"),
    "flagembedding": _("FlagEmbedding query/pos/neg JSONL"),
    "entities": _("Entity JSONL (CLUENER)"),
    "judge": _("Judge ShareGPT JSONL (think format)"),
}


@dataclass(frozen=True)
class Export:
    filename: str
    content_type: str
    data: bytes


def export_version(version: DatasetVersion, fmt: str, split: str = "train") -> Export:
    """One download of a version in a training format."""
    from datasets_app.engine import formats

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    base = f"{version.domain.slug}-v{version.number}-{split}"
    jsonl = "application/x-ndjson; charset=utf-8"
    if fmt == "alpaca":
        text = formats.export_alpaca(load_qa(version, split))
    elif fmt == "sharegpt":
        text = formats.export_sharegpt(load_qa(version, split))
    elif fmt == "qa-jsonl":
        text = formats.export_qa_jsonl(load_qa(version, split))
    elif fmt.startswith("st-"):
        kind = fmt[3:]
        recs = load_retrieval(version, split)
        if kind == "scored":  # positive 1.0; each mined negative 0.0
            rows = []
            for r in recs:
                rows.append(r)
                rows.extend(formats.RetrievalRecord(r.query, nid, ntext, (), 0.0) for nid, ntext in r.negatives)
            recs = rows
        text = formats.export_sentence_transformers(recs, kind)
    elif fmt == "flagembedding":
        text = formats.export_flagembedding(load_retrieval(version, split))
    elif fmt == "entities":
        text = formats.export_cluener(load_entities(version, split))
    elif fmt == "judge":
        text = "".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n"
                       for r in load_judge(version, split))
    else:  # llamafactory
        records = load_qa(version, split)
        buf = io.BytesIO()
        info = {}
        info.update(formats.llamafactory_dataset_info(f"{version.domain.slug}_sharegpt", "sharegpt.jsonl"))
        info.update(formats.llamafactory_dataset_info(f"{version.domain.slug}_alpaca", "alpaca.jsonl",
                                                      formatting="alpaca", with_system=False))
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("sharegpt.jsonl", formats.export_sharegpt(records))
            zf.writestr("alpaca.jsonl", formats.export_alpaca(records))
            zf.writestr("dataset_info.json", json.dumps(info, ensure_ascii=False, indent=2))
        return Export(f"{base}-llamafactory.zip", "application/zip", buf.getvalue())
    return Export(f"{base}-{fmt}.jsonl", jsonl, text.encode("utf-8"))
