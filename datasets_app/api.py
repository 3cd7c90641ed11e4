"""The datasets REST API: datasets (recipes, freeze, import), QA pairs under review, frozen
versions with their downloads, and the domain's teachers and teacher keys.

Every viewset goes through ``domains.api.DomainAccessMixin``: querysets start from
``self.access.domain``, so an id of another domain is simply not found. Writes call the
services in ``datasets_app.services`` / ``versions``, the same ones the pages and the admin use.
Roles: viewers (and read keys) read; experts (and read/write keys) review, import, freeze and
start recipes; only owners (signed in) manage teachers and their keys. A key's secret is
accepted once and never returned.
"""
from __future__ import annotations

import io

from django.contrib.auth import get_user_model
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import FileResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from datasets_app import services
from datasets_app.models import (
    DatasetVersion,
    QADataset,
    QAPair,
    TeacherConfig,
    TeacherKey,
)
from datasets_app.serializers import (
    AssignSerializer,
    BulkResultSerializer,
    BulkReviewSerializer,
    DatasetSerializer,
    DatasetVersionSerializer,
    DownloadQuerySerializer,
    FreezeSerializer,
    ImportResultSerializer,
    ImportUploadSerializer,
    PairConflictSerializer,
    PairCreateSerializer,
    PairEditSerializer,
    PairFilterSerializer,
    PairReviewSerializer,
    QAPairSerializer,
    RecipeStartSerializer,
    TeacherKeySerializer,
    TeacherKeyUpdateSerializer,
    TeacherSerializer,
)
from datasets_app.tasks import RECIPE_KINDS
from datasets_app.versions import (
    EXPORT_FORMATS,
    VersionFilesMissing,
    export_version,
    freeze_dataset,
)
from domains.api import SLUG_PARAMETER, DomainAccessMixin, _no_store, api_errors
from domains.models import Chunk, Document, Role
from domains.serializers import JobDetailSerializer

User = get_user_model()


def _actor(request):
    """The signed-in user, or None for an API key (rows record no user then)."""
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


class ScopedContextMixin:
    """Serializers see the caller's domain (uniqueness checks, related ids limited to it)."""

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["domain"] = self.access.domain if self.access is not None else None
        return context


# --- datasets --------------------------------------------------------------------------------


def _annotated_datasets(domain):
    by_status = {
        f"n_{value}": Count("pairs", filter=Q(pairs__status=value)) for value in QAPair.Status.values
    }
    versions = (
        DatasetVersion.objects.filter(dataset=OuterRef("pk")).order_by().values("dataset")
        .annotate(n=Count("pk")).values("n")
    )
    return QADataset.objects.for_domain(domain).annotate(
        n_total=Count("pairs"),
        n_held_out=Count("pairs", filter=Q(pairs__held_out=True)),
        n_versions=Coalesce(Subquery(versions, output_field=IntegerField()), Value(0)),
        **by_status,
    )


