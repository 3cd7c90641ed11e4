"""Distilled data of a domain: teachers, QA pairs under review, retrieval/entity/judge examples,
and frozen dataset versions. Every row belongs to a Domain."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from domains.models import Chunk, Document, Domain, DomainOwnedQuerySet, Job


class TeacherConfig(models.Model):
    """How a domain's recipes ask a teacher LLM. The built-in offline teacher needs no row."""

    class Provider(models.TextChoices):
        OFFLINE = "offline", _("Offline (document structure, no model)")
        OPENAI = "openai", _("OpenAI-compatible API")
        GEMINI = "gemini", _("Google Gemini")
        LLAMACPP = "llamacpp", _("Local GGUF (llama.cpp)")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="teachers")
    name = models.SlugField(_("name"), max_length=40, help_text=_("Short name, also the suffix of the "
                                                                 "VSM_TEACHER_KEYS_<NAME> environment variable."))
    provider = models.CharField(_("provider"), max_length=10, choices=Provider.choices, default=Provider.OPENAI)
    model = models.CharField(_("model"), max_length=200, blank=True, help_text=_("e.g. deepseek-chat, gemini-2.5-flash"))
    base_url = models.URLField(_("base URL"), max_length=300, blank=True,
                               help_text=_("OpenAI-compatible endpoint, e.g. https://api.deepseek.com/v1"))
    model_path = models.CharField(_("GGUF path"), max_length=500, blank=True,
                                  help_text=_("Local .gguf file for the llama.cpp provider"))
    temperature = models.FloatField(_("temperature"), default=0.3,
                                    validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    concurrency = models.PositiveSmallIntegerField(_("concurrency"), default=4,
                                                   validators=[MinValueValidator(1), MaxValueValidator(64)])
    rpm = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True,
                                      help_text=_("Empty = no limit"))
    max_output_tokens = models.PositiveIntegerField(_("max output tokens"), default=2048,
                                                    validators=[MinValueValidator(64), MaxValueValidator(65536)])
    is_default = models.BooleanField(_("default for new recipes"), default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["domain", "name"]
        verbose_name = _("teacher")
        verbose_name_plural = _("teachers")
        constraints = [
            models.UniqueConstraint(fields=["domain", "name"], name="teacher_unique_name"),
            models.CheckConstraint(condition=Q(provider__in=["offline", "openai", "gemini", "llamacpp"]),
                                   name="teacher_provider_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_provider_display()}{', ' + self.model if self.model else ''})"

    def clean(self):
        if self.provider == self.Provider.OPENAI and not self.base_url and not self.model:
            raise ValidationError(_("An OpenAI-compatible teacher needs a model name (and usually a base URL)."))
        if self.provider == self.Provider.GEMINI and not self.model:
            raise ValidationError(_("A Gemini teacher needs a model name, e.g. gemini-2.5-flash."))
        if self.provider == self.Provider.LLAMACPP and not self.model_path:
            raise ValidationError(_("A llama.cpp teacher needs the path of a .gguf file."))

    @property
    def label(self) -> str:
        """What the review page shows as 'made by'."""
        return f"{self.get_provider_display()}: {self.model or self.model_path or self.name}"

    @property
    def env_var(self) -> str:
        return f"VSM_TEACHER_KEYS_{self.name.upper().replace('-', '_')}"


class TeacherKey(models.Model):
    """One API key of a teacher, encrypted at rest; never shown back, only its label and usage."""

    teacher = models.ForeignKey(TeacherConfig, on_delete=models.CASCADE, related_name="keys")
    label = models.CharField(_("label"), max_length=60)
    secret_encrypted = models.TextField(editable=False)
    fingerprint = models.CharField(max_length=8, editable=False)
    disabled = models.BooleanField(_("disabled"), default=False)
    requests = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True, help_text=_("redacted"))
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["teacher", "created_at", "id"]
        verbose_name = _("teacher key")
        verbose_name_plural = _("teacher keys")

    def __str__(self) -> str:
        return f"{self.label} (#{self.fingerprint})"

    def set_secret(self, secret: str) -> None:
        from datasets_app import crypto

        secret = secret.strip()
        if not secret:
            raise ValidationError(_("The key is empty."))
        self.secret_encrypted = crypto.encrypt(secret)
        self.fingerprint = crypto.fingerprint(secret)

    def reveal(self) -> str:
        """The secret, for the teacher client only (never for templates, logs or the API)."""
        from datasets_app import crypto

        return crypto.decrypt(self.secret_encrypted)


class QADataset(models.Model):
    """A named collection of QA pairs and examples in a domain (each domain starts with 'main')."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(_("name"), max_length=100, default="main")
    description = models.TextField(_("description"), blank=True)
    double_review = models.BooleanField(_("double review"), default=False,
                                        help_text=_("Approval needs two reviewers; their agreement is shown."))
    stale_since = models.DateTimeField(null=True, blank=True,
                                       help_text=_("Set when source chunks were removed or changed"))
    stale_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["domain", "name"]
        verbose_name = _("QA dataset")
        verbose_name_plural = _("QA datasets")
        constraints = [models.UniqueConstraint(fields=["domain", "name"], name="qadataset_unique_name")]

    def __str__(self) -> str:
        return f"{self.domain.slug}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("dataset-detail", args=[self.domain.slug, self.pk])

    @classmethod
    def default_for(cls, domain: Domain) -> QADataset:
        dataset, _created = cls.objects.get_or_create(domain=domain, name="main")
        return dataset


class QAPairQuerySet(DomainOwnedQuerySet):
    def approved(self):
        return self.filter(status=QAPair.Status.APPROVED)

    def pending(self):
        return self.filter(status=QAPair.Status.PENDING)

    def reviewed(self):
        return self.exclude(status=QAPair.Status.PENDING)


class QAPair(models.Model):
    """One question/answer pair under expert review. Edits keep history; stale edits conflict."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")
        NEEDS_EDIT = "needs_edit", _("Needs edit")

    class Source(models.TextChoices):
        TEACHER = "teacher", _("Teacher")
        PARAPHRASE = "paraphrase", _("Paraphrase")
        MANUAL = "manual", _("Added by hand")
        IMPORT = "import", _("Imported")
        FEEDBACK = "feedback", _("Chat correction")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="qa_pairs")
    dataset = models.ForeignKey(QADataset, on_delete=models.CASCADE, related_name="pairs")
    question = models.TextField(_("question"))
    answer = models.TextField(_("answer"))
    history = models.JSONField(_("earlier turns"), default=list, blank=True,
                               help_text=_("[[user, assistant], …] before the question: a multi-turn example"))
    chunk = models.ForeignKey(Chunk, null=True, blank=True, on_delete=models.SET_NULL, related_name="qa_pairs")
    document = models.ForeignKey(Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="qa_pairs")
    source_text = models.TextField(_("source passage"), blank=True,
                                   help_text=_("The chunk text the pair was made from, kept if the chunk goes"))
    evidence_start = models.IntegerField(null=True, blank=True)
    evidence_end = models.IntegerField(null=True, blank=True)
    source = models.CharField(_("source"), max_length=12, choices=Source.choices, default=Source.TEACHER)
    teacher_label = models.CharField(_("made by"), max_length=200, blank=True)
    rule = models.CharField(max_length=60, blank=True, help_text=_("offline teacher rule or recipe step"))
    quality_score = models.FloatField(_("quality score"), null=True, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="paraphrases")
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.PENDING)
    reject_reason = models.CharField(_("reason"), max_length=300, blank=True)
    held_out = models.BooleanField(_("held-out test"), default=False,
                                   help_text=_("Never used for training; always in the test split"))
    assigned_to = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="assigned_pairs")
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    second_reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                           on_delete=models.SET_NULL, related_name="+")
    second_verdict = models.CharField(max_length=12, blank=True, choices=Status.choices)
    version = models.PositiveIntegerField(default=1, help_text=_("bumped on every change (optimistic locking)"))
    origin_key = models.CharField(max_length=64, blank=True, help_text=_("recipe checkpoint key; unique per dataset"))
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = QAPairQuerySet.as_manager()

    class Meta:
        ordering = ["dataset", "id"]
        verbose_name = _("QA pair")
        verbose_name_plural = _("QA pairs")
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["pending", "approved", "rejected", "needs_edit"]),
                                   name="qapair_status_valid"),
            models.CheckConstraint(
                condition=Q(source__in=["teacher", "paraphrase", "manual", "import", "feedback"]),
                name="qapair_source_valid"),
            models.UniqueConstraint(fields=["dataset", "origin_key"], condition=~Q(origin_key=""),
                                    name="qapair_unique_origin"),
        ]
        indexes = [models.Index(fields=["dataset", "status"])]

    def __str__(self) -> str:
        return self.question[:80]

    def get_absolute_url(self) -> str:
        return reverse("pair-review", args=[self.domain.slug, self.pk])

    @property
    def evidence(self) -> str:
        if self.evidence_start is None or self.evidence_end is None:
            return ""
        return self.source_text[self.evidence_start:self.evidence_end]

    @property
    def made_by(self) -> str:
        from django.utils.translation import gettext

        return gettext(self.teacher_label) if self.teacher_label else str(self.get_source_display())

    @property
    def agreement(self) -> bool | None:
        """Double review: did the two reviewers agree? None until both have decided."""
        if not self.second_verdict or self.status == self.Status.PENDING:
            return None
        return self.second_verdict == self.status


