"""Retrieval of the serving stage: a domain's index and its embedding-model comparisons.

Every row belongs to a Domain. The index files live under
``VSM_DATA_DIR/domains/<slug>/index/`` (written whole to a temp folder, then renamed); the
row holds where they are, which embedding model built them and the fusion weights chosen
on the domain's own questions.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from domains.models import Domain, DomainOwnedQuerySet, Job

EMBEDDED_ENCODER = "embedded:all-minilm-l6-v2"


class RetrievalIndex(models.Model):
    """The domain's retrieval index: BM25 over its chunks and a dense index from one embedding model.

    ``encoder`` is the base embedding model the domain chose (the embedded default, a folder,
    an HF id); an active embedding model version of the domain takes its place when the index
    is built, and ``model_version`` records which one did. Changing either rebuilds the index
    as a job.
    """

    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="retrieval_index")
    encoder = models.CharField(_("embedding model"), max_length=500, default=EMBEDDED_ENCODER,
                               help_text=_("embedded:all-minilm-l6-v2 (built in), a local folder or a Hugging Face id"))
    dense_enabled = models.BooleanField(_("dense retrieval"), default=True,
                                        help_text=_("Off: BM25 only (no embedding model is loaded)."))
    reranker = models.CharField(_("reranker"), max_length=500, blank=True,
                                help_text=_("A local cross-encoder folder that re-scores the top hybrid hits (optional)."))
    # What the files on disk were built with.
    built_encoder = models.CharField(max_length=500, blank=True)
    model_version = models.ForeignKey("training_app.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    storage_path = models.CharField(max_length=500, blank=True, help_text=_("relative to VSM_DATA_DIR"))
    passages = models.PositiveIntegerField(default=0)
    dim = models.PositiveIntegerField(null=True, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    # Fusion weights chosen on the domain's questions; {"bm25": 1, "dense": 0} is BM25 only.
    fusion = models.JSONField(default=dict, blank=True)
    fusion_table = models.JSONField(default=list, blank=True)
    fusion_queries = models.PositiveIntegerField(default=0)
    stale = models.BooleanField(default=True, help_text=_("documents changed since the last build"))
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    built_at = models.DateTimeField(null=True, blank=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        verbose_name = _("retrieval index")
        verbose_name_plural = _("retrieval indexes")

    def __str__(self) -> str:
        return f"{self.domain.slug} index"

    @property
    def path(self):
        return settings.VSM_DATA_DIR / self.storage_path if self.storage_path else None

    @property
    def is_built(self) -> bool:
        return bool(self.storage_path and self.built_at)


class EmbeddingComparison(models.Model):
    """Candidate embedding models scored on the domain's questions (hit@k, MRR), as a job."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="embedding_comparisons")
    candidates = models.JSONField(default=list, help_text=_("embedding model specs, in the order asked"))
    results = models.JSONField(default=list, blank=True, help_text=_("one row per candidate, best first"))
    queries = models.PositiveIntegerField(default=0)
    passages = models.PositiveIntegerField(default=0)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("embedding model comparison")
        verbose_name_plural = _("embedding model comparisons")

    def __str__(self) -> str:
        return f"comparison #{self.pk}"


# Serving ------------------------------------------------------------------------------------


