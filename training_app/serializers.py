"""Serializers of the training API: runs (with their job) and the model versions they produce."""
from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from domains.serializers import JobDetailSerializer
from training_app.engine.config import PRESETS
from training_app.models import ModelExport, ModelVersion, TrainingRun
from training_app.services import EMBEDDED_BASE


KIND_HELP = _("sft, cpt, cpt_sft, grpo, judge_sft or embedding.")


class TrainingRunSerializer(serializers.ModelSerializer):
    """A run: what it trains on and how; ``job`` carries status, progress and the live numbers in ``result``."""

    kind = serializers.CharField(read_only=True, help_text=KIND_HELP)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    job = JobDetailSerializer(read_only=True, allow_null=True)
    model_version = serializers.SerializerMethodField(
        help_text=_("Id of the model version the run produced; null until it has finished.")
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id", "name", "kind", "kind_label", "base_model", "dataset_version", "dataset_hash", "parent", "config",
            "metrics", "output_path", "job", "model_version", "created_by", "created_at",
        ]
        read_only_fields = fields

    def get_model_version(self, run: TrainingRun) -> int | None:
        try:
            return run.model_version.pk
        except ModelVersion.DoesNotExist:
            return None


class TrainingStartSerializer(serializers.Serializer):
    """Start a run. Settings not given in ``overrides`` come from the preset, then the defaults."""

    dataset_version = serializers.IntegerField(
        required=False, allow_null=True,
        help_text=_("Id of a frozen dataset version of this domain; not needed for continual pre-training (cpt)."),
    )
    # A plain string, not an enum: the schema's enum names for "kind" would collide with other apps' kinds.
    kind = serializers.CharField(
        default="sft", max_length=12,
        help_text=_("sft (question → answer), cpt (the domain's documents), cpt_sft, grpo, judge_sft or embedding "
                    "(a retrieval embedding model; its base defaults to embedded:all-minilm-l6-v2)."),
    )
    base_model = serializers.CharField(
        max_length=500, default=EMBEDDED_BASE,
        help_text=_("embedded:gemma3-270m (built in), a local model folder, a .gguf file or a Hugging Face id."),
    )
    preset = serializers.ChoiceField(choices=["", *PRESETS], default="", allow_blank=True)
    overrides = serializers.DictField(
        required=False, default=dict,
        help_text=_("TrainConfig fields to change, e.g. {\"epochs\": 5, \"lora_r\": 16, \"learning_rate\": 0.0001}; "
                    "for embedding runs EmbeddingConfig fields, e.g. {\"objective\": \"mnrl\", \"strategy\": "
                    "\"bitfit\"}."),
    )
    parent = serializers.IntegerField(required=False, allow_null=True,
                                      help_text=_("Id of a model version of this domain to train on top of."))
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class PromoteSerializer(serializers.Serializer):
    force = serializers.BooleanField(default=False, help_text=_("Overrule a refusing gate (owners; needs a reason)."))
    reason = serializers.CharField(default="", allow_blank=True, max_length=2000,
                                   help_text=_("Why this version is made active; required when forcing."))


class ModelVersionSerializer(serializers.ModelSerializer):
    kind = serializers.CharField(read_only=True, help_text=KIND_HELP)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id", "number", "kind", "kind_label", "is_active", "run", "parent", "base_model", "base_path",
            "adapter_path", "merged_path", "dataset_hash", "config", "metrics", "created_at",
        ]
        read_only_fields = fields


class ExportFileSerializer(serializers.Serializer):
    artifact = serializers.CharField(help_text=_("archive, merged, gguf, quantized or modelfile."))
    filename = serializers.CharField()
    bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField()
    url = serializers.CharField(help_text=_("Where to download it (API)."))


class ModelExportSerializer(serializers.ModelSerializer):
    """An export: the formats asked for, its job (status and progress) and the files produced so far."""

    gguf_outtype = serializers.CharField(read_only=True, help_text=_("f16, q8_0, or empty for no GGUF."))
    quantize = serializers.CharField(read_only=True, help_text=_("Q4_K_M, or empty for none."))
    model_version_number = serializers.IntegerField(source="model_version.number", read_only=True)
    status = serializers.CharField(read_only=True, help_text=_("The job's status."))
    formats = serializers.ListField(child=serializers.CharField(), read_only=True)
    job = JobDetailSerializer(read_only=True, allow_null=True)
    files = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ModelExport
        fields = [
            "id", "model_version", "model_version_number", "merged", "gguf_outtype", "quantize", "modelfile", "onnx",
            "formats", "status", "job", "output_path", "files", "created_by", "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ExportFileSerializer(many=True))
    def get_files(self, export: ModelExport) -> list[dict]:
        url = reverse("api:model-export-download", args=[export.domain.slug, export.pk])
        return ExportFileSerializer([{**f, "url": f"{url}?file={f['artifact']}"} for f in export.downloads()],
                                    many=True).data


class ModelExportStartSerializer(serializers.Serializer):
    """Export a model version. Quantizing and the Modelfile need a GGUF."""

    model_version = serializers.IntegerField(help_text=_("Id of a model version of this domain."))
    merged = serializers.BooleanField(default=True, help_text=_("Merged safetensors (a Hugging Face folder)."))
    # Plain strings, checked by the service: enum names would collide in the schema.
    gguf_outtype = serializers.CharField(default="f16", allow_blank=True, max_length=8,
                                         help_text=_("f16, q8_0, or empty for no GGUF."))
    quantize = serializers.CharField(default="Q4_K_M", allow_blank=True, max_length=8,
                                     help_text=_("Q4_K_M, or empty for none."))
    modelfile = serializers.BooleanField(default=True, help_text=_("An Ollama Modelfile for the GGUF."))
    onnx = serializers.BooleanField(default=False, help_text=_(
        "ONNX, float32 and int8, each checked against PyTorch. Embedding versions always export to ONNX (the "
        "other formats are for language models)."))


class EvaluationRunSerializer(serializers.ModelSerializer):
    """An evaluation: configurations, options, aggregate results per configuration, probe, and its job."""

    job = JobDetailSerializer(read_only=True, allow_null=True)
    model_version_number = serializers.IntegerField(source="model_version.number", read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        from training_app.models import EvaluationRun

        model = EvaluationRun
        fields = ["id", "model_version", "model_version_number", "dataset_version", "configurations", "options",
                  "results", "probe", "job", "created_by", "created_at"]
        read_only_fields = fields


class EvaluationStartSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(help_text=_("Id of an sft or cpt_sft model version of this domain."))
    dataset_version = serializers.IntegerField(required=False, allow_null=True,
                                               help_text=_("Whose held-out questions; default: the version the model "
                                                           "was trained on."))
    configurations = serializers.ListField(child=serializers.CharField(max_length=12), required=False,
                                           help_text=_("base, model, base_rag, model_rag, extractive (default: all)."))
    options = serializers.DictField(required=False, default=dict,
                                    help_text=_("k (passages, 1–20), threshold (0–1), max_new_tokens, probe (bool)."))


class EvalItemSerializer(serializers.ModelSerializer):
    class Meta:
        from training_app.models import EvalItem

        model = EvalItem
        fields = ["id", "configuration", "position", "question", "gold", "answer", "answerable", "citations",
                  "metrics", "seconds"]
        read_only_fields = fields
