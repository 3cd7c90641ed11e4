"""Serializers of the datasets API: what a caller sees of datasets, QA pairs, versions and teachers.

Writes go through ``datasets_app.services`` / ``versions``; these only shape input and output.
A teacher key's secret is write-only: no representation carries it, nor its ciphertext.
"""
from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from datasets_app.models import (
    DatasetVersion,
    QADataset,
    QAPair,
    QAPairEvent,
    TeacherConfig,
    TeacherKey,
)
from datasets_app.services import ACTIONS
from datasets_app.tasks import RECIPE_KINDS
from datasets_app.services import IMPORT_FORMATS
from datasets_app.versions import EXPORT_FORMATS, SPLITS

# --- datasets --------------------------------------------------------------------------------


class PairCountsSerializer(serializers.Serializer):
    """Pairs of a dataset by review status (annotated on the queryset by the viewset)."""

    total = serializers.IntegerField(source="n_total", read_only=True)
    pending = serializers.IntegerField(source="n_pending", read_only=True)
    approved = serializers.IntegerField(source="n_approved", read_only=True)
    rejected = serializers.IntegerField(source="n_rejected", read_only=True)
    needs_edit = serializers.IntegerField(source="n_needs_edit", read_only=True)
    held_out = serializers.IntegerField(source="n_held_out", read_only=True)


class DatasetSerializer(serializers.ModelSerializer):
    counts = PairCountsSerializer(source="*", read_only=True)
    stale = serializers.SerializerMethodField(
        help_text=_("True when chunks the pairs came from were changed or removed since; review them again.")
    )
    version_count = serializers.IntegerField(source="n_versions", read_only=True)

    class Meta:
        model = QADataset
        fields = [
            "id", "name", "description", "double_review", "stale", "stale_since", "stale_reason", "counts",
            "version_count", "created_at",
        ]
        read_only_fields = ["id", "stale_since", "stale_reason", "created_at"]

    def validate(self, attrs: dict) -> dict:
        if self.instance is None and "name" not in attrs:  # the default name is as taken as a given one
            try:
                attrs["name"] = self.validate_name(QADataset._meta.get_field("name").default)
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({"name": exc.detail}) from None
        return attrs

    def get_stale(self, dataset: QADataset) -> bool:
        return dataset.stale_since is not None

    def validate_name(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError(_("Give the dataset a name."))
        domain = self.context["domain"]
        others = QADataset.objects.for_domain(domain).filter(name=value)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise serializers.ValidationError(_("This domain already has a dataset of that name."))
        return value


class RecipeStartSerializer(serializers.Serializer):
    """Start a distillation recipe on a dataset; it runs as a job."""

    recipe = serializers.ChoiceField(choices=sorted(RECIPE_KINDS))
    teacher = serializers.IntegerField(
        required=False, allow_null=True,
        help_text=_("Id of one of the domain's teachers; null for the built-in offline teacher; "
                    "left out, the domain's default teacher (or the offline one)."),
    )
    per_chunk = serializers.IntegerField(min_value=1, max_value=20, default=3,
                                         help_text=_("QA recipe: questions asked per chunk."))
    variants = serializers.IntegerField(min_value=1, max_value=10, default=3,
                                        help_text=_("Paraphrase recipe: variants per approved question."))
    documents = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list,
        help_text=_("Only chunks of these documents (ids); empty means all documents."),
    )


class FreezeSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    seed = serializers.IntegerField(min_value=0, default=0, help_text=_("Seed of the train/validation split."))
    validation_fraction = serializers.FloatField(min_value=0.0, max_value=0.5, default=0.05)


class ImportUploadSerializer(serializers.Serializer):
    """Multipart form data: the file in ``file``."""

    file = serializers.FileField(
        allow_empty_file=True, use_url=False,
        help_text=_("CSV, TSV, JSONL or XLSX with question/answer columns; Alpaca JSONL (name ending .json or "
                    "containing 'alpaca'); ShareGPT JSONL (name containing 'sharegpt')."),
    )
    format = serializers.ChoiceField(
        choices=list(IMPORT_FORMATS), default="auto",
        help_text=_("auto (QA pairs), alpaca, sharegpt, st-pairs, st-triplets, st-scored, flagembedding, entities "
                    "or judge: the formats the version downloads write."),
    )
    approve = serializers.BooleanField(default=False, help_text=_("Approve the imported pairs at once."))


class RowErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    reason = serializers.CharField()


class ImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text=_("New pairs."))
    duplicates = serializers.IntegerField(help_text=_("Rows already imported into this dataset, skipped."))
    errors = RowErrorSerializer(many=True, help_text=_("Rows that could not be read, by line."))