class Deployment(models.Model):
    """How a domain answers in its chat page and API: one row per domain, edited by its owners.

    The model is the domain's active LLM version (a GGUF export of it when one exists and
    llama.cpp is installed, else transformers), or a remote OpenAI-compatible server. With no
    active model the domain still answers, extractively (best passages, no generator).
    """

    class Mode(models.TextChoices):
        GROUNDED = "grounded", _("Grounded (retrieve, then answer from the passages)")
        MODEL_ONLY = "model_only", _("Model only (no retrieval)")
        EXTRACTIVE = "extractive", _("Extractive (best passages, no generator)")

    class Backend(models.TextChoices):
        AUTO = "auto", _("Automatic (llama.cpp when a GGUF export exists, else transformers)")
        TRANSFORMERS = "transformers", _("transformers (base + LoRA adapter)")
        LLAMA_CPP = "llama_cpp", _("llama.cpp (the newest GGUF export)")
        REMOTE = "remote", _("Remote OpenAI-compatible server (vLLM, llama.cpp server)")

    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="deployment")
    mode = models.CharField(_("default mode"), max_length=12, choices=Mode.choices, default=Mode.GROUNDED)
    backend = models.CharField(_("backend"), max_length=14, choices=Backend.choices, default=Backend.AUTO)
    k = models.PositiveSmallIntegerField(_("passages per answer"), default=3)
    threshold = models.FloatField(
        _("confidence threshold"), default=0.4,
        help_text=_("Below this retrieval confidence (0-1) the answer says the documents do not cover the question."))
    generation = models.JSONField(_("generation settings"), default=dict, blank=True,
                                  help_text=_("temperature, top_p, top_k, repetition_penalty, max_new_tokens"))
    remote_url = models.CharField(_("remote base URL"), max_length=500, blank=True,
                                  help_text=_("e.g. http://gpu-1:8000/v1"))
    remote_model = models.CharField(_("remote model name"), max_length=200, blank=True)
    remote_key_encrypted = models.TextField(blank=True)
    public = models.BooleanField(_("public chat link"), default=False)
    public_token = models.CharField(max_length=64, blank=True, db_index=True)
    rate_limit = models.PositiveIntegerField(_("API requests per minute per key"), default=60)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        verbose_name = _("deployment")
        verbose_name_plural = _("deployments")
        constraints = [
            models.CheckConstraint(condition=models.Q(mode__in=["grounded", "model_only", "extractive"]),
                                   name="deployment_mode_valid"),
            models.CheckConstraint(condition=models.Q(threshold__gte=0) & models.Q(threshold__lte=1),
                                   name="deployment_threshold_0_1"),
        ]

    def __str__(self) -> str:
        return f"{self.domain.slug} deployment"


class ConversationQuerySet(DomainOwnedQuerySet):
    def of(self, user):
        return self.filter(user=user) if user is not None and user.is_authenticated else self.none()


class Conversation(models.Model):
    """A chat thread: a member's, or a visitor's of the public link (kept by session key)."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="conversations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="conversations")
    session_key = models.CharField(max_length=64, blank=True, db_index=True)
    title = models.CharField(_("title"), max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")

    def __str__(self) -> str:
        return self.title or f"conversation #{self.pk}"


class Message(models.Model):
    """One turn. An assistant message keeps how it was made: mode, citations, model version, timing."""

    class Role(models.TextChoices):
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="chat_messages")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField()
    mode = models.CharField(max_length=12, blank=True)
    covered = models.BooleanField(null=True)
    citations = models.JSONField(default=list, blank=True)
    model_version = models.ForeignKey("training_app.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    model_label = models.CharField(max_length=300, blank=True)
    timing = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.CheckConstraint(condition=models.Q(role__in=["user", "assistant"]),
                                              name="message_role_valid")]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class Feedback(models.Model):
    """A thumbs up/down on an answer, optionally with the right answer; a correction becomes a
    pending QA pair in the review queue."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="chat_feedback")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    rating = models.SmallIntegerField(choices=[(1, _("helpful")), (-1, _("not helpful")), (0, _("no rating"))],
                                      default=0)
    correction = models.TextField(_("correction"), blank=True)
    pair = models.ForeignKey("datasets_app.QAPair", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="feedback_one_per_user"),
            models.CheckConstraint(condition=models.Q(rating__in=[-1, 0, 1]), name="feedback_rating_valid"),
        ]


class ApiRequest(models.Model):
    """The request log of the serving API: who (key), what (endpoint), how it went. No question
    text, no headers, no secrets."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="api_requests")
    api_key = models.ForeignKey("domains.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    endpoint = models.CharField(max_length=40)
    status = models.PositiveSmallIntegerField()
    stream = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    covered = models.BooleanField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]


class AnswerBatch(models.Model):
    """A CSV of questions answered as a job; the answers are downloaded as a CSV with citations.

    Answers are appended to ``answers.jsonl`` in the batch's folder as they are made (the job's
    checkpoint: a retried job skips the questions already answered); the CSV is written from it
    at the end, to a temp name renamed when whole.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="answer_batches")
    filename = models.CharField(max_length=255)
    questions = models.JSONField(default=list)
    mode = models.CharField(max_length=12, blank=True)
    storage_path = models.CharField(max_length=500, blank=True, help_text=_("relative to VSM_DATA_DIR"))
    answered = models.PositiveIntegerField(default=0)
    covered = models.PositiveIntegerField(default=0)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    @property
    def folder(self):
        return settings.VSM_DATA_DIR / self.storage_path if self.storage_path else None

    @property
    def result_file(self):
        path = self.folder / "answers.csv" if self.folder else None
        return path if path is not None and path.is_file() else None
