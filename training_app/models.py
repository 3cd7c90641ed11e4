"""Training runs and the model versions they produce. Every row belongs to a Domain."""
from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.db.models import Max, Q
from django.utils.translation import gettext_lazy as _

from datasets_app.models import DatasetVersion
from domains.models import Domain, DomainOwnedQuerySet, Job


class TrainingRun(models.Model):
    """One training of a base model on a frozen dataset version; its Job carries progress and status."""

    class Kind(models.TextChoices):
        SFT = "sft", _("Supervised fine-tuning (LoRA)")
        CPT = "cpt", _("Continual pre-training")
        CPT_SFT = "cpt_sft", _("Continual pre-training, then fine-tuning")
        GRPO = "grpo", _("Entity extraction (GRPO)")
        JUDGE_SFT = "judge_sft", _("Judge fine-tuning")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="training_runs")
    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices, default=Kind.SFT)
    name = models.CharField(_("name"), max_length=200, blank=True)
    base_model = models.CharField(_("base model"), max_length=500,
                                  help_text=_("embedded:gemma3-270m, a local folder, a .gguf file or an HF id"))
    dataset_version = models.ForeignKey(DatasetVersion, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="training_runs")
    dataset_hash = models.CharField(max_length=64, blank=True, help_text=_("content hash of the dataset version"))
    parent = models.ForeignKey("ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="child_runs", help_text=_("train on top of this version"))
    config = models.JSONField(default=dict, help_text=_("the engine's TrainConfig as JSON"))
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    output_path = models.CharField(max_length=500, blank=True, help_text=_("relative to VSM_DATA_DIR"))
    metrics = models.JSONField(default=dict, blank=True, help_text=_("loss history, validation loss, timing"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("training run")
        verbose_name_plural = _("training runs")
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["sft", "cpt", "cpt_sft", "grpo", "judge_sft"]),
                                   name="trainingrun_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def path(self):
        return settings.VSM_DATA_DIR / self.output_path if self.output_path else None


class ModelVersionQuerySet(DomainOwnedQuerySet):
    def active(self):
        return self.filter(is_active=True)


class ModelVersion(models.Model):
    """A trained model: base + adapter (and merged weights once exported), with its lineage and metrics."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=12, choices=TrainingRun.Kind.choices, default=TrainingRun.Kind.SFT)
    run = models.OneToOneField(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="model_version")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    base_model = models.CharField(max_length=500)
    base_path = models.CharField(max_length=500, blank=True, help_text=_("the resolved base model folder"))
    adapter_path = models.CharField(max_length=500, blank=True, help_text=_("relative to VSM_DATA_DIR"))
    merged_path = models.CharField(max_length=500, blank=True, help_text=_("relative to VSM_DATA_DIR"))
    dataset_hash = models.CharField(max_length=64, blank=True)
    config = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(_("active"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["domain", "-number"]
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")
        constraints = [
            models.UniqueConstraint(fields=["domain", "number"], name="modelversion_unique_number"),
            models.UniqueConstraint(fields=["domain", "kind"], condition=Q(is_active=True),
                                    name="modelversion_one_active_per_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.domain.slug} model v{self.number}"

    @classmethod
    def next_number(cls, domain: Domain) -> int:
        return (cls.objects.filter(domain=domain).aggregate(n=Max("number"))["n"] or 0) + 1

    def promote(self) -> None:
        """Make this the domain's active model of its kind (the evaluation gate comes with evaluation)."""
        with transaction.atomic():
            ModelVersion.objects.filter(domain=self.domain, kind=self.kind, is_active=True).exclude(pk=self.pk) \
                .update(is_active=False)
            ModelVersion.objects.filter(pk=self.pk).update(is_active=True)
        self.is_active = True

    def demote(self) -> None:
        ModelVersion.objects.filter(pk=self.pk).update(is_active=False)
        self.is_active = False