# --- pairs -----------------------------------------------------------------------------------


class QAPairEventSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = QAPairEvent
        fields = ["action", "actor", "before", "after", "note", "at"]
        read_only_fields = fields


class QAPairSerializer(serializers.ModelSerializer):
    """A pair; ``history`` (oldest first) is left out of lists (context ``without_history``)."""

    assigned_to = serializers.SlugRelatedField(slug_field="username", read_only=True)
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    second_reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    # A plain string: the same choices as ``status`` (or empty), one enum in the schema.
    second_verdict = serializers.CharField(read_only=True, help_text=_("Double review: the second verdict, if any."))
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    made_by = serializers.CharField(read_only=True)
    evidence = serializers.CharField(read_only=True)
    agreement = serializers.BooleanField(
        read_only=True, allow_null=True,
        help_text=_("Double review: did the two reviewers agree? null until both decided."),
    )
    history = QAPairEventSerializer(source="events", many=True, read_only=True, required=False,
                                    help_text=_("What happened to the pair, oldest first; not in lists."))

    class Meta:
        model = QAPair
        fields = [
            "id", "dataset", "question", "answer", "status", "reject_reason", "source", "made_by", "rule",
            "quality_score", "chunk", "document", "source_text", "evidence", "held_out", "parent", "assigned_to",
            "reviewed_by", "reviewed_at", "second_reviewed_by", "second_verdict", "agreement", "version", "job",
            "created_by", "created_at", "updated_at", "history",
        ]
        read_only_fields = fields

    def get_fields(self):
        fields = super().get_fields()
        if self.context.get("without_history"):
            fields.pop("history")
        return fields


class PairCreateSerializer(serializers.Serializer):
    """A pair written by hand."""

    dataset = serializers.IntegerField(required=False, help_text=_("Dataset id; left out, the domain's 'main'."))
    question = serializers.CharField()
    answer = serializers.CharField()
    chunk = serializers.IntegerField(required=False, allow_null=True, help_text=_("The chunk it is grounded in."))
    held_out = serializers.BooleanField(default=False)
    approve = serializers.BooleanField(default=False, help_text=_("Approve it at once."))


class PairEditSerializer(serializers.Serializer):
    """An edit; ``version`` is the pair's version the editor saw (optimistic locking)."""

    version = serializers.IntegerField(min_value=1)
    question = serializers.CharField(required=False)
    answer = serializers.CharField(required=False)
    held_out = serializers.BooleanField(required=False)


class PairReviewSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=sorted(ACTIONS))
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="",
                                   help_text=_("Required to reject."))
    version = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, default=None,
        help_text=_("The version you reviewed; if the pair changed since, the answer is 409."),
    )
    question = serializers.CharField(required=False, help_text=_("Edit the question in the same step."))
    answer = serializers.CharField(required=False, help_text=_("Edit the answer in the same step."))


class PairConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    current = QAPairSerializer(help_text=_("The pair as it is now; apply your change to it again."))


BULK_ACTIONS = ("approve", "reject", "needs_edit")


class OptionalBooleanField(serializers.BooleanField):
    """A boolean filter that is absent, not false, when a query string leaves it out."""

    default_empty_html = serializers.empty


class PairFilterSerializer(serializers.Serializer):
    """The list's filters (query parameters), shared by the bulk review."""

    dataset = serializers.IntegerField(required=False)
    # A string checked against the statuses (not an enum of its own: the pair's status is the one enum).
    status = serializers.CharField(required=False, help_text=_("pending, approved, rejected or needs_edit."))
    source = serializers.CharField(required=False, help_text=_("teacher, paraphrase, manual, import or feedback."))
    document = serializers.IntegerField(required=False)
    held_out = OptionalBooleanField(required=False)
    assigned_to = serializers.CharField(required=False,
                                        help_text=_("Username of the reviewer, or 'none' for unassigned pairs."))


    def validate_status(self, value: str) -> str:
        if value not in QAPair.Status.values:
            raise serializers.ValidationError(
                _("Unknown status %(status)s; use %(known)s.") % {"status": value,
                                                                  "known": ", ".join(QAPair.Status.values)}
            )
        return value

    def validate_source(self, value: str) -> str:
        if value not in QAPair.Source.values:
            raise serializers.ValidationError(
                _("Unknown source %(source)s; use %(known)s.") % {"source": value,
                                                                  "known": ", ".join(QAPair.Source.values)}
            )
        return value


class BulkReviewSerializer(PairFilterSerializer):
    """Review every *pending* pair the filters select; decided pairs are never overridden."""

    status = None  # only pending pairs are ever touched
    action = serializers.ChoiceField(choices=BULK_ACTIONS)


