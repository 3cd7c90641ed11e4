"""Small serializers for the REST API: what a caller sees of domains, members, keys and jobs.

Writes go through ``domains.services``; these serializers only shape input and output.
Secrets and hashes never appear in a representation, except the new key's secret, once.
"""
from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from domains.models import ApiKey, Chunk, Document, DocumentPage, Domain, Job, Membership, Role
from domains.services import SELFCHECK_MAX_STEP_SECONDS, SELFCHECK_MAX_STEPS


class DomainSerializer(serializers.ModelSerializer):
    role = serializers.ChoiceField(
        choices=Role.choices, source="my_role", read_only=True, help_text=_("Your role in this domain.")
    )

    class Meta:
        model = Domain
        fields = ["slug", "name", "description", "language", "model_hub", "created_at", "role"]
        read_only_fields = ["created_at"]


class DomainUpdateSerializer(DomainSerializer):
    """The slug names the domain in URLs and on disk, so it cannot change."""

    class Meta(DomainSerializer.Meta):
        read_only_fields = ["slug", "created_at"]


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "username", "role", "created_at"]
        read_only_fields = ["id", "user", "role", "created_at"]


class MembershipCreateSerializer(serializers.Serializer):
    user = serializers.CharField(max_length=254, help_text=_("Username or e-mail address of an existing user."))
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class MembershipRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiKeySerializer(serializers.ModelSerializer):
    display = serializers.SerializerMethodField(help_text=_("How the key starts, to recognise it; not the secret."))
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "scope", "display", "created_by", "created_at", "last_used_at", "revoked_at", "is_active",
        ]
        read_only_fields = fields

    def get_display(self, key: ApiKey) -> str:
        return f"{ApiKey.PREFIX}{key.prefix}_…"


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text=_("What will use the key, e.g. the intranet chat bot."))
    scope = serializers.ChoiceField(choices=ApiKey.Scope.choices, default=ApiKey.Scope.READ)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text=_("The secret. Shown only in this response; store it now."))

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class SelfcheckParamsSerializer(serializers.Serializer):
    """A worker check: N short steps that show the queue, progress and cancel working."""

    steps = serializers.IntegerField(min_value=1, max_value=SELFCHECK_MAX_STEPS, default=10)
    step_seconds = serializers.FloatField(min_value=0, max_value=SELFCHECK_MAX_STEP_SECONDS, default=0.5)


# Job kinds a caller may start through the API, with the serializer of their parameters.
STARTABLE_JOB_PARAMS: dict[str, type[serializers.Serializer]] = {
    "selfcheck": SelfcheckParamsSerializer,
}


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="JobParams",
        serializers=list(STARTABLE_JOB_PARAMS.values()),
        resource_type_field_name=None,
    )
)
class JobParamsField(serializers.JSONField):
    """Parameters of the job; their shape depends on ``kind``."""


class JobStartSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=sorted(STARTABLE_JOB_PARAMS))
    params = JobParamsField(required=False, default=dict)

    def validate(self, attrs):
        params = attrs.get("params") or {}
        if not isinstance(params, dict):
            raise serializers.ValidationError({"params": [_("Give the parameters as a JSON object.")]})
        inner = STARTABLE_JOB_PARAMS[attrs["kind"]](data=params)
        if not inner.is_valid():
            raise serializers.ValidationError({"params": inner.errors})
        return {"kind": attrs["kind"], "params": dict(inner.validated_data)}


class JobSerializer(serializers.ModelSerializer):
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    percent = serializers.IntegerField(read_only=True, min_value=0, max_value=100)
    is_finished = serializers.BooleanField(read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Job
        fields = [
            "id", "kind", "kind_label", "status", "is_finished", "progress_done", "progress_total", "percent",
            "message", "error", "cancel_requested", "attempts", "max_attempts", "created_by", "created_at",
            "started_at", "heartbeat_at", "finished_at",
        ]
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    """A job with its parameters, result, log tail and worker."""

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "params", "result", "log_tail", "worker"]
        read_only_fields = fields


# --- documents ---------------------------------------------------------------------------


class DocumentSerializer(serializers.ModelSerializer):
    """A document and what ingestion made of it; ``job`` is its last ingest job (progress while read)."""

    uploaded_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    job = JobSerializer(source="last_job", read_only=True, allow_null=True)
    ocr_pages = serializers.ListField(child=serializers.IntegerField(), read_only=True,
                                      help_text=_("Numbers of the pages read by OCR."))
    warnings = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Document
        fields = [
            "id", "filename", "kind", "status", "error", "error_code", "size_bytes", "content_hash", "page_count",
            "ocr_pages", "ocr_confidence", "chunk_count", "warnings", "uploaded_by", "created_at", "ingested_at", "job",
        ]
        read_only_fields = fields


class DocumentUploadSerializer(serializers.Serializer):
    """Multipart form data: one or more files in the field ``files``."""

    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False),
        help_text=_("The documents; send the field once per file."),
    )


class UploadOutcomeSerializer(serializers.Serializer):
    """What happened to one uploaded file."""

    filename = serializers.CharField()
    outcome = serializers.ChoiceField(
        choices=[("uploaded", "uploaded"), ("duplicate", "duplicate"), ("refused", "refused")],
        help_text=_("uploaded: stored and queued for reading; duplicate: the same content is already the "
                    "document given; refused: not stored, or stored but unreadable (see message)."),
    )
    message = serializers.CharField(help_text=_("The outcome in words, for a person."))
    document = DocumentSerializer(allow_null=True, help_text=_("The new or existing document, if there is one."))


class UploadResultSerializer(serializers.Serializer):
    results = UploadOutcomeSerializer(many=True)


class DocumentPageSerializer(serializers.ModelSerializer):
    class Meta:
        model = DocumentPage
        fields = ["number", "text", "ocr", "ocr_confidence"]
        read_only_fields = fields


class ChunkSerializer(serializers.ModelSerializer):
    heading_path = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Chunk
        fields = [
            "id", "ordinal", "text", "heading_path", "page_start", "page_end", "char_start", "char_end", "length",
            "content_hash",
        ]
        read_only_fields = fields


class ChunkingSerializer(serializers.ModelSerializer):
    """A domain's chunk settings; changing them re-chunks its ready documents (``job``)."""

    job = JobSerializer(read_only=True, allow_null=True,
                        help_text=_("The re-chunking job queued by this change, if any."))

    class Meta:
        model = Domain
        fields = ["chunk_target_chars", "chunk_overlap_chars", "job"]

    def validate(self, attrs):
        size = attrs.get("chunk_target_chars", getattr(self.instance, "chunk_target_chars", None))
        overlap = attrs.get("chunk_overlap_chars", getattr(self.instance, "chunk_overlap_chars", None))
        if size is not None and overlap is not None and overlap >= size:
            raise serializers.ValidationError(
                {"chunk_overlap_chars": [_("The overlap must be smaller than the chunk size.")]}
            )
        return attrs
