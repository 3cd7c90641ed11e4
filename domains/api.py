"""The REST API: domains, members, API keys and jobs, every call through the access gate.

``DomainAccessMixin`` resolves the caller's ``Access`` once, in ``initial()``, before any
handler runs; nested viewsets build every queryset from ``self.access.domain``. So an
outsider (or a key of another domain) gets 404 for anything in the domain, a role that is
too low gets 403, and an id that belongs to another domain is simply not found.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import OuterRef, Subquery, Value
from django.http import Http404, HttpResponse
from django.template import engines
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from drf_spectacular.views import SpectacularRedocView
from rest_framework import exceptions, generics, mixins, permissions, serializers as drf_serializers, status, viewsets
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle

from domains import access as gate
from domains import services
from domains.document_outcomes import describe_outcome
from domains.jobs import cancel_job
from domains.models import ApiKey, Chunk, Document, DocumentPage, Domain, Job, Membership, Role
from domains.serializers import (
    STARTABLE_JOB_PARAMS,
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    ChunkingSerializer,
    ChunkSerializer,
    DocumentPageSerializer,
    DocumentSerializer,
    DocumentUploadSerializer,
    DomainSerializer,
    DomainUpdateSerializer,
    JobDetailSerializer,
    JobSerializer,
    JobStartSerializer,
    MembershipCreateSerializer,
    MembershipRoleSerializer,
    MembershipSerializer,
    UploadResultSerializer,
)

SLUG_REGEX = r"[a-z0-9][a-z0-9-]*"

SLUG_PARAMETER = OpenApiParameter(
    "slug", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=f"^{SLUG_REGEX}$", description="The domain's slug."
)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn a service's Django ValidationError into a DRF 400 with the same messages."""
    try:
        yield
    except DjangoValidationError as exc:
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        raise exceptions.ValidationError(detail) from exc


def _no_store(response: Response) -> Response:
    """Responses that carry a secret must not be kept by caches or proxies."""
    response["Cache-Control"] = "no-store"
    return response


class DomainAccessMixin:
    """The access gate for API views; resolves ``self.access`` for the domain in the URL.

    Reads need ``read_role``, writes ``write_role``. ``users_only`` views refuse API keys
    (keys never reach the owner role anyway; this says why).
    """

    domain_url_kwarg = "slug"
    read_role: Role = Role.VIEWER
    write_role: Role = Role.EXPERT
    users_only = False
    access: gate.Access | None = None

    def required_role(self) -> Role:
        return self.read_role if self.request.method in permissions.SAFE_METHODS else self.write_role

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles
        slug = kwargs.get(self.domain_url_kwarg)
        if slug is None:
            return
        try:
            self.access = gate.for_request(request, slug, min_role=self.required_role())
        except Http404:
            raise exceptions.NotFound(_("No such domain.")) from None
        except DjangoPermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        if self.users_only and self.access.api_key is not None:
            raise exceptions.PermissionDenied(_("API keys cannot do this; sign in as an owner of the domain."))

    @property
    def schema_only(self) -> bool:
        """True while drf-spectacular inspects the view without a request to serve."""
        return getattr(self, "swagger_fake_view", False)