class AssignSerializer(PairFilterSerializer):
    """Give the pairs the filters select to a member of the domain (``user`` null: take them back)."""

    user = serializers.CharField(allow_null=True, help_text=_("Username of a member of the domain, or null."))


class BulkResultSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text=_("Pairs that changed."))


# --- versions --------------------------------------------------------------------------------


class DatasetVersionSerializer(serializers.ModelSerializer):
    note = serializers.CharField(source="name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    files_present = serializers.SerializerMethodField(
        help_text=_("False when the version's files are missing from the data folder.")
    )

    class Meta:
        model = DatasetVersion
        fields = [
            "id", "dataset", "number", "note", "content_hash", "version_hash", "split_config", "stats", "counts",
            "files_present", "created_by", "created_at",
        ]
        read_only_fields = fields

    def get_files_present(self, version: DatasetVersion) -> bool:
        return version.path.is_dir()


class DownloadQuerySerializer(serializers.Serializer):
    format = serializers.CharField(required=False, default="alpaca")
    split = serializers.CharField(required=False, default="train")

    def validate_format(self, value: str) -> str:
        if value not in EXPORT_FORMATS:
            raise serializers.ValidationError(
                _("Unknown format %(fmt)s; use one of %(known)s.") % {"fmt": value, "known": ", ".join(EXPORT_FORMATS)}
            )
        return value

    def validate_split(self, value: str) -> str:
        known = (*SPLITS, "all")
        if value not in known:
            raise serializers.ValidationError(
                _("Unknown split %(split)s; use one of %(known)s.") % {"split": value, "known": ", ".join(known)}
            )
        return value


# --- teachers --------------------------------------------------------------------------------


class TeacherSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    label = serializers.CharField(read_only=True)
    env_var = serializers.CharField(read_only=True, help_text=_("Environment variable read for more keys."))
    key_count = serializers.IntegerField(source="n_keys", read_only=True, help_text=_("Stored keys, enabled."))

    class Meta:
        model = TeacherConfig
        fields = [
            "id", "name", "provider", "model", "base_url", "model_path", "temperature", "concurrency", "rpm",
            "max_output_tokens", "is_default", "label", "env_var", "key_count", "created_by", "created_at",
        ]
        read_only_fields = ["id", "label", "env_var", "key_count", "created_by", "created_at"]
        # Uniqueness per domain is checked in validate(); the domain is not a field.
        validators = []

    def validate(self, attrs):
        domain = self.context["domain"]
        name = attrs.get("name", getattr(self.instance, "name", None))
        others = TeacherConfig.objects.for_domain(domain).filter(name=name)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise serializers.ValidationError({"name": [_("This domain already has a teacher of that name.")]})
        # The model's own rules (a Gemini teacher needs a model, …) on the row as it would be saved.
        probe = TeacherConfig(domain=domain)
        if self.instance is not None:
            for field in TeacherConfig._meta.concrete_fields:
                setattr(probe, field.attname, getattr(self.instance, field.attname))
        for name_, value in attrs.items():
            setattr(probe, name_, value)
        from django.core.exceptions import ValidationError as DjangoValidationError

        try:
            probe.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"non_field_errors": exc.messages}) from exc
        return attrs


class TeacherKeySerializer(serializers.ModelSerializer):
    """A stored key: label, fingerprint and usage; the secret is accepted on create and never shown."""

    teacher = serializers.PrimaryKeyRelatedField(queryset=TeacherConfig.objects.none())
    secret = serializers.CharField(write_only=True, trim_whitespace=True, max_length=4000,
                                   style={"input_type": "password"},
                                   help_text=_("The API key; stored encrypted, never shown again."))
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TeacherKey
        fields = [
            "id", "teacher", "label", "secret", "fingerprint", "disabled", "requests", "failures", "prompt_tokens",
            "completion_tokens", "last_error", "last_used_at", "created_by", "created_at",
        ]
        read_only_fields = [
            "id", "fingerprint", "requests", "failures", "prompt_tokens", "completion_tokens", "last_error",
            "last_used_at", "created_by", "created_at",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        domain = self.context.get("domain")
        if domain is not None:
            self.fields["teacher"].queryset = TeacherConfig.objects.for_domain(domain)


class TeacherKeyUpdateSerializer(serializers.ModelSerializer):
    """Rename, disable or re-enable a key; its teacher and its secret stay."""

    teacher = serializers.PrimaryKeyRelatedField(read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TeacherKey
        fields = [f for f in TeacherKeySerializer.Meta.fields if f != "secret"]
        read_only_fields = [f for f in fields if f not in ("label", "disabled")]
