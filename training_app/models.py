"""Training runs and the model versions they produce. Every row belongs to a Domain."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Max, Q
from django.utils.translation import gettext_lazy as _

from datasets_app.models import DatasetVersion
from domains.models import Domain, DomainOwnedQuerySet, Job
from training_app.signals import active_model_changed


class TrainingRun(models.Model):
    """One training of a base model on a frozen dataset version; its Job carries progress and status."""

    class Kind(models.TextChoices):
        SFT = "sft", _("Supervised fine-tuning (LoRA)")
        CPT = "cpt", _("Continual pre-training")
        CPT_SFT = "cpt_sft", _("Continual pre-training, then fine-tuning")
        GRPO = "grpo", _("Entity extraction (GRPO)")
        JUDGE_SFT = "judge_sft", _("Judge fine-tuning")
        EMBEDDING = "embedding", _("Embedding model (retrieval)")

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
            models.CheckConstraint(condition=Q(kind__in=["sft", "cpt", "cpt_sft", "grpo", "judge_sft", "embedding"]),
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
            transaction.on_commit(lambda: active_model_changed.send(
                sender=ModelVersion, domain_id=self.domain_id, kind=self.kind, version=self))
        self.is_active = True

    def demote(self) -> None:
        with transaction.atomic():
            changed = ModelVersion.objects.filter(pk=self.pk, is_active=True).update(is_active=False)
            if changed:
                transaction.on_commit(lambda: active_model_changed.send(
                    sender=ModelVersion, domain_id=self.domain_id, kind=self.kind, version=self))
        self.is_active = False


class ModelExport(models.Model):
    """One export of a model version (merged weights, GGUF, quantized GGUF, Modelfile, archive); its Job runs it.

    Files live under ``VSM_DATA_DIR/domains/<slug>/exports/<id>/``; ``files`` records each produced
    artifact (path relative to ``VSM_DATA_DIR``, size, sha256) as its step finishes.
    """

    class Outtype(models.TextChoices):
        NONE = "", _("no GGUF")
        F16 = "f16", _("GGUF f16")
        Q8_0 = "q8_0", _("GGUF q8_0")

    class Quantize(models.TextChoices):
        NONE = "", _("none")
        Q4_K_M = "Q4_K_M", "Q4_K_M"

    # The artifacts a person can download, in the order shown; names are fixed, never paths.
    ARTIFACTS = ("archive", "merged", "gguf", "quantized", "modelfile", "onnx", "onnx_int8")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="model_exports")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="exports")
    merged = models.BooleanField(_("merged safetensors"), default=True)
    gguf_outtype = models.CharField(_("GGUF type"), max_length=8, choices=Outtype.choices, blank=True,
                                    default=Outtype.F16)
    quantize = models.CharField(_("quantization"), max_length=8, choices=Quantize.choices, blank=True,
                                default=Quantize.Q4_K_M)
    modelfile = models.BooleanField(_("Ollama Modelfile"), default=True)
    onnx = models.BooleanField(_("ONNX (float32 and int8)"), default=False,
                               help_text=_("embedding models: ONNX for onnxruntime on any platform"))
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    output_path = models.CharField(max_length=500, blank=True, help_text=_("relative to VSM_DATA_DIR"))
    files = models.JSONField(default=dict, blank=True,
                             help_text=_("artifact → {name, path, bytes, sha256}, paths relative to VSM_DATA_DIR"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("model export")
        verbose_name_plural = _("model exports")
        constraints = [
            models.CheckConstraint(condition=Q(gguf_outtype__in=["", "f16", "q8_0"]),
                                   name="modelexport_outtype_valid"),
            models.CheckConstraint(condition=Q(quantize__in=["", "Q4_K_M"]), name="modelexport_quantize_valid"),
            # Quantizing and the Modelfile both need a GGUF.
            models.CheckConstraint(condition=~Q(gguf_outtype="") | (Q(quantize="") & Q(modelfile=False)),
                                   name="modelexport_gguf_needed"),
        ]

    def __str__(self) -> str:
        return f"export #{self.pk} of v{self.model_version.number}" if self.model_version_id else f"export #{self.pk}"

    @property
    def status(self) -> str:
        """The job's status (an export without a job has not been queued)."""
        return self.job.status if self.job_id and self.job is not None else Job.Status.QUEUED

    @property
    def formats(self) -> list[str]:
        chosen = []
        if self.merged:
            chosen.append("safetensors")
        if self.gguf_outtype:
            chosen.append(f"gguf-{self.gguf_outtype}")
        if self.quantize:
            chosen.append(self.quantize)
        if self.modelfile:
            chosen.append("Modelfile")
        if self.onnx:
            chosen += ["onnx", "onnx-int8"]
        return chosen

    @property
    def path(self):
        return settings.VSM_DATA_DIR / self.output_path if self.output_path else None

    def artifact_file(self, name: str):
        """The absolute path of a produced artifact (``name`` from ARTIFACTS), or None.

        The path comes from ``files`` (written by the job, never from a request) and must stay
        inside this export's own folder.
        """
        if name not in self.ARTIFACTS or not self.output_path:
            return None
        info = (self.files or {}).get(name)
        if not isinstance(info, dict) or not info.get("path"):
            return None
        root = (settings.VSM_DATA_DIR / self.output_path).resolve()
        path = (settings.VSM_DATA_DIR / info["path"]).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    def downloads(self) -> list[dict]:
        """The downloadable artifacts produced so far, in ARTIFACTS order."""
        out = []
        for name in self.ARTIFACTS:
            info = (self.files or {}).get(name)
            if isinstance(info, dict) and info.get("path"):
                out.append({"artifact": name, "filename": info.get("name") or Path(info["path"]).name,
                            "bytes": info.get("bytes"), "sha256": info.get("sha256", ""),
                            "min_cosine": info.get("min_cosine")})
        return out


