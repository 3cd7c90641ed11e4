"""Workflows over QA pairs: review state machine with history, optimistic locking, manual
add, import, bulk actions and teacher keys. Views, the API and the admin all call these."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from datasets_app.models import (
    QADataset,
    QAPair,
    QAPairEvent,
    TeacherConfig,
    TeacherKey,
)
from domains import audit
from domains.models import Chunk, Domain

EDITABLE = ("question", "answer", "held_out")
TRACKED = ("question", "answer", "status", "reject_reason", "held_out", "assigned_to_id", "second_verdict")


class EditConflict(Exception):
    """The pair changed since the editor loaded it; carries the current row so nothing is lost."""

    def __init__(self, current: QAPair, expected: int):
        self.current = current
        self.expected = expected
        super().__init__(
            f"This pair was changed by someone else (version {current.version}, you edited version {expected}). "
            "Reload it, then apply your change again."
        )


class InvalidTransition(ValidationError):
    pass


# Which review actions are allowed from which state.
ACTIONS = {
    "approve": QAPair.Status.APPROVED,
    "reject": QAPair.Status.REJECTED,
    "needs_edit": QAPair.Status.NEEDS_EDIT,
    "reopen": QAPair.Status.PENDING,
}
DONE = {"approve": _("approved"), "reject": _("rejected"), "needs_edit": _("marked as needing an edit"),
        "reopen": _("reopened")}
ALLOWED = {
    QAPair.Status.PENDING: {"approve", "reject", "needs_edit"},
    QAPair.Status.NEEDS_EDIT: {"approve", "reject", "reopen"},
    QAPair.Status.APPROVED: {"reject", "needs_edit", "reopen"},
    QAPair.Status.REJECTED: {"approve", "reopen"},
}


def _snapshot(pair: QAPair, fields=TRACKED) -> dict:
    return {name: getattr(pair, name) for name in fields}


def _diff(before: dict, after: dict) -> tuple[dict, dict]:
    changed = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in changed}, {k: after[k] for k in changed}


def _cas_update(pair: QAPair, expected_version: int | None, by, action: str, note: str = "", **fields) -> QAPair:
    """Write ``fields`` if the pair is still at ``expected_version``; record the event; bump the version."""
    expected = pair.version if expected_version is None else int(expected_version)
    with transaction.atomic():
        current = QAPair.objects.select_for_update().get(pk=pair.pk)
        if current.version != expected:
            raise EditConflict(current, expected)
        before = _snapshot(current)
        for name, value in fields.items():
            setattr(current, name, value)
        after = _snapshot(current)
        old, new = _diff(before, after)
        if not old and not note and action == "edit":
            return current  # nothing changed: no event, no version bump
        updated = QAPair.objects.filter(pk=pair.pk, version=expected).update(
            **fields, version=F("version") + 1, updated_at=timezone.now()
        )
        if not updated:  # databases without row locks (SQLite) still get the compare-and-swap
            raise EditConflict(QAPair.objects.get(pk=pair.pk), expected)
        QAPairEvent.objects.create(pair=current, actor=by if getattr(by, "is_authenticated", False) else None,
                                   action=action, before=old, after=new, note=note[:300])
        current.refresh_from_db()
    return current


def edit_pair(pair: QAPair, *, by, expected_version: int | None, **changes) -> QAPair:
    """Change question / answer / held-out. A pair waiting for an edit goes back to pending."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    for name in ("question", "answer"):
        if name in changes:
            changes[name] = (changes[name] or "").strip()
            if not changes[name]:
                raise ValidationError({name: _("This field cannot be empty.")})
    if pair.status == QAPair.Status.NEEDS_EDIT and ({"question", "answer"} & set(changes)):
        changes["status"] = QAPair.Status.PENDING
    return _cas_update(pair, expected_version, by, "edit", **changes)


def review_pair(pair: QAPair, *, by, action: str, expected_version: int | None = None, reason: str = "",
                question: str | None = None, answer: str | None = None, audited: bool = True) -> QAPair:
    """Apply a review action (optionally with an edit in the same step, e.g. "edit and approve").
    ``audited``: write the domain's audit log (a bulk review writes one line for all)."""
    pair = _review_pair(pair, by=by, action=action, expected_version=expected_version, reason=reason,
                        question=question, answer=answer)
    if audited:
        audit.record(domain=pair.domain_id, by=by, action="pair.review", target=f"pair #{pair.pk}",
                     summary=f"{action}: {pair.question[:80]}", review=action, reason=reason[:300])
    return pair


