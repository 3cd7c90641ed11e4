"""Serializers of the training API: runs (with their job) and the model versions they produce."""
from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from domains.serializers import JobDetailSerializer
from training_app.engine.config import PRESETS
from training_app.models import ModelVersion, TrainingRun
from training_app.services import EMBEDDED_BASE


KIND_HELP = _("sft, cpt, cpt_sft, grpo or judge_sft.")


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
        help_text=_("sft (question → answer), cpt (the domain's documents) or judge_sft."),
    )
    base_model = serializers.CharField(
        max_length=500, default=EMBEDDED_BASE,
        help_text=_("embedded:gemma3-270m (built in), a local model folder, a .gguf file or a Hugging Face id."),
    )
    preset = serializers.ChoiceField(choices=["", *PRESETS], default="", allow_blank=True)
    overrides = serializers.DictField(
        required=False, default=dict,
        help_text=_("TrainConfig fields to change, e.g. {\"epochs\": 5, \"lora_r\": 16, \"learning_rate\": 0.0001}."),
    )
    parent = serializers.IntegerField(required=False, allow_null=True,
                                      help_text=_("Id of a model version of this domain to train on top of."))
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


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