class EvaluationRun(models.Model):
    """Answers of one or more configurations to a dataset version's held-out questions, scored; a Job runs it.

    A configuration is a way to serve the domain: the base or the fine-tuned model, each with
    or without retrieval, or retrieval alone (extractive). Every answer is an ``EvalItem``,
    written as it is made, so a retried job continues where it stopped.
    """

    class Configuration(models.TextChoices):
        BASE = "base", _("Base model")
        MODEL = "model", _("Fine-tuned model")
        BASE_RAG = "base_rag", _("Base model + retrieval")
        MODEL_RAG = "model_rag", _("Fine-tuned model + retrieval")
        EXTRACTIVE = "extractive", _("Retrieval only (extractive)")
        ENTITIES = "entities", _("Entity extraction")
        JUDGE = "judge", _("Judge verdicts")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="evaluation_runs")
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.CASCADE,
                                      related_name="evaluations")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="evaluations")
    configurations = models.JSONField(default=list)
    options = models.JSONField(default=dict, blank=True, help_text=_("k, threshold, max_new_tokens, probe"))
    results = models.JSONField(default=dict, blank=True, help_text=_("configuration → aggregate metrics"))
    probe = models.JSONField(default=dict, blank=True, help_text=_("general-ability probe: configuration → accuracy"))
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("evaluation run")
        verbose_name_plural = _("evaluation runs")

    def __str__(self) -> str:
        return f"evaluation #{self.pk}"


class EvalItem(models.Model):
    """One configuration's answer to one held-out question, with its automatic metrics."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="items")
    configuration = models.CharField(max_length=12, choices=EvaluationRun.Configuration.choices)
    position = models.PositiveIntegerField(help_text=_("the question's place in the test split"))
    question = models.TextField()
    gold = models.TextField(blank=True)
    answer = models.TextField(blank=True)
    answerable = models.BooleanField(default=True)
    citations = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField(default=0.0)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["run", "position", "configuration"]
        constraints = [models.UniqueConstraint(fields=["run", "configuration", "position"],
                                               name="evalitem_unique_answer")]

    def __str__(self) -> str:
        return f"{self.configuration} #{self.position}"


class ExpertScore(models.Model):
    """An expert's 1–5 score of one answer, given blind (the scorer never sees which configuration wrote it)."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(EvalItem, on_delete=models.CASCADE, related_name="scores")
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    score = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(5)])
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "expert"], name="expertscore_one_per_expert"),
            models.CheckConstraint(condition=Q(score__gte=1) & Q(score__lte=5), name="expertscore_range"),
        ]

    def __str__(self) -> str:
        return f"{self.score} by {self.expert_id}"


class Promotion(models.Model):
    """Who made which version active, when and why, and what the gate said."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="promotions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="promotions")
    previous = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    forced = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    gate = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"v{self.model_version.number} promoted"


# The metrics the promotion gate compares, and whether higher is better.
GATE_METRICS = {"accuracy": True, "key_fact_recall": True, "rouge_l": True, "exact_match": True,
                "hallucination_rate": False, "refusal_rate": False, "correct_refusal_rate": True,
                "context_recall": True}


def default_gate_metrics() -> dict:
    return {"accuracy": 0.0, "key_fact_recall": 0.0, "hallucination_rate": 0.0}


class PromotionPolicy(models.Model):
    """A domain's promotion gate: which configuration is compared, on which metrics, with what tolerance.

    ``metrics`` maps a metric to the largest regression allowed against the active version
    (0 = must not fall below it); ``probe_max_drop`` is the largest loss of general ability
    (probe accuracy against the base model) allowed.
    """

    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="promotion_policy")
    configuration = models.CharField(max_length=12, choices=EvaluationRun.Configuration.choices,
                                     default=EvaluationRun.Configuration.MODEL_RAG)
    metrics = models.JSONField(default=default_gate_metrics)
    probe_max_drop = models.FloatField(default=0.1, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])

    objects = DomainOwnedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.domain.slug} promotion gate"


class HubCredential(models.Model):
    """An owner's access token for a model hub, encrypted at rest (as teacher keys are); one per domain and hub."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="hub_credentials")
    hub = models.CharField(max_length=20, default="huggingface")
    token_encrypted = models.TextField(editable=False)
    fingerprint = models.CharField(max_length=8, editable=False, help_text=_("last characters, to recognise it"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["domain", "hub"], name="hubcredential_one_per_hub")]

    def __str__(self) -> str:
        return f"{self.hub} token …{self.fingerprint}"


class HubPush(models.Model):
    """One push of an export to a hub repository, with the model card it carried; its Job runs it."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="hub_pushes")
    export = models.ForeignKey(ModelExport, on_delete=models.CASCADE, related_name="pushes")
    hub = models.CharField(max_length=20, default="huggingface")
    repo_id = models.CharField(_("repository"), max_length=200)
    private = models.BooleanField(_("private"), default=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    url = models.CharField(max_length=500, blank=True)
    commit = models.CharField(max_length=80, blank=True)
    card = models.TextField(blank=True, help_text=_("the README.md pushed with the files"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"push #{self.pk} to {self.hub}:{self.repo_id}"
