"""Workflows across models, shared by the browser views and the API (keyword-only functions)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from domains import audit, storage
from domains.jobs import enqueue_job
from domains.models import ApiKey, Document, Domain, Job, Membership, Role
from domains.signals import chunks_removed


@transaction.atomic
def create_domain(*, owner, slug: str, name: str, description: str = "", language: str = "zh",
                  model_hub: str = "") -> Domain:
    """Create a domain with its creator as owner."""
    if Domain.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": _("A domain with this slug already exists.")})
    domain = Domain(slug=slug, name=name, description=description, language=language, model_hub=model_hub)
    domain.full_clean()
    domain.save()
    Membership.objects.create(domain=domain, user=owner, role=Role.OWNER)
    return domain


def find_user(identifier: str):
    """A user by username or e-mail address (case-insensitive), or ValidationError."""
    identifier = (identifier or "").strip()
    users = get_user_model().objects.filter(Q(username__iexact=identifier) | Q(email__iexact=identifier))
    if not identifier or users.count() != 1:
        raise ValidationError({"user": _("No single user has the username or e-mail %(id)s.") % {"id": identifier}})
    return users.get()


@transaction.atomic
def add_member(*, domain: Domain, user_identifier: str, role: str, by=None) -> Membership:
    user = find_user(user_identifier)
    if role not in Role.values:
        raise ValidationError({"role": _("Unknown role %(role)s.") % {"role": role}})
    if Membership.objects.filter(domain=domain, user=user).exists():
        raise ValidationError({"user": _("%(user)s is already a member.") % {"user": user.username}})
    membership = Membership.objects.create(domain=domain, user=user, role=role)
    audit.record(domain=domain, by=by, action="member.add", target=user.username, summary=f"as {role}", role=role)
    return membership


def _other_owners(membership: Membership) -> bool:
    return (
        Membership.objects.filter(domain=membership.domain, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    )


@transaction.atomic
def change_role(*, membership: Membership, role: str, by=None) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": _("Unknown role %(role)s.") % {"role": role}})
    # Lock the domain's owner rows so two concurrent demotions cannot leave it ownerless.
    list(Membership.objects.select_for_update().filter(domain=membership.domain, role=Role.OWNER))
    if membership.role == Role.OWNER and role != Role.OWNER and not _other_owners(membership):
        raise ValidationError({"role": _("A domain needs at least one owner.")})
    before = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit.record(domain=membership.domain, by=by, action="member.role", target=membership.user.username,
                 summary=f"{before} → {role}", before=before, after=role)
    return membership


@transaction.atomic
def remove_member(*, membership: Membership, by=None) -> None:
    list(Membership.objects.select_for_update().filter(domain=membership.domain, role=Role.OWNER))
    if membership.role == Role.OWNER and not _other_owners(membership):
        raise ValidationError({"user": _("A domain needs at least one owner.")})
    audit.record(domain=membership.domain, by=by, action="member.remove", target=membership.user.username,
                 summary=f"was {membership.role}", role=membership.role)
    membership.delete()


def issue_api_key(*, domain: Domain, name: str, scope: str, created_by) -> tuple[ApiKey, str]:
    """Create a key; the returned secret is shown to the owner once and never stored."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": _("Give the key a name, e.g. the system that will use it.")})
    if scope not in ApiKey.Scope.values:
        raise ValidationError({"scope": _("Unknown scope %(scope)s.") % {"scope": scope}})
    key, secret = ApiKey.issue(domain=domain, name=name, scope=scope, created_by=created_by)
    audit.record(domain=domain, by=created_by, action="key.create", target=str(key), summary=f"scope {scope}",
                 scope=scope, prefix=key.prefix)
    return key, secret


def revoke_api_key(*, key: ApiKey, by) -> ApiKey:
    if key.revoked_at is None:
        key.revoke()
        audit.record(domain=key.domain_id, by=by, action="key.revoke", target=str(key), prefix=key.prefix)
    return key


SELFCHECK_MAX_STEPS = 1000
SELFCHECK_MAX_STEP_SECONDS = 60.0


def start_selfcheck(*, domain: Domain, created_by, steps: int = 10, step_seconds: float = 0.5) -> Job:
    """Queue a worker check: a job of N short steps that shows the queue and progress working."""
    try:
        steps, step_seconds = int(steps), float(step_seconds)
    except (TypeError, ValueError):
        raise ValidationError({"steps": _("Steps and step seconds must be numbers.")}) from None
    if not 1 <= steps <= SELFCHECK_MAX_STEPS:
        raise ValidationError({"steps": _("Steps must be between 1 and %(max)d.") % {"max": SELFCHECK_MAX_STEPS}})
    if not 0 <= step_seconds <= SELFCHECK_MAX_STEP_SECONDS:
        raise ValidationError({"step_seconds": _("Step seconds must be between 0 and 60.")})
    return enqueue_job(
        domain=domain, kind="selfcheck", params={"steps": steps, "step_seconds": step_seconds}, created_by=created_by
    )