@extend_schema(parameters=[SLUG_PARAMETER], tags=["datasets"])
@extend_schema_view(
    list=extend_schema(summary="List datasets", description="With pair counts by status and the stale flag."),
    retrieve=extend_schema(summary="A dataset"),
    create=extend_schema(summary="Create a dataset (experts, read/write keys)"),
    partial_update=extend_schema(summary="Change a dataset's description or review rule (experts)"),
)
class DatasetViewSet(
    ScopedContextMixin,
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """A domain's QA datasets; start recipes on one, import pairs into it, freeze it into a version."""

    serializer_class = DatasetSerializer
    read_role = Role.VIEWER
    write_role = Role.EXPERT
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        if self.schema_only:
            return QADataset.objects.none()
        return _annotated_datasets(self.access.domain)

    def _shown(self, dataset: QADataset, code: int = status.HTTP_200_OK, **kwargs) -> Response:
        fresh = self.get_queryset().get(pk=dataset.pk)
        return Response(self.get_serializer(fresh).data, status=code, **kwargs)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dataset = QADataset.objects.create(domain=self.access.domain, **serializer.validated_data)
        location = reverse("api:dataset-detail", args=[self.access.domain.slug, dataset.pk])
        return self._shown(dataset, status.HTTP_201_CREATED, headers={"Location": location})

    def update(self, request, *args, **kwargs):
        dataset = self.get_object()
        serializer = self.get_serializer(dataset, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return self._shown(dataset)

    # recipes ---------------------------------------------------------------------------

    @extend_schema(
        summary="Start a recipe (experts, read/write keys)",
        description="Queues a distillation job on the dataset: " + ", ".join(
            f"`{name}` → job kind `{kind}`" for name, kind in sorted(RECIPE_KINDS.items())
        ) + ". Follow it under jobs/. A re-run skips the units already done.",
        request=RecipeStartSerializer,
        responses={202: JobDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def recipes(self, request, *args, **kwargs):
        dataset = self.get_object()
        data = RecipeStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        domain = self.access.domain
        if "teacher" not in values:
            teacher = services.default_teacher(domain)
        elif values["teacher"] is None:
            teacher = None
        else:
            teacher = TeacherConfig.objects.for_domain(domain).filter(pk=values["teacher"]).first()
            if teacher is None:
                raise exceptions.ValidationError({"teacher": [_("No such teacher in this domain.")]})
        document_ids = sorted(set(values["documents"]))
        if document_ids:
            found = set(Document.objects.for_domain(domain).filter(pk__in=document_ids).values_list("pk", flat=True))
            missing = [str(pk) for pk in document_ids if pk not in found]
            if missing:
                raise exceptions.ValidationError(
                    {"documents": [_("No such document in this domain: %(ids)s.") % {"ids": ", ".join(missing)}]}
                )
        job = services.start_recipe(dataset=dataset, recipe=values["recipe"], teacher=teacher, by=_actor(request),
                                    per_chunk=values["per_chunk"], variants=values["variants"],
                                    document_ids=document_ids)
        return Response(
            JobDetailSerializer(job, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": reverse("api:job-detail", args=[domain.slug, job.pk])},
        )

    # freeze ----------------------------------------------------------------------------

    @extend_schema(
        summary="Freeze the approved pairs into a version (experts, read/write keys)",
        description="201 with the new version; 200 with the existing one when nothing changed since it was "
                    "frozen with the same split; 400 when there is nothing approved to freeze.",
        request=FreezeSerializer,
        responses={201: DatasetVersionSerializer, 200: DatasetVersionSerializer},
    )
    @action(detail=True, methods=["post"])
    def freeze(self, request, *args, **kwargs):
        dataset = self.get_object()
        data = FreezeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            outcome = freeze_dataset(dataset=dataset, by=_actor(request), **data.validated_data)
        except ValueError as exc:
            raise exceptions.ValidationError({"non_field_errors": [str(exc)]}) from exc
        version = outcome.version
        body = DatasetVersionSerializer(version, context=self.get_serializer_context()).data
        return Response(
            body,
            status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK,
            headers={"Location": reverse("api:dataset-version-detail", args=[self.access.domain.slug, version.pk])},
        )

    # import ----------------------------------------------------------------------------

    @extend_schema(
        summary="Import QA pairs or examples from a file (experts, read/write keys)",
        description="Multipart form data with the file in `file`. Rows already imported into the dataset are "
                    "counted as duplicates, not added twice; unreadable rows are listed by line. A file that "
                    "cannot be read at all is answered 400 with the reason, and nothing is added. "
                    "201 when pairs were added, 200 when none was.",
        request={"multipart/form-data": ImportUploadSerializer},
        responses={201: ImportResultSerializer, 200: ImportResultSerializer,
                   400: OpenApiResponse(description="No file, or a file that cannot be read.")},
    )
    @action(detail=True, methods=["post"], url_path="import", url_name="import",
            parser_classes=[MultiPartParser, FormParser])
    def import_file(self, request, *args, **kwargs):
        dataset = self.get_object()
        if getattr(request, "vsm_oversized", []):
            raise exceptions.ValidationError({"file": [_("The file is larger than the upload limit.")]})
        data = ImportUploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        outcome = services.import_file(
            dataset=dataset, by=_actor(request), data=upload.read(), filename=upload.name or "upload",
            fmt=data.validated_data["format"], approve=data.validated_data["approve"],
        )
        if outcome.file_error:
            raise exceptions.ValidationError({"file": [outcome.file_error]})
        body = {
            "created": outcome.created,
            "duplicates": outcome.duplicates,
            "errors": [{"line": line, "reason": reason} for line, reason in outcome.errors],
        }
        return Response(body, status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK)


# --- pairs -----------------------------------------------------------------------------------


class EditConflictError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "edit_conflict"


def _conflict(exc: services.EditConflict, context: dict) -> Response:
    current = QAPair.objects.select_related("assigned_to", "reviewed_by", "second_reviewed_by", "created_by").get(
        pk=exc.current.pk
    )
    body = {"detail": str(exc), "current": QAPairSerializer(current, context=context).data}
    return Response(body, status=status.HTTP_409_CONFLICT)


def filter_pairs(pairs, filters: dict, user=None):
    """Apply validated ``PairFilterSerializer`` values to a queryset of the caller's domain."""
    for name in ("dataset", "document"):
        if filters.get(name) is not None:
            pairs = pairs.filter(**{f"{name}_id": filters[name]})
    for name in ("status", "source", "held_out"):
        if filters.get(name) is not None:
            pairs = pairs.filter(**{name: filters[name]})
    who = filters.get("assigned_to")
    if who:
        if who == "none":
            pairs = pairs.filter(assigned_to__isnull=True)
        elif who == "me":
            pairs = pairs.filter(assigned_to=user) if user is not None else pairs.none()
        else:
            pairs = pairs.filter(assigned_to__username=who)
    return pairs


CONFLICT_RESPONSE = OpenApiResponse(
    PairConflictSerializer, description="The pair changed since that version; the body holds it as it is now."
)


@extend_schema(parameters=[SLUG_PARAMETER], tags=["pairs"])
@extend_schema_view(
    list=extend_schema(summary="List QA pairs", parameters=[PairFilterSerializer]),
    retrieve=extend_schema(summary="A QA pair, with its history"),
    create=extend_schema(
        summary="Add a pair by hand (experts, read/write keys)",
        request=PairCreateSerializer,
        responses={201: QAPairSerializer},
    ),
    partial_update=extend_schema(
        summary="Edit a pair (experts, read/write keys)",
        description="Send the `version` you edited. If someone changed the pair since, the answer is 409 with "
                    "the current pair; apply the change to it and send again. A pair marked *needs edit* goes "
                    "back to pending when its question or answer changes.",
        request=PairEditSerializer,
        responses={200: QAPairSerializer, 409: CONFLICT_RESPONSE},
    ),
)
class PairViewSet(
    ScopedContextMixin,
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """QA pairs under expert review: filter, read with history, add, edit, review."""

    read_role = Role.VIEWER
    write_role = Role.EXPERT
    http_method_names = ["get", "post", "patch", "head", "options"]

    serializer_class = QAPairSerializer

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "without_history": self.action == "list"}

    def get_queryset(self):
        if self.schema_only:
            return QAPair.objects.none()
        pairs = QAPair.objects.for_domain(self.access.domain).select_related(
            "assigned_to", "reviewed_by", "second_reviewed_by", "created_by"
        )
        if self.action == "list":
            filters = PairFilterSerializer(data=self.request.query_params)
            filters.is_valid(raise_exception=True)
            pairs = filter_pairs(pairs, filters.validated_data, _actor(self.request))
        elif self.action == "retrieve":
            pairs = pairs.prefetch_related("events__actor")
        return pairs

    def _detail(self, pair: QAPair, code: int = status.HTTP_200_OK, **kwargs) -> Response:
        fresh = self.get_queryset().prefetch_related("events__actor").get(pk=pair.pk)
        return Response(QAPairSerializer(fresh, context=self.get_serializer_context()).data, status=code,
                        **kwargs)

    def create(self, request, *args, **kwargs):
        data = PairCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        domain = self.access.domain
        if values.get("dataset") is None:
            dataset = QADataset.default_for(domain)
        else:
            dataset = QADataset.objects.for_domain(domain).filter(pk=values["dataset"]).first()
            if dataset is None:
                raise exceptions.ValidationError({"dataset": [_("No such dataset in this domain.")]})
        chunk = None
        if values.get("chunk") is not None:
            chunk = Chunk.objects.for_domain(domain).filter(pk=values["chunk"]).first()
            if chunk is None:
                raise exceptions.ValidationError({"chunk": [_("No such chunk in this domain.")]})
        with api_errors():
            pair = services.add_pair(
                dataset=dataset, by=_actor(request), question=values["question"], answer=values["answer"],
                chunk=chunk, held_out=values["held_out"], approve=values["approve"],
            )
        location = reverse("api:pair-detail", args=[domain.slug, pair.pk])
        return self._detail(pair, status.HTTP_201_CREATED, headers={"Location": location})

    def update(self, request, *args, **kwargs):
        pair = self.get_object()
        data = PairEditSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        version = changes.pop("version")
        try:
            with api_errors():
                pair = services.edit_pair(pair, by=_actor(request), expected_version=version, **changes)
        except services.EditConflict as exc:
            return _conflict(exc, self.get_serializer_context())
        return self._detail(pair)

    @extend_schema(
        summary="Review a pair (experts, read/write keys)",
        description="`approve`, `reject` (with a `reason`), `needs_edit` or `reopen`, optionally with an edit of "
                    "the question or answer in the same step. With `version`, a pair changed since is answered "
                    "409 with its current state. An action the pair's state does not allow is answered 400.",
        request=PairReviewSerializer,
        responses={200: QAPairSerializer, 409: CONFLICT_RESPONSE},
    )
    @action(detail=True, methods=["post"])
    def review(self, request, *args, **kwargs):
        pair = self.get_object()
        data = PairReviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            with api_errors():
                pair = services.review_pair(
                    pair, by=_actor(request), action=values["action"], expected_version=values["version"],
                    reason=values["reason"], question=values.get("question"), answer=values.get("answer"),
                )
        except services.EditConflict as exc:
            return _conflict(exc, self.get_serializer_context())
        return self._detail(pair)

    @extend_schema(
        summary="Review many pending pairs at once (experts, read/write keys)",
        description="Applies the action to every *pending* pair the filters select (the same filters as the "
                    "list); pairs someone already decided on are left alone. Answers how many changed.",
        request=BulkReviewSerializer,
        responses={200: BulkResultSerializer},
    )
    @action(detail=False, methods=["post"], url_path="bulk-review", url_name="bulk-review")
    def bulk_review(self, request, *args, **kwargs):
        data = BulkReviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        pairs = filter_pairs(QAPair.objects.for_domain(self.access.domain), values, _actor(request))
        count = services.bulk_review(pairs, by=_actor(request), action=values["action"])
        return Response({"count": count})

    @extend_schema(
        summary="Assign pairs to a reviewer (experts, read/write keys)",
        description="Gives every pair the filters select (the same filters as the list) to `user`, a member "
                    "of the domain; `user: null` takes them back. Answers how many changed.",
        request=AssignSerializer,
        responses={200: BulkResultSerializer},
    )
    @action(detail=False, methods=["post"])
    def assign(self, request, *args, **kwargs):
        data = AssignSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        to = None
        if values["user"] is not None:
            to = User.objects.filter(username=values["user"], memberships__domain=self.access.domain).first()
            if to is None:
                raise exceptions.ValidationError({"user": [_("No member of this domain has that username.")]})
        pairs = filter_pairs(QAPair.objects.for_domain(self.access.domain), values, _actor(request))
        if not pairs.exists():
            return Response({"count": 0})
        with api_errors():
            count = services.assign_pairs(pairs, to=to, by=_actor(request))
        return Response({"count": count})


# --- versions --------------------------------------------------------------------------------


class VersionGone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_detail = gettext_lazy("The files of this version are missing.")
    default_code = "version_files_missing"


class AttachmentNegotiation(DefaultContentNegotiation):
    """Downloads use ``?format=`` for the export format, not for choosing a DRF renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(parameters=[SLUG_PARAMETER], tags=["versions"])
@extend_schema_view(
    list=extend_schema(
        summary="List dataset versions",
        parameters=[OpenApiParameter("dataset", OpenApiTypes.INT, description="Only versions of this dataset.")],
    ),
    retrieve=extend_schema(summary="A dataset version, with counts, stats and hashes"),
)
class VersionViewSet(ScopedContextMixin, DomainAccessMixin, viewsets.ReadOnlyModelViewSet):
    """Frozen, immutable snapshots of a dataset; download one in a training format."""

    serializer_class = DatasetVersionSerializer
    read_role = Role.VIEWER
    write_role = Role.EXPERT

    def get_queryset(self):
        if self.schema_only:
            return DatasetVersion.objects.none()
        versions = DatasetVersion.objects.for_domain(self.access.domain).select_related("created_by", "domain")
        if self.action == "list" and self.request.query_params.get("dataset"):
            try:
                versions = versions.filter(dataset_id=int(self.request.query_params["dataset"]))
            except ValueError:
                raise exceptions.ValidationError({"dataset": [_("Give a dataset id.")]}) from None
        return versions

    @extend_schema(
        summary="Download a version in a training format",
        description="Formats: " + "; ".join(f"`{k}`: {v}" for k, v in EXPORT_FORMATS.items())
                    + ". Splits: train, validation, test or all. 410 when the version's files are missing.",
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=list(EXPORT_FORMATS), default="alpaca"),
            OpenApiParameter("split", OpenApiTypes.STR, enum=["train", "validation", "test", "all"],
                             default="train"),
        ],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            400: OpenApiResponse(description="Unknown format or split."),
            410: OpenApiResponse(description="The version's files are missing from the data folder."),
        },
    )
    @action(detail=True, methods=["get"], content_negotiation_class=AttachmentNegotiation)
    def download(self, request, *args, **kwargs):
        version = self.get_object()
        query = DownloadQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            export = export_version(version, query.validated_data["format"], query.validated_data["split"])
        except VersionFilesMissing as exc:
            raise VersionGone(str(exc)) from exc
        return FileResponse(
            io.BytesIO(export.data), as_attachment=True, filename=export.filename, content_type=export.content_type
        )


# --- teachers --------------------------------------------------------------------------------


@extend_schema(parameters=[SLUG_PARAMETER], tags=["teachers"])
@extend_schema_view(
    list=extend_schema(summary="List teachers", description="The LLMs recipes can ask; never their keys."),
    retrieve=extend_schema(summary="A teacher"),
    create=extend_schema(summary="Add a teacher (owners)"),
    update=extend_schema(summary="Change a teacher (owners)"),
    partial_update=extend_schema(summary="Change a teacher (owners)"),
    destroy=extend_schema(summary="Remove a teacher and its keys (owners)"),
)
class TeacherViewSet(ScopedContextMixin, DomainAccessMixin, viewsets.ModelViewSet):
    """Members see which teachers exist; owners add, change and remove them."""

    serializer_class = TeacherSerializer
    read_role = Role.VIEWER
    write_role = Role.OWNER

    def get_queryset(self):
        if self.schema_only:
            return TeacherConfig.objects.none()
        return TeacherConfig.objects.for_domain(self.access.domain).select_related("created_by").annotate(
            n_keys=Count("keys", filter=Q(keys__disabled=False))
        )

    def _saved(self, serializer, **extra) -> TeacherConfig:
        teacher = serializer.save(**extra)
        if serializer.validated_data.get("is_default"):
            services.set_default_teacher(teacher, domain=self.access.domain)
        return self.get_queryset().get(pk=teacher.pk)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        teacher = self._saved(serializer, domain=self.access.domain, created_by=_actor(request))
        location = reverse("api:teacher-detail", args=[self.access.domain.slug, teacher.pk])
        return Response(self.get_serializer(teacher).data, status=status.HTTP_201_CREATED,
                        headers={"Location": location})

    def update(self, request, *args, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        return Response(self.get_serializer(self._saved(serializer)).data)


@extend_schema(parameters=[SLUG_PARAMETER], tags=["teachers"])
@extend_schema_view(
    list=extend_schema(
        summary="List teacher keys (owners)",
        description="Label, fingerprint, usage and state of each stored key; never the secret.",
        parameters=[OpenApiParameter("teacher", OpenApiTypes.INT, description="Only keys of this teacher.")],
    ),
    retrieve=extend_schema(summary="A teacher key (owners)"),
    create=extend_schema(
        summary="Store a teacher key (owners)",
        description="The `secret` is stored encrypted and never shown again; the answer carries its fingerprint.",
    ),
    partial_update=extend_schema(
        summary="Rename, disable or re-enable a teacher key (owners)",
        request=TeacherKeyUpdateSerializer,
        responses=TeacherKeyUpdateSerializer,
    ),
    destroy=extend_schema(summary="Delete a teacher key (owners)"),
)
class TeacherKeyViewSet(
    ScopedContextMixin,
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Owners (signed in, never API keys) store, disable and delete the keys teachers use."""

    serializer_class = TeacherKeySerializer
    read_role = Role.OWNER
    write_role = Role.OWNER
    users_only = True
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self):
        return TeacherKeyUpdateSerializer if self.action == "partial_update" else TeacherKeySerializer

    def get_queryset(self):
        if self.schema_only:
            return TeacherKey.objects.none()
        keys = TeacherKey.objects.filter(teacher__domain=self.access.domain).select_related("teacher", "created_by")
        if self.action == "list" and self.request.query_params.get("teacher"):
            try:
                keys = keys.filter(teacher_id=int(self.request.query_params["teacher"]))
            except ValueError:
                raise exceptions.ValidationError({"teacher": [_("Give a teacher id.")]}) from None
        return keys

    def finalize_response(self, request, response, *args, **kwargs):
        return super().finalize_response(request, _no_store(response), *args, **kwargs)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        with api_errors():
            key = services.add_teacher_key(
                teacher=values["teacher"], label=values.get("label", ""), secret=values["secret"], by=_actor(request)
            )
        return Response(self.get_serializer(key).data, status=status.HTTP_201_CREATED)
