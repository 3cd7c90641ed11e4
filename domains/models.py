"""The tenant (Domain), who may act in it (Membership, ApiKey) and its long work (Job)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class DomainQuerySet(models.QuerySet):
    def for_user(self, user) -> DomainQuerySet:
        """Domains the user is a member of (the only ones they may see)."""
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)


class Domain(models.Model):
    """One knowledge domain: the tenant every other row belongs to."""

    class Language(models.TextChoices):
        ZH = "zh", _("Chinese")
        EN = "en", _("English")

    slug = models.SlugField(
        _("slug"),
        max_length=60,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9-]*$", _("Use lower-case letters, digits and hyphens."))],
        help_text=_("Short name used in URLs, e.g. finance-reimbursement."),
    )
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    language = models.CharField(_("language"), max_length=2, choices=Language.choices, default=Language.ZH)
    # Chunking, per domain (defaults from the field: 2,000 characters with 200 of overlap).
    chunk_target_chars = models.PositiveIntegerField(
        _("chunk size (characters)"), default=2000, validators=[MinValueValidator(200), MaxValueValidator(20000)]
    )
    chunk_overlap_chars = models.PositiveIntegerField(
        _("chunk overlap (characters)"), default=200, validators=[MaxValueValidator(5000)]
    )
    model_hub = models.CharField(
        _("model hub"), max_length=12, blank=True, default="",
        choices=[("", _("default (VSM_MODEL_HUB)")), ("huggingface", "Hugging Face"), ("modelscope", "ModelScope")],
        help_text=_("Where a bare model id such as qwen/Qwen2.5-0.5B-Instruct is fetched from for this domain."),
    )
    demo_mode = models.BooleanField(
        _("demo mode"), default=False,
        help_text=_("The pipeline approved this domain's QA pairs automatically, without expert review."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    objects = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = _("domain")
        verbose_name_plural = _("domains")
        constraints = [
            models.CheckConstraint(condition=Q(language__in=["zh", "en"]), name="domain_language_valid"),
            models.CheckConstraint(
                condition=Q(chunk_overlap_chars__lt=F("chunk_target_chars")), name="domain_overlap_below_size"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("domain-dashboard", args=[self.slug])

    @property
    def data_dir(self):
        """This domain's folder for artifacts under VSM_DATA_DIR."""
        return settings.VSM_DATA_DIR / "domains" / self.slug


class Role(models.TextChoices):
    """A member's role; later roles include everything earlier ones may do."""

    VIEWER = "viewer", _("Viewer")
    EXPERT = "expert", _("Expert")
    OWNER = "owner", _("Owner")

    @property
    def rank(self) -> int:
        return ROLE_RANK[self]

    def at_least(self, other: Role) -> bool:
        return ROLE_RANK[self] >= ROLE_RANK[Role(other)]


ROLE_RANK = {Role.VIEWER: 0, Role.EXPERT: 1, Role.OWNER: 2}


class DomainOwnedQuerySet(models.QuerySet):
    def for_domain(self, domain: Domain):
        return self.filter(domain=domain)


