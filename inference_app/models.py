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