# Documents ----------------------------------------------------------------------------------


@dataclass
class UploadOutcome:
    """What happened to one uploaded file, in words for the person who uploaded it."""

    filename: str
    document: Document | None = None
    created: bool = False
    error: str = ""

    @property
    def duplicate(self) -> bool:
        return self.document is not None and not self.created


def _ingest_config_limits() -> dict:
    return {"max_bytes": settings.VSM_MAX_UPLOAD_MB * 1024 * 1024, "max_pages": settings.VSM_MAX_PDF_PAGES}


def upload_documents(*, domain: Domain, files, uploaded_by, oversized=()) -> list[UploadOutcome]:
    """Store each file once per domain (by content hash) and queue its ingestion.

    The type is sniffed from the bytes; a file that cannot be read becomes a Document with
    the reason, so the person sees why. The same content uploaded again is the existing
    Document, and the outcome says so.
    """
    from domains.engine.config import IngestConfig
    from domains.engine.errors import LoadError
    from domains.engine.sniff import sniff

    limit_mb = settings.VSM_MAX_UPLOAD_MB
    outcomes = [
        UploadOutcome(name, error=_("%(name)s is larger than the %(mb)d MB limit.") % {"name": name, "mb": limit_mb})
        for name in oversized
    ]
    config = IngestConfig(**_ingest_config_limits())
    for upload in files:
        name = os.path.basename(upload.name or "document")[:255] or "document"
        try:
            path, sha, size = storage.store_by_hash(domain.slug, upload, max_bytes=limit_mb * 1024 * 1024)
        except storage.FileTooLarge:
            outcomes.append(UploadOutcome(
                name, error=_("%(name)s is larger than the %(mb)d MB limit.") % {"name": name, "mb": limit_mb}
            ))
            continue
        existing = Document.objects.filter(domain=domain, content_hash=sha).first()
        if existing:
            outcomes.append(UploadOutcome(name, document=existing))
            continue
        kind, error, code = "", "", ""
        try:
            kind = sniff(path, config, name=name)
        except LoadError as exc:
            error, code = exc.message, exc.code
        try:
            with transaction.atomic():
                document = Document.objects.create(
                    domain=domain, filename=name, content_hash=sha, size_bytes=size, kind=kind,
                    storage_path=storage.relative(path), uploaded_by=uploaded_by if uploaded_by.is_authenticated else None,
                    status=Document.Status.FAILED if error else Document.Status.PENDING, error=error, error_code=code,
                )
                if not error:
                    _queue_ingest(document, uploaded_by)
        except IntegrityError:  # the same file uploaded at the same moment by someone else
            outcomes.append(UploadOutcome(name, document=Document.objects.get(domain=domain, content_hash=sha)))
            continue
        outcomes.append(UploadOutcome(name, document=document, created=True))
    return outcomes


def _queue_ingest(document: Document, by) -> Job:
    job = enqueue_job(domain=document.domain, kind="ingest", params={"document_id": document.pk}, created_by=by)
    Document.objects.filter(pk=document.pk).update(last_job=job)
    document.last_job = job
    return job


@transaction.atomic
def reingest_document(*, document: Document, by) -> Job:
    """Read the document again from its stored file (after a fix, or with new OCR settings)."""
    if document.last_job_id and Job.objects.filter(pk=document.last_job_id).active().exists():
        raise ValidationError({"document": _("This document is already being processed.")})
    if not document.path or not document.path.exists():
        raise ValidationError({"document": _("The stored file is missing; upload the document again.")})
    Document.objects.filter(pk=document.pk).update(status=Document.Status.PENDING, error="", error_code="")
    document.status = Document.Status.PENDING
    return _queue_ingest(document, by)


def delete_document(*, document: Document) -> None:
    """Remove a document, its pages and chunks, and its file; datasets built on it are told."""
    path = document.path
    with transaction.atomic():
        chunk_ids = list(document.chunks.values_list("pk", flat=True))
        chunks_removed.send(sender=Document, document=document, chunk_ids=chunk_ids)
        document.delete()
    if path is not None:
        transaction.on_commit(lambda: path.unlink(missing_ok=True))


@transaction.atomic
def update_chunking(*, domain: Domain, target_chars: int, overlap_chars: int, by) -> Job | None:
    """Change the domain's chunk size and overlap, and re-chunk its documents as a job."""
    domain.chunk_target_chars, domain.chunk_overlap_chars = int(target_chars), int(overlap_chars)
    if domain.chunk_overlap_chars >= domain.chunk_target_chars:
        raise ValidationError({"chunk_overlap_chars": _("The overlap must be smaller than the chunk size.")})
    domain.full_clean()
    domain.save(update_fields=["chunk_target_chars", "chunk_overlap_chars"])
    if not Document.objects.for_domain(domain).filter(status=Document.Status.READY).exists():
        return None
    return enqueue_job(domain=domain, kind="rechunk", created_by=by)