# --- domains -----------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List my domains", description="Your domains, or the API key's own domain."),
    create=extend_schema(summary="Create a domain", description="Signed-in users only; you become its owner."),
    retrieve=extend_schema(summary="A domain (members)"),
    update=extend_schema(summary="Change a domain (owners)"),
    partial_update=extend_schema(summary="Change a domain (owners)"),
)
class DomainViewSet(
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    lookup_field = "slug"
    lookup_value_regex = SLUG_REGEX
    write_role = Role.OWNER

    def get_serializer_class(self):
        return DomainUpdateSerializer if self.action in ("update", "partial_update") else DomainSerializer

    def get_queryset(self):
        if self.schema_only:
            return Domain.objects.none()
        domains = gate.domains_for_request(self.request)
        if isinstance(self.request.auth, ApiKey):
            return domains.annotate(my_role=Value(self.request.auth.role.value))
        role = Membership.objects.filter(domain=OuterRef("pk"), user=self.request.user).values("role")[:1]
        return domains.annotate(my_role=Subquery(role))

    def get_object(self) -> Domain:
        domain = self.access.domain
        domain.my_role = self.access.role.value
        return domain

    def create(self, request, *args, **kwargs):
        if isinstance(request.auth, ApiKey):
            raise exceptions.PermissionDenied(_("API keys belong to one domain and cannot create domains."))
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with api_errors():
            domain = services.create_domain(owner=request.user, **serializer.validated_data)
        domain.my_role = Role.OWNER.value
        return Response(
            DomainSerializer(domain, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api:domain-detail", args=[domain.slug])},
        )


# --- members -----------------------------------------------------------------------------


@extend_schema(parameters=[SLUG_PARAMETER], tags=["members"])
@extend_schema_view(
    list=extend_schema(summary="List members"),
    retrieve=extend_schema(summary="A member"),
    create=extend_schema(
        summary="Add a member (owners)",
        request=MembershipCreateSerializer,
        responses={201: MembershipSerializer},
    ),
    update=extend_schema(
        summary="Change a member's role (owners)", request=MembershipRoleSerializer, responses=MembershipSerializer
    ),
    partial_update=extend_schema(
        summary="Change a member's role (owners)", request=MembershipRoleSerializer, responses=MembershipSerializer
    ),
    destroy=extend_schema(summary="Remove a member (owners)", description="A domain keeps at least one owner."),
)
class MemberViewSet(DomainAccessMixin, viewsets.ModelViewSet):
    """Any member sees who is in the domain; only owners change it."""

    serializer_class = MembershipSerializer
    write_role = Role.OWNER

    def get_queryset(self):
        if self.schema_only:
            return Membership.objects.none()
        return Membership.objects.for_domain(self.access.domain).select_related("user")

    def create(self, request, *args, **kwargs):
        data = MembershipCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with api_errors():
            membership = services.add_member(
                domain=self.access.domain,
                user_identifier=data.validated_data["user"],
                role=data.validated_data["role"],
                by=request.user,
            )
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        membership = self.get_object()
        data = MembershipRoleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with api_errors():
            membership = services.change_role(membership=membership, role=data.validated_data["role"], by=request.user)
        return Response(self.get_serializer(membership).data)

    def destroy(self, request, *args, **kwargs):
        membership = self.get_object()
        with api_errors():
            services.remove_member(membership=membership, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- API keys ----------------------------------------------------------------------------


@extend_schema(parameters=[SLUG_PARAMETER], tags=["api-keys"])
@extend_schema_view(
    list=extend_schema(summary="List API keys (owners)", description="Secrets are never shown again."),
    retrieve=extend_schema(summary="An API key (owners)"),
    create=extend_schema(
        summary="Issue an API key (owners)",
        description="The response carries the secret as `key`, once; only its hash is stored.",
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer},
    ),
    destroy=extend_schema(
        summary="Revoke an API key (owners)",
        description="Revokes the key; the row stays, so its history remains visible.",
    ),
)
class ApiKeyViewSet(
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Owners (signed-in users, never keys) list, issue and revoke the domain's keys."""

    serializer_class = ApiKeySerializer
    read_role = Role.OWNER
    write_role = Role.OWNER
    users_only = True

    def get_queryset(self):
        if self.schema_only:
            return ApiKey.objects.none()
        return ApiKey.objects.for_domain(self.access.domain).select_related("created_by")

    def create(self, request, *args, **kwargs):
        data = ApiKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with api_errors():
            key, secret = services.issue_api_key(
                domain=self.access.domain, created_by=request.user, **data.validated_data
            )
        key.key = secret
        body = ApiKeyCreatedSerializer(key, context=self.get_serializer_context()).data
        return _no_store(Response(body, status=status.HTTP_201_CREATED))

    def perform_destroy(self, instance: ApiKey) -> None:
        services.revoke_api_key(key=instance, by=self.request.user)

    @extend_schema(summary="Revoke an API key (owners)", request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, *args, **kwargs):
        key = services.revoke_api_key(key=self.get_object(), by=request.user)
        return Response(self.get_serializer(key).data)


# --- jobs --------------------------------------------------------------------------------


def _start_selfcheck(access: gate.Access, user, params: dict) -> Job:
    return services.start_selfcheck(domain=access.domain, created_by=user, **params)


# How each kind in STARTABLE_JOB_PARAMS is started: a service that queues the job.
JOB_STARTERS: dict[str, Callable[[gate.Access, object, dict], Job]] = {
    "selfcheck": _start_selfcheck,
}
assert set(JOB_STARTERS) == set(STARTABLE_JOB_PARAMS), "every startable job kind needs a starter"


class JobFinished(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = gettext_lazy("This job has already finished.")
    default_code = "job_finished"


@extend_schema(parameters=[SLUG_PARAMETER], tags=["jobs"])
@extend_schema_view(
    list=extend_schema(
        summary="List jobs",
        parameters=[
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                description="Only jobs in these states, comma-separated: " + ", ".join(Job.Status.values),
            ),
            OpenApiParameter("kind", OpenApiTypes.STR, description="Only jobs of this kind, e.g. selfcheck."),
        ],
    ),
    retrieve=extend_schema(summary="A job, with progress, log tail and error"),
    create=extend_schema(
        summary="Start a job (experts, read/write keys)",
        description="Queues the job; it is handed to the workers when the request's transaction commits.",
        request=JobStartSerializer,
        responses={201: JobDetailSerializer},
    ),
)
class JobViewSet(DomainAccessMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The domain's long work: poll a job for progress; experts and read/write keys start and cancel."""

    read_role = Role.VIEWER
    write_role = Role.EXPERT

    def get_serializer_class(self):
        return JobSerializer if self.action == "list" else JobDetailSerializer

    def get_queryset(self):
        if self.schema_only:
            return Job.objects.none()
        jobs = Job.objects.for_domain(self.access.domain).select_related("created_by")
        if self.action == "list":
            jobs = self._filter(jobs)
        return jobs

    def _filter(self, jobs):
        params = self.request.query_params
        if params.get("status"):
            wanted = [s.strip() for s in params["status"].split(",") if s.strip()]
            unknown = sorted(set(wanted) - set(Job.Status.values))
            if unknown:
                raise exceptions.ValidationError(
                    {"status": [_("Unknown status %(status)s; use %(known)s.")
                                % {"status": ", ".join(unknown), "known": ", ".join(Job.Status.values)}]}
                )
            jobs = jobs.filter(status__in=wanted)
        if params.get("kind"):
            jobs = jobs.filter(kind=params["kind"])
        return jobs

    def create(self, request, *args, **kwargs):
        data = JobStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        kind, params = data.validated_data["kind"], data.validated_data["params"]
        with api_errors():
            job = JOB_STARTERS[kind](self.access, request.user, params)
        return Response(
            JobDetailSerializer(job, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api:job-detail", args=[self.access.domain.slug, job.pk])},
        )

    @extend_schema(
        summary="Cancel a job (experts, read/write keys)",
        description="A queued job is cancelled at once; a running one stops at its next check.",
        request=None,
        responses={
            200: JobDetailSerializer,
            409: OpenApiResponse(description="The job has already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        job = self.get_object()
        if job.is_finished:
            raise JobFinished()
        job = cancel_job(job)
        return Response(self.get_serializer(job).data)


# --- documents ---------------------------------------------------------------------------


def _status_filter(queryset, value: str | None, choices) -> object:
    """Keep rows whose status is one of the comma-separated ``value``; 400 for an unknown one."""
    if not value:
        return queryset
    wanted = [s.strip() for s in value.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(choices.values))
    if unknown:
        raise exceptions.ValidationError(
            {"status": [_("Unknown status %(status)s; use %(known)s.")
                        % {"status": ", ".join(unknown), "known": ", ".join(choices.values)}]}
        )
    return queryset.filter(status__in=wanted)


class DocumentBusy(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = gettext_lazy("This document is already being processed.")
    default_code = "document_busy"


@extend_schema(parameters=[SLUG_PARAMETER], tags=["documents"])
@extend_schema_view(
    list=extend_schema(
        summary="List documents",
        parameters=[
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                description="Only documents in these states, comma-separated: " + ", ".join(Document.Status.values),
            ),
        ],
    ),
    retrieve=extend_schema(summary="A document, with its ingestion status and last job"),
    create=extend_schema(
        summary="Upload documents (experts, read/write keys)",
        description=(
            "Multipart form data with one or more files in the field `files`. Each file is stored once per "
            "domain (by content hash), its type is sniffed from its bytes, and its reading is queued as a job. "
            "The answer gives one outcome per file: `uploaded`, `duplicate` (the existing document) or "
            "`refused` (with the reason: too large, empty, a type VSM does not read…). "
            "201 when at least one new document was stored, 200 when none was."
        ),
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={201: UploadResultSerializer, 200: UploadResultSerializer},
    ),
    destroy=extend_schema(
        summary="Delete a document (experts, read/write keys)",
        description="Removes its pages, chunks and stored file. Datasets built from it are marked stale; "
                    "reviewed QA pairs are kept.",
    ),
)
class DocumentViewSet(
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The domain's documents: upload, follow their reading, read their pages and chunks."""

    serializer_class = DocumentSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    read_role = Role.VIEWER
    write_role = Role.EXPERT

    def get_queryset(self):
        if self.schema_only:
            return Document.objects.none()
        documents = Document.objects.for_domain(self.access.domain).select_related(
            "uploaded_by", "last_job__created_by"
        )
        if self.action == "list":
            documents = _status_filter(documents, self.request.query_params.get("status"), Document.Status)
        return documents

    def create(self, request, *args, **kwargs):
        files = request.FILES.getlist("files")
        oversized = getattr(request, "vsm_oversized", [])  # set by the upload handler while parsing
        if not files and not oversized:
            raise exceptions.ValidationError({"files": [_("Send one or more files in the field files.")]})
        outcomes = services.upload_documents(
            domain=self.access.domain, files=files, uploaded_by=request.user, oversized=oversized
        )
        reports = [describe_outcome(outcome) for outcome in outcomes]
        context = self.get_serializer_context()
        results = [
            {
                "filename": report.filename,
                "outcome": report.outcome,
                "message": report.message,
                "document": DocumentSerializer(report.document, context=context).data if report.document else None,
            }
            for report in reports
        ]
        created = any(outcome.created for outcome in outcomes)
        return Response({"results": results}, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def perform_destroy(self, instance: Document) -> None:
        services.delete_document(document=instance)

    @extend_schema(
        summary="Read a document again (experts, read/write keys)",
        description="Queues a new ingest job from the stored file; its pages and chunks are replaced.",
        request=None,
        responses={
            202: DocumentSerializer,
            409: OpenApiResponse(description="The document is already being processed."),
        },
    )
    @action(detail=True, methods=["post"])
    def reingest(self, request, *args, **kwargs):
        document = self.get_object()
        try:
            services.reingest_document(document=document, by=request.user)
        except DjangoValidationError as exc:
            if document.last_job_id and Job.objects.filter(pk=document.last_job_id).active().exists():
                raise DocumentBusy() from exc
            raise exceptions.ValidationError(
                exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
            ) from exc
        document = self.get_queryset().get(pk=document.pk)
        return Response(self.get_serializer(document).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="The text of each page of a document", responses=DocumentPageSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=DocumentPageSerializer)
    def pages(self, request, *args, **kwargs):
        document = self.get_object()
        return self._paginated(DocumentPage.objects.filter(document=document).order_by("number"))

    @extend_schema(
        summary="The chunks of a document",
        parameters=[OpenApiParameter("page", OpenApiTypes.INT, description="Only chunks covering this page.")],
        responses=ChunkSerializer(many=True),
    )
    @action(detail=True, methods=["get"], serializer_class=ChunkSerializer)
    def chunks(self, request, *args, **kwargs):
        document = self.get_object()
        chunks = Chunk.objects.filter(document=document).order_by("ordinal")
        page = request.query_params.get("page")
        if page:
            try:
                number = int(page)
            except ValueError:
                raise exceptions.ValidationError({"page": [_("Give a page number.")]}) from None
            chunks = chunks.filter(page_start__lte=number, page_end__gte=number)
        return self._paginated(chunks)

    def _paginated(self, queryset) -> Response:
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer(page, many=True)
        return self.get_paginated_response(serializer.data)


@extend_schema(parameters=[SLUG_PARAMETER], tags=["documents"])
@extend_schema_view(
    get=extend_schema(summary="A domain's chunk settings"),
    patch=extend_schema(
        summary="Change the chunk settings (owners)",
        description="Saves the chunk size and overlap; if the domain has ready documents, a `rechunk` job "
                    "re-chunks them and is returned as `job`.",
    ),
)
class ChunkingView(DomainAccessMixin, generics.RetrieveUpdateAPIView):
    """How a domain's documents are split into chunks; members read it, owners change it."""

    serializer_class = ChunkingSerializer
    read_role = Role.VIEWER
    write_role = Role.OWNER
    http_method_names = ["get", "patch", "head", "options"]

    def get_object(self) -> Domain:
        return self.access.domain

    def perform_update(self, serializer) -> None:
        domain = serializer.instance
        data = serializer.validated_data
        with api_errors():
            job = services.update_chunking(
                domain=domain,
                target_chars=data.get("chunk_target_chars", domain.chunk_target_chars),
                overlap_chars=data.get("chunk_overlap_chars", domain.chunk_overlap_chars),
                by=self.request.user,
            )
        domain.job = job


# --- the pipeline -------------------------------------------------------------------------


class PipelineStartSerializer(drf_serializers.Serializer):
    stages = drf_serializers.ListField(child=drf_serializers.CharField(), required=False,
                                       help_text="Stages to run, in pipeline order (all by default).")
    options = drf_serializers.DictField(required=False, help_text="Pipeline options: demo, sample, base_model, "
                                        "embedding_model, per_chunk, test_fraction, sft, embedding, evaluation, "
                                        "gguf_outtype.")
    resume = drf_serializers.BooleanField(default=False, help_text="Continue the last pipeline where it stopped.")


def _pipeline_body(job: Job | None, request) -> dict:
    from domains import pipeline

    if job is None:
        return {"job": None, "stages": pipeline.STAGE_NAMES}
    return {"job": JobDetailSerializer(job, context={"request": request}).data, **pipeline.outcome_of(job)}


@extend_schema(parameters=[SLUG_PARAMETER], tags=["jobs"])
class PipelineView(DomainAccessMixin, generics.GenericAPIView):
    """The whole pipeline as one call: each stage a job, resumable where it stopped."""

    read_role = Role.VIEWER
    write_role = Role.EXPERT
    serializer_class = PipelineStartSerializer

    @extend_schema(summary="The domain's latest pipeline: its job, each stage's outcome, the evaluation table",
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request, *args, **kwargs):
        from domains import pipeline

        return Response(_pipeline_body(pipeline.latest_pipeline(self.access.domain), request))

    @extend_schema(summary="Run the pipeline (experts, read/write keys)",
                   description="Queues a `pipeline` job that runs the stages one after the other (ingest, heldout, "
                               "distill, approve, retrieval_data, freeze, embedding, promote_embedding, index, sft, "
                               "evaluate, promote, export, serve); `resume` restarts the last one where it stopped. "
                               "Poll `GET` (or the job) for progress. The promote stages change what the domain "
                               "serves: only a signed-in owner may run them (experts and keys leave them out).",
                   request=PipelineStartSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, *args, **kwargs):
        from domains import pipeline

        data = PipelineStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        owner = self.access.is_owner and self.access.api_key is None  # promotion stays with signed-in owners
        with api_errors():
            if data.validated_data["resume"]:
                job = pipeline.resume_pipeline(domain=self.access.domain, by=request.user, may_promote=owner)
            else:
                job = pipeline.start_pipeline(domain=self.access.domain, by=request.user,
                                              stages=data.validated_data.get("stages"),
                                              options=data.validated_data.get("options"), may_promote=owner)
        return Response(_pipeline_body(job, request), status=status.HTTP_202_ACCEPTED)


# --- user tokens -------------------------------------------------------------------------


class TokenRateThrottle(AnonRateThrottle):
    """Slow down password guessing on the token endpoint (per client address)."""

    scope = "auth-token"
    rate = "10/minute"


@extend_schema(
    summary="Obtain a user token",
    description="Exchange a username and password for a token; send it as `Authorization: Token <token>`.",
    request=AuthTokenSerializer,
    responses={200: inline_serializer("UserToken", {"token": drf_serializers.CharField()})},
    auth=[],
)
class ObtainTokenView(ObtainAuthToken):
    """DRF's token endpoint, credential-only (no session, no key) and throttled."""

    authentication_classes = []
    throttle_classes = [TokenRateThrottle]

    def post(self, request, *args, **kwargs):
        return _no_store(super().post(request, *args, **kwargs))


# --- docs --------------------------------------------------------------------------------

# drf-spectacular's Redoc page links Google Fonts; VSM must work without internet, so the
# head is replaced by one without them (Redoc falls back to the system fonts).
_REDOC_TEMPLATE = """{% extends "drf_spectacular/redoc.html" %}{% block head %}
    <title>{{ title|default:"Redoc" }}</title>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>body { margin: 0; padding: 0; }</style>
{% endblock head %}"""


@cache
def _redoc_template():
    return engines["django"].from_string(_REDOC_TEMPLATE)


class LocalRedocView(SpectacularRedocView):
    """Redoc from the sidecar's static files, with no request to any other host."""

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        return HttpResponse(_redoc_template().render(response.data, request))