def _review_pair(pair: QAPair, *, by, action: str, expected_version: int | None, reason: str,
                 question: str | None, answer: str | None) -> QAPair:
    if action not in ACTIONS:
        raise ValueError(f"unknown review action {action!r}")
    reason = (reason or "").strip()
    if action == "reject" and not reason:
        raise ValidationError({"reason": _("Say why the pair is rejected.")})
    dataset = pair.dataset
    fields: dict = {}
    if question is not None:
        fields["question"] = question.strip()
    if answer is not None:
        fields["answer"] = answer.strip()
    if any(not v for v in fields.values()):
        raise ValidationError(_("Question and answer cannot be empty."))
    target = ACTIONS[action]
    second = (
        dataset.double_review
        and action in ("approve", "reject")
        and pair.status in (QAPair.Status.APPROVED, QAPair.Status.REJECTED)
        and pair.reviewed_by_id is not None
        and pair.reviewed_by_id != getattr(by, "pk", None)
        and not pair.second_verdict
    )
    if second:
        # The second reviewer's verdict is recorded beside the first; agreement is shown.
        return _cas_update(pair, expected_version, by, "second_review", reason,
                           second_reviewed_by=by, second_verdict=target, **fields)
    if expected_version is not None and int(expected_version) != pair.version:
        # Someone changed it since this reviewer loaded it: a conflict to show, not a bad transition.
        raise EditConflict(pair, int(expected_version))
    if action not in ALLOWED[QAPair.Status(pair.status)]:
        raise InvalidTransition(
            _("A pair that is %(state)s cannot be %(action)s.")
            % {"state": pair.get_status_display().lower(), "action": DONE[action]}
        )
    fields.update(status=target, reject_reason=reason if action in ("reject", "needs_edit") else "")
    if action == "reopen":
        fields.update(reviewed_by=None, reviewed_at=None, second_reviewed_by=None, second_verdict="")
    else:
        fields.update(reviewed_by=by, reviewed_at=timezone.now(), second_reviewed_by=None, second_verdict="")
    return _cas_update(pair, expected_version, by, action, reason, **fields)


def bulk_review(pairs, *, by, action: str = "approve") -> int:
    """Approve (or reject / mark) the *pending* pairs of a filtered queryset; returns how many changed.

    Pairs someone already decided on are left alone: a bulk action never overrides a review.
    """
    changed = 0
    for pair in pairs.filter(status=QAPair.Status.PENDING).select_related("dataset").order_by("pk"):
        try:
            review_pair(pair, by=by, action=action, expected_version=pair.version, reason="bulk", audited=False)
        except EditConflict:
            continue  # someone else is on it; leave theirs
        changed += 1
        domain_id = pair.domain_id
    if changed:
        audit.record(domain=domain_id, by=by, action="pair.bulk_review", summary=f"{action}: {changed} pair(s)",
                     review=action, count=changed)
    return changed


def assign_pairs(pairs, *, to, by) -> int:
    """Give pairs to a reviewer (or take them back with ``to=None``)."""
    if to is not None and not to.memberships.filter(domain_id=pairs.values("domain_id")[:1]).exists():
        raise ValidationError(_("Pairs can only be assigned to members of the domain."))
    changed = 0
    for pair in pairs.order_by("pk"):
        if pair.assigned_to_id == (to.pk if to else None):
            continue
        try:
            _cas_update(pair, pair.version, by, "assign", assigned_to=to)
        except EditConflict:
            continue
        changed += 1
    return changed


def add_pair(*, dataset: QADataset, by, question: str, answer: str, chunk: Chunk | None = None,
             held_out: bool = False, approve: bool = False, source: str = QAPair.Source.MANUAL,
             history=()) -> QAPair:
    """An expert's own pair (optionally approved at once); ``history`` makes it a multi-turn example
    (the [user, assistant] turns before the question)."""
    question, answer = (question or "").strip(), (answer or "").strip()
    if not question or not answer:
        raise ValidationError(_("Question and answer cannot be empty."))
    history = [[str(u).strip(), str(a).strip()] for u, a in history or ()]
    if any(not u or not a for u, a in history):
        raise ValidationError(_("Every earlier turn needs a question and an answer."))
    if chunk is not None and chunk.domain_id != dataset.domain_id:
        raise PermissionDenied("chunk of another domain")
    now = timezone.now()
    with transaction.atomic():
        pair = QAPair.objects.create(
            domain_id=dataset.domain_id, dataset=dataset, question=question, answer=answer, chunk=chunk,
            document_id=chunk.document_id if chunk else None, source_text=chunk.text if chunk else "",
            source=source, held_out=held_out, created_by=by, history=history,
            status=QAPair.Status.APPROVED if approve else QAPair.Status.PENDING,
            reviewed_by=by if approve else None, reviewed_at=now if approve else None,
        )
        QAPairEvent.objects.create(pair=pair, actor=by, action="create", after=_snapshot(pair))
    return pair