class QAPairEvent(models.Model):
    """History of a pair: who did what, when, and the fields before and after."""

    pair = models.ForeignKey(QAPair, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=20)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    note = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pair", "at", "id"]
        verbose_name = _("QA pair event")
        verbose_name_plural = _("QA pair events")

    def __str__(self) -> str:
        return f"{self.action} by {self.actor or '—'} at {self.at:%Y-%m-%d %H:%M}"


class ExampleQuerySet(DomainOwnedQuerySet):
    pass


class Example(models.Model):
    """What every recipe-made example shares: its domain and dataset, the chunk it came from, the job
    that made it and the checkpoint key that keeps a rerun from writing it twice."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="%(class)ss")
    dataset = models.ForeignKey(QADataset, on_delete=models.CASCADE, related_name="%(class)ss")
    chunk = models.ForeignKey(Chunk, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    origin_key = models.CharField(max_length=64, blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ExampleQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["dataset", "id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "origin_key"], condition=~Q(origin_key=""),
                                               name="%(class)s_unique_origin")]


class RetrievalExample(Example):
    """Query → positive chunk, with mined hard negatives and an optional relevance score (0–1)."""

    query = models.TextField()
    positive_text = models.TextField()
    negatives = models.JSONField(default=list, blank=True, help_text=_("[[chunk id, text], …], hardest first"))
    score = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    pair = models.ForeignKey(QAPair, null=True, blank=True, on_delete=models.CASCADE, related_name="retrieval_examples")
    held_out = models.BooleanField(default=False)

    class Meta(Example.Meta):
        verbose_name = _("retrieval example")
        verbose_name_plural = _("retrieval examples")

    def __str__(self) -> str:
        return self.query[:80]


class EntityExample(Example):
    """A passage with typed entity spans (CLUENER style, end inclusive) for the extraction model."""

    text = models.TextField()
    spans = models.JSONField(default=list, blank=True, help_text=_("[{label, start, end, mention}, …]"))
    teacher_label = models.CharField(max_length=200, blank=True)
    approved = models.BooleanField(default=True)

    class Meta(Example.Meta):
        verbose_name = _("entity example")
        verbose_name_plural = _("entity examples")

    def __str__(self) -> str:
        return self.text[:80]


class JudgeExample(Example):
    """(question, passage) → analysis in <think> and a label, as ShareGPT messages."""

    question = models.TextField()
    passage = models.TextField()
    analysis = models.TextField()
    label = models.CharField(max_length=20)
    messages = models.JSONField(default=list)
    pair = models.ForeignKey(QAPair, null=True, blank=True, on_delete=models.CASCADE, related_name="judge_examples")
    teacher_label = models.CharField(max_length=200, blank=True)

    class Meta(Example.Meta):
        verbose_name = _("judge example")
        verbose_name_plural = _("judge examples")

    def __str__(self) -> str:
        return f"{self.label}: {self.question[:60]}"


class RecipeCheckpoint(models.Model):
    """One finished unit of a recipe (a chunk, a pair); written with its rows, so a rerun skips it."""

    dataset = models.ForeignKey(QADataset, on_delete=models.CASCADE, related_name="checkpoints")
    recipe = models.CharField(max_length=20)
    item_key = models.CharField(max_length=64, help_text=_("hash of the unit's content and the recipe settings"))
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    produced = models.PositiveIntegerField(default=0)
    rejected = models.JSONField(default=dict, blank=True, help_text=_("rejections per filter"))
    done_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "recipe", "item_key"], name="checkpoint_unique")]


class DatasetVersionQuerySet(DomainOwnedQuerySet):
    pass


class DatasetVersion(models.Model):
    """An immutable snapshot of approved pairs and examples, with its hash, split and stats.

    The files live under ``<data>/domains/<slug>/datasets/<content hash>/``; rows only
    point at them. Saving an existing version again is refused.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dataset_versions")
    dataset = models.ForeignKey(QADataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    name = models.CharField(_("note"), max_length=200, blank=True)
    content_hash = models.CharField(max_length=64)
    version_hash = models.CharField(max_length=64)
    split_config = models.JSONField(default=dict)
    stats = models.JSONField(default=dict)
    counts = models.JSONField(default=dict, help_text=_("rows per kind and split"))
    storage_path = models.CharField(max_length=500, help_text=_("relative to VSM_DATA_DIR"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetVersionQuerySet.as_manager()

    class Meta:
        ordering = ["dataset", "-number"]
        verbose_name = _("dataset version")
        verbose_name_plural = _("dataset versions")
        constraints = [models.UniqueConstraint(fields=["dataset", "number"], name="datasetversion_unique_number")]

    def __str__(self) -> str:
        return f"{self.dataset} v{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("version-detail", args=[self.domain.slug, self.pk])

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.pop("_allow_update", False):
            raise ValidationError("Dataset versions are immutable; freeze a new version instead.")
        super().save(*args, **kwargs)

    @property
    def path(self):
        return settings.VSM_DATA_DIR / self.storage_path

    @property
    def short_hash(self) -> str:
        return self.content_hash[:12]