class Membership(models.Model):
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["domain", "user__username"]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [
            models.UniqueConstraint(fields=["domain", "user"], name="membership_unique_user"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.domain} ({self.role})"


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(DomainOwnedQuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A domain-scoped key for integrations. The secret is shown once and stored hashed.

    Keys are random 256-bit tokens, so a plain SHA-256 is enough (no password stretching);
    the prefix is stored in clear to find the row without scanning hashes.
    """

    class Scope(models.TextChoices):
        READ = "read", _("Read")
        READ_WRITE = "read_write", _("Read and write")

    PREFIX = "vsm_"

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    scope = models.CharField(_("scope"), max_length=10, choices=Scope.choices, default=Scope.READ)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        constraints = [
            models.CheckConstraint(condition=Q(scope__in=["read", "read_write"]), name="apikey_scope_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.PREFIX}{self.prefix}…)"

    @classmethod
    def issue(cls, *, domain: Domain, name: str, scope: str, created_by=None) -> tuple[ApiKey, str]:
        """Create a key and return it with its secret; the secret is not stored and cannot be shown again."""
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        full = f"{cls.PREFIX}{prefix}_{secret}"
        key = cls.objects.create(
            domain=domain, name=name, scope=scope, prefix=prefix, key_hash=_hash_key(full), created_by=created_by
        )
        return key, full

    @classmethod
    def lookup(cls, presented: str) -> ApiKey | None:
        """The active key matching a presented secret, or None."""
        if not presented.startswith(cls.PREFIX):
            return None
        prefix, _sep, _rest = presented[len(cls.PREFIX):].partition("_")
        key = cls.objects.active().select_related("domain").filter(prefix=prefix).first()
        if key is None or not hmac.compare_digest(key.key_hash, _hash_key(presented)):
            return None
        return key

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def role(self) -> Role:
        """What a key may do, in member terms: read → viewer, read/write → expert. Never owner."""
        return Role.EXPERT if self.scope == self.Scope.READ_WRITE else Role.VIEWER

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self) -> None:
        now = timezone.now()
        if self.last_used_at is None or now - self.last_used_at > timedelta(minutes=1):
            ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)


class JobQuerySet(DomainOwnedQuerySet):
    def active(self):
        return self.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])

    def stale(self, now=None):
        """Running jobs whose worker stopped renewing its lease."""
        now = now or timezone.now()
        return self.filter(status=Job.Status.RUNNING, lease_expires_at__lt=now)


class Job(models.Model):
    """One long piece of work. This row, not the broker, is the truth about it."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    LOG_TAIL_LINES = 200

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(_("kind"), max_length=40, db_index=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    message = models.CharField(_("message"), max_length=500, blank=True)
    log_tail = models.TextField(blank=True)
    error = models.TextField(_("error"), blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text=_("last time its id was sent to the broker"))
    worker = models.CharField(max_length=200, blank=True, help_text=_("host:pid of the worker running it"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        indexes = [models.Index(fields=["status", "lease_expires_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed", "cancelled"]),
                name="job_status_valid",
            ),
            models.CheckConstraint(condition=Q(progress_done__lte=F("progress_total")) | Q(progress_total=0),
                                   name="job_progress_within_total"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("job-detail", args=[self.domain.slug, self.pk])

    def get_kind_display(self) -> str:
        from domains.jobs import kind_label

        return str(kind_label(self.kind))

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        if not self.progress_total:
            return 0
        return min(100, int(100 * self.progress_done / self.progress_total))


class Document(models.Model):
    """One uploaded file, stored once per domain by content hash, and what ingestion made of it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        PROCESSING = "processing", _("Processing")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="documents")
    filename = models.CharField(_("file name"), max_length=255)
    content_hash = models.CharField(max_length=64, help_text=_("SHA-256 of the file"))
    size_bytes = models.BigIntegerField(default=0)
    kind = models.CharField(_("type"), max_length=20, blank=True, help_text=_("sniffed from the content"))
    storage_path = models.CharField(max_length=500, blank=True, help_text=_("relative to VSM_DATA_DIR"))
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(_("error"), blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    page_count = models.PositiveIntegerField(null=True, blank=True)
    ocr_pages = models.JSONField(default=list, blank=True, help_text=_("page numbers read by OCR"))
    ocr_confidence = models.FloatField(null=True, blank=True, help_text=_("mean OCR confidence of those pages"))
    chunk_count = models.PositiveIntegerField(default=0)
    warnings = models.JSONField(default=list, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    last_job = models.ForeignKey("Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(_("uploaded"), auto_now_add=True)
    ingested_at = models.DateTimeField(null=True, blank=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("document")
        verbose_name_plural = _("documents")
        constraints = [
            models.UniqueConstraint(fields=["domain", "content_hash"], name="document_unique_content"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "processing", "ready", "failed"]), name="document_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.filename

    def get_absolute_url(self) -> str:
        return reverse("document-detail", args=[self.domain.slug, self.pk])

    @property
    def path(self):
        return settings.VSM_DATA_DIR / self.storage_path if self.storage_path else None


class DocumentPage(models.Model):
    """The cleaned text of one page (or section, for formats without pages), for display beside the chunks."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="pages")
    number = models.PositiveIntegerField()
    text = models.TextField(blank=True)
    ocr = models.BooleanField(default=False)
    ocr_confidence = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["document", "number"]
        constraints = [models.UniqueConstraint(fields=["document", "number"], name="page_unique_number")]

    def __str__(self) -> str:
        return f"{self.document} p.{self.number}"


class Chunk(models.Model):
    """A piece of a document sized for retrieval and question generation, with where it came from."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    heading_path = models.JSONField(default=list, blank=True)
    page_start = models.PositiveIntegerField(null=True, blank=True)
    page_end = models.PositiveIntegerField(null=True, blank=True)
    char_start = models.PositiveIntegerField(default=0)
    char_end = models.PositiveIntegerField(default=0)
    length = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(max_length=64)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["document", "ordinal"]
        verbose_name = _("chunk")
        verbose_name_plural = _("chunks")
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_unique_ordinal")]
        indexes = [models.Index(fields=["domain", "content_hash"])]

    def __str__(self) -> str:
        return f"{self.document} #{self.ordinal}"

    @property
    def heading(self) -> str:
        return " › ".join(self.heading_path)

    @property
    def pages_label(self) -> str:
        if self.page_start is None:
            return ""
        if self.page_end in (None, self.page_start):
            return str(self.page_start)
        return f"{self.page_start}–{self.page_end}"


class AuditEventQuerySet(DomainOwnedQuerySet):
    pass


class AuditEvent(models.Model):
    """Who did what that matters in a domain: reviews, promotions, exports, keys, members, the
    deployment. Written by the services that do it (``domains.audit.record``); read by owners."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_label = models.CharField(max_length=200, blank=True, help_text=_("kept when the user is deleted"))
    action = models.CharField(_("action"), max_length=40, db_index=True)
    target = models.CharField(_("target"), max_length=200, blank=True)
    summary = models.CharField(_("summary"), max_length=500, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")

    def __str__(self) -> str:
        return f"{self.action} {self.target}"