@dataclass
class ImportOutcome:
    created: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    file_error: str = ""


def _import_key(question: str, answer: str, history=()) -> str:
    text = f"import\0{question.strip()}\0{answer.strip()}"
    if history:  # a conversation is its own example, even when it ends like another
        text += "\0" + json.dumps([list(t) for t in history], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# What a dataset can import: the QA formats, and the example formats the exports write.
IMPORT_FORMATS = {
    "auto": _("QA pairs: CSV, TSV, JSONL or XLSX (Alpaca for .json, ShareGPT when the name says so)"),
    "alpaca": _("QA pairs: Alpaca JSON/JSONL"),
    "sharegpt": _("QA pairs: ShareGPT messages JSONL"),
    "st-pairs": _("Retrieval: sentence-transformers pairs JSONL"),
    "st-triplets": _("Retrieval: sentence-transformers triplets JSONL"),
    "st-scored": _("Retrieval: sentence-transformers scored pairs JSONL"),
    "flagembedding": _("Retrieval: FlagEmbedding query/pos/neg JSONL"),
    "entities": _("Entities: CLUENER JSONL"),
    "judge": _("Judge: ShareGPT JSONL (think format)"),
}


def _digest(*parts) -> str:
    import json

    return hashlib.sha256(json.dumps(["import", *parts], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def _qa_result(data: bytes, filename: str, fmt: str):
    from datasets_app.engine.formats import import_alpaca, import_qa, import_sharegpt

    lower = filename.lower()
    if fmt == "alpaca" or (fmt == "auto" and (lower.endswith(".json") or "alpaca" in lower)):
        return import_alpaca(data)
    if fmt == "sharegpt" or (fmt == "auto" and "sharegpt" in lower):
        return import_sharegpt(data)
    return import_qa(data, filename)


def _judge_result(data: bytes):
    """Judge rows are ShareGPT messages whose last assistant turn ends with the label after </think>."""
    import json

    from datasets_app.engine.formats import ImportResult, RowError, decode_text
    from datasets_app.engine.judge_data import parse_judge_label

    text, error = decode_text(data)
    if text is None:
        return ImportResult(file_error=error or "not a text file")
    rows, errors = [], []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            messages = obj["messages"]
            roles = [m["role"] for m in messages]
            contents = [m["content"] for m in messages]
        except (ValueError, KeyError, TypeError):
            errors.append(RowError(no, "expected {\"messages\": [{\"role\", \"content\"}, …]}"))
            continue
        label = parse_judge_label(contents[-1]) if roles and roles[-1] == "assistant" else None
        if label is None or "user" not in roles:
            errors.append(RowError(no, "the last message must be the assistant's, ending with a label after </think>"))
            continue
        rows.append({"messages": messages, "label": label, "question": contents[roles.index("user")],
                     "analysis": contents[-1]})
    if not rows and errors and len(errors) == len([x for x in text.splitlines() if x.strip()]):
        return ImportResult(errors=tuple(errors), file_error="no line of this file is a judge example")
    return ImportResult(records=tuple(rows), errors=tuple(errors))


def _create_once(model, key: str, **fields) -> bool:
    try:
        with transaction.atomic():
            model.objects.create(origin_key=key, **fields)
    except IntegrityError:
        return False
    return True


def import_file(*, dataset: QADataset, by, data: bytes, filename: str, fmt: str = "auto",
                approve: bool = False) -> ImportOutcome:
    """Import QA pairs or examples in any format the exports write. Re-importing a file adds nothing twice."""
    from datasets_app.engine import formats
    from datasets_app.models import EntityExample, JudgeExample, RetrievalExample

    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"unknown import format {fmt!r}; use one of {', '.join(IMPORT_FORMATS)}")
    if fmt.startswith("st-"):
        result = formats.import_sentence_transformers(data, fmt[3:])
    elif fmt == "flagembedding":
        result = formats.import_flagembedding(data)
    elif fmt == "entities":
        result = formats.import_cluener(data)
    elif fmt == "judge":
        result = _judge_result(data)
    else:
        result = _qa_result(data, filename, fmt)
    outcome = ImportOutcome(errors=[(e.line, e.reason) for e in result.errors], file_error=result.file_error or "")
    if result.file_error:
        return outcome
    now = timezone.now()
    common = {"domain_id": dataset.domain_id, "dataset": dataset}
    for record in result.records:
        if fmt.startswith("st-") or fmt == "flagembedding":
            negatives = [list(n) for n in record.negatives]
            created = _create_once(RetrievalExample, _digest(record.query, record.positive_text, negatives, record.score),
                                   query=record.query, positive_text=record.positive_text, negatives=negatives,
                                   score=record.score, **common)
        elif fmt == "entities":
            spans = [{"label": s.label, "start": s.start, "end": s.end, "mention": s.mention} for s in record.spans]
            created = _create_once(EntityExample, _digest(record.text, spans), text=record.text, spans=spans,
                                   teacher_label=f"import: {filename}"[:200], **common)
        elif fmt == "judge":
            created = _create_once(JudgeExample, _digest(record["messages"]), question=record["question"],
                                   passage="", analysis=record["analysis"], label=record["label"],
                                   messages=record["messages"], teacher_label=f"import: {filename}"[:200], **common)
        else:
            created = False
            try:
                with transaction.atomic():
                    pair = QAPair.objects.create(
                        question=record.question.strip(), answer=record.answer.strip(), source=QAPair.Source.IMPORT,
                        history=[[u, a] for u, a in record.history],
                        teacher_label=f"import: {filename}"[:200], held_out=record.held_out,
                        source_text=record.chunk_text or "", origin_key=_import_key(record.question, record.answer, record.history),
                        created_by=by, status=QAPair.Status.APPROVED if approve else QAPair.Status.PENDING,
                        reviewed_by=by if approve else None, reviewed_at=now if approve else None, **common,
                    )
                    QAPairEvent.objects.create(pair=pair, actor=by, action="import", after=_snapshot(pair),
                                               note=filename[:300])
                    created = True
            except IntegrityError:
                pass
        if created:
            outcome.created += 1
        else:
            outcome.duplicates += 1
    return outcome


def import_pairs(*, dataset: QADataset, by, data: bytes, filename: str, approve: bool = False) -> ImportOutcome:
    """Import QA pairs from CSV / JSONL / XLSX / Alpaca / ShareGPT (the format guessed from the name)."""
    return import_file(dataset=dataset, by=by, data=data, filename=filename, fmt="auto", approve=approve)


# Recipes -------------------------------------------------------------------------------------


def start_recipe(*, dataset: QADataset, recipe: str, teacher: TeacherConfig | None, by, per_chunk: int = 3,
                 variants: int = 3, document_ids=()):
    """Queue a recipe job on a dataset (teacher None = the built-in offline teacher)."""
    from datasets_app.tasks import RECIPE_KINDS
    from domains.jobs import enqueue_job

    if teacher is not None and teacher.domain_id != dataset.domain_id:
        raise PermissionDenied("teacher of another domain")
    return enqueue_job(
        domain=dataset.domain,
        kind=RECIPE_KINDS[recipe],
        params={
            "dataset_id": dataset.pk,
            "teacher_id": teacher.pk if teacher else None,
            "per_chunk": int(per_chunk),
            "variants": int(variants),
            "document_ids": sorted(set(document_ids)),
        },
        created_by=by,
    )


# Teachers ------------------------------------------------------------------------------------


def add_teacher_key(*, teacher: TeacherConfig, label: str, secret: str, by) -> TeacherKey:
    key = TeacherKey(teacher=teacher, label=(label or "").strip() or _("key"), created_by=by)
    key.set_secret(secret)
    key.save()
    audit.record(domain=teacher.domain_id, by=by, action="teacher_key.add", target=f"{teacher.name}: {key.label}")
    return key


def default_teacher(domain: Domain) -> TeacherConfig | None:
    """The teacher recipes use unless told otherwise; None means the built-in offline teacher."""
    return TeacherConfig.objects.for_domain(domain).filter(is_default=True).first()


def set_default_teacher(teacher: TeacherConfig | None, *, domain: Domain) -> None:
    with transaction.atomic():
        TeacherConfig.objects.for_domain(domain).update(is_default=False)
        if teacher is not None:
            TeacherConfig.objects.filter(pk=teacher.pk).update(is_default=True)


def mark_stale(*, domain_id: int, chunk_ids, reason: str) -> int:
    """Flag the datasets whose pairs came from removed chunks (their reviewed pairs are kept)."""
    dataset_ids = set(QAPair.objects.filter(chunk_id__in=list(chunk_ids)).values_list("dataset_id", flat=True))
    if not dataset_ids:
        return 0
    return QADataset.objects.filter(pk__in=dataset_ids, domain_id=domain_id).update(
        stale_since=timezone.now(), stale_reason=reason[:300]
    )
