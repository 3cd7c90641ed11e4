"""The training REST API: training runs (start one, follow its job) and model versions (promote, demote).

Every viewset goes through ``domains.api.DomainAccessMixin``: querysets start from
``self.access.domain``, so an id of another domain is simply not found. Starting a run calls
``training_app.services.start_training``, the same workflow the pages use; its field errors
come back as a 400 under the same keys. Roles: viewers (and read keys) read; experts (and
read/write keys) start runs; only owners, signed in, promote and demote model versions.
"""
from __future__ import annotations

from django.http import FileResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from datasets_app.api import AttachmentNegotiation
from datasets_app.models import DatasetVersion
from domains.api import SLUG_PARAMETER, DomainAccessMixin, api_errors
from domains.models import Role
from training_app.models import ModelExport, ModelVersion, TrainingRun
from training_app.serializers import (
    EvalItemSerializer,
    EvaluationRunSerializer,
    EvaluationStartSerializer,
    ModelExportSerializer,
    ModelExportStartSerializer,
    ModelVersionSerializer,
    PromoteSerializer,
    TrainingRunSerializer,
    TrainingStartSerializer,
)
from training_app.services import start_export, start_training


def _model_version_of(domain, pk) -> ModelVersion:
    """A model version of this domain named in a request body; 400 under its field when there is none."""
    version = ModelVersion.objects.for_domain(domain).filter(pk=pk).first()
    if version is None:
        raise exceptions.ValidationError({"model_version": [_("No such model version in this domain.")]})
    return version


def _actor(request):
    """The signed-in user, or None for an API key (rows record no user then)."""
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


@extend_schema(parameters=[SLUG_PARAMETER], tags=["training"])
@extend_schema_view(
    list=extend_schema(summary="List training runs", description="Newest first, each with its job."),
    retrieve=extend_schema(summary="A training run",
                           description="While it runs, `job.result` holds step, total_steps, loss, learning_rate, "
                                       "tokens_per_s, eta_s and val_loss; once finished `metrics` holds the loss "
                                       "history."),
    create=extend_schema(
        summary="Start a training run (experts, read/write keys)",
        description="Creates the run and queues its `train` job; follow it under jobs/ or here. A base model that "
                    "cannot work (a missing path, an unknown embedded model) or a bad setting is answered 400 "
                    "under its field, and nothing is created.",
        request=TrainingStartSerializer,
        responses={201: TrainingRunSerializer, 400: OpenApiResponse(description="A field error.")},
    ),
)
class TrainingRunViewSet(
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Training runs of a domain: a base model trained on a frozen dataset version, as a job."""

    serializer_class = TrainingRunSerializer
    read_role = Role.VIEWER
    write_role = Role.EXPERT

    def get_queryset(self):
        if self.schema_only:
            return TrainingRun.objects.none()
        return TrainingRun.objects.for_domain(self.access.domain).select_related(
            "domain", "job", "job__created_by", "created_by", "model_version")

    def create(self, request, *args, **kwargs):
        data = TrainingStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        domain = self.access.domain
        version = parent = None
        if values.get("dataset_version") is not None:
            version = DatasetVersion.objects.for_domain(domain).filter(pk=values["dataset_version"]).first()
            if version is None:
                raise exceptions.ValidationError({"dataset_version": [_("No such dataset version in this domain.")]})
        if values.get("parent") is not None:
            parent = ModelVersion.objects.for_domain(domain).filter(pk=values["parent"]).first()
            if parent is None:
                raise exceptions.ValidationError({"parent": [_("No such model version in this domain.")]})
        with api_errors():
            run = start_training(domain=domain, dataset_version=version, by=_actor(request), kind=values["kind"],
                                 base_model=values["base_model"], preset=values["preset"] or "",
                                 overrides=values["overrides"], parent=parent, name=values["name"] or "")
        run = self.get_queryset().get(pk=run.pk)
        return Response(
            self.get_serializer(run).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api:training-run-detail", args=[domain.slug, run.pk])},
        )


@extend_schema(parameters=[SLUG_PARAMETER], tags=["models"])
@extend_schema_view(
    list=extend_schema(summary="List model versions", description="Newest first; `is_active` marks the one "
                                                                     "served per kind."),
    retrieve=extend_schema(summary="A model version", description="Its config, metrics, lineage and artifacts."),
)
class ModelVersionViewSet(DomainAccessMixin, viewsets.ReadOnlyModelViewSet):
    """The trained models of a domain; owners choose which one is active."""

    serializer_class = ModelVersionSerializer
    read_role = Role.VIEWER
    write_role = Role.OWNER

    @property
    def users_only(self) -> bool:  # reading is open to keys; promoting is for signed-in owners
        return self.request.method not in ("GET", "HEAD", "OPTIONS")

    def get_queryset(self):
        if self.schema_only:
            return ModelVersion.objects.none()
        return ModelVersion.objects.for_domain(self.access.domain).order_by("-number")

    def _shown(self, model: ModelVersion) -> Response:
        model.refresh_from_db()
        return Response(self.get_serializer(model).data)

    @extend_schema(summary="Make this the active model of its kind (owners)",
                   description="Passes the domain's promotion gate first: the version's latest evaluation must not "
                               "fall below the active version (or its base model) on the gate's metrics, nor lose "
                               "general ability. A refusal is 400 with the gate's reasons under `gate`; `force` with "
                               "a `reason` overrules it and is recorded. The version active before it steps down.",
                   request=PromoteSerializer, responses={200: ModelVersionSerializer})
    @action(detail=True, methods=["post"])
    def promote(self, request, *args, **kwargs):
        from training_app.promotion import promote_version

        model = self.get_object()
        data = PromoteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with api_errors():
            promote_version(version=model, by=request.user, force=data.validated_data["force"],
                            reason=data.validated_data["reason"])
        return self._shown(model)

    @extend_schema(summary="Take this version out of service (owners)", request=None,
                   responses={200: ModelVersionSerializer})
    @action(detail=True, methods=["post"])
    def demote(self, request, *args, **kwargs):
        from training_app.promotion import demote_version

        model = demote_version(version=self.get_object(), by=request.user)
        return self._shown(model)


@extend_schema(parameters=[SLUG_PARAMETER], tags=["models"])
@extend_schema_view(
    list=extend_schema(
        summary="List model exports",
        description="Newest first. `files` lists what each has produced so far, with sizes, sha256 and download "
                    "URLs.",
        parameters=[OpenApiParameter("model_version", OpenApiTypes.INT,
                                     description="Only exports of this model version.")],
    ),
    retrieve=extend_schema(summary="A model export", description="Its formats, job (status, progress) and files."),
    create=extend_schema(
        summary="Export a model version (experts, read/write keys)",
        description="Queues an `export` job: merged safetensors, GGUF (f16 or q8_0), Q4_K_M, an Ollama Modelfile "
                    "and one zip archive, as chosen. A version whose weights are not on disk, or formats that do "
                    "not fit together, are answered 400 and nothing is created. Cancel it under jobs/.",
        request=ModelExportStartSerializer,
        responses={201: ModelExportSerializer, 400: OpenApiResponse(description="A field error.")},
    ),
)
class ModelExportViewSet(
    DomainAccessMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Exports of a domain's model versions, each run as a job; download what they produced."""

    serializer_class = ModelExportSerializer
    read_role = Role.VIEWER
    write_role = Role.EXPERT

    def get_queryset(self):
        if self.schema_only:
            return ModelExport.objects.none()
        exports = ModelExport.objects.for_domain(self.access.domain).select_related(
            "domain", "model_version", "job", "job__created_by", "created_by")
        if self.action == "list" and self.request.query_params.get("model_version"):
            try:
                exports = exports.filter(model_version_id=int(self.request.query_params["model_version"]))
            except ValueError:
                raise exceptions.ValidationError({"model_version": [_("Give a model version id.")]}) from None
        return exports

    def create(self, request, *args, **kwargs):
        data = ModelExportStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        domain = self.access.domain
        version = _model_version_of(domain, values["model_version"])
        with api_errors():
            export = start_export(domain=domain, model_version=version, by=_actor(request), merged=values["merged"],
                                  gguf_outtype=values["gguf_outtype"], quantize=values["quantize"],
                                  modelfile=values["modelfile"], onnx=values["onnx"])
        export = self.get_queryset().get(pk=export.pk)
        return Response(
            self.get_serializer(export).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api:model-export-detail", args=[domain.slug, export.pk])},
        )

    @extend_schema(
        summary="Download a file of an export",
        description="`file` is one of archive (the default: everything chosen in one zip with SHA256SUMS), merged "
                    "(the merged model.safetensors), gguf, quantized, modelfile, onnx or onnx_int8. 404 when the export has not "
                    "produced it (yet).",
        parameters=[OpenApiParameter("file", OpenApiTypes.STR, enum=list(ModelExport.ARTIFACTS),
                                     default="archive")],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY,
                   404: OpenApiResponse(description="No such file in this export.")},
    )
    @action(detail=True, methods=["get"], content_negotiation_class=AttachmentNegotiation)
    def download(self, request, *args, **kwargs):
        export = self.get_object()
        name = request.query_params.get("file") or "archive"
        path = export.artifact_file(name) if name in ModelExport.ARTIFACTS else None
        if path is None:
            raise exceptions.NotFound(_("No such file in this export."))
        response = FileResponse(open(path, "rb"), as_attachment=True, filename=export.files[name]["name"],
                                content_type="application/octet-stream")
        response["Cache-Control"] = "private, no-store"
        return response


@extend_schema(parameters=[SLUG_PARAMETER], tags=["evaluation"])
@extend_schema_view(
    list=extend_schema(summary="Evaluation runs (the leaderboard)", description="Newest first."),
    retrieve=extend_schema(summary="An evaluation run",
                           description="`results` maps each configuration to accuracy, key_fact_recall, exact_match, "
                                       "rouge_l, hallucination_rate, refusal_rate, correct_refusal_rate and "
                                       "context_recall; `probe` holds the general-ability probe."),
    create=extend_schema(summary="Evaluate a model version (experts, read/write keys)",
                         description="Answers the dataset version's held-out questions in each configuration as an "
                                     "`evaluate` job.",
                         request=EvaluationStartSerializer, responses={201: EvaluationRunSerializer}),
)
class EvaluationRunViewSet(DomainAccessMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                           mixins.CreateModelMixin, viewsets.GenericViewSet):
    serializer_class = EvaluationRunSerializer
    read_role = Role.VIEWER
    write_role = Role.EXPERT

    def get_queryset(self):
        from training_app.models import EvaluationRun

        if self.schema_only:
            return EvaluationRun.objects.none()
        return EvaluationRun.objects.for_domain(self.access.domain).select_related("model_version", "job",
                                                                                   "created_by")

    def create(self, request, *args, **kwargs):
        from training_app.evaluation_tasks import start_evaluation

        data = EvaluationStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        domain = self.access.domain
        version = _model_version_of(domain, values["model_version"])
        dataset_version = None
        if values.get("dataset_version") is not None:
            dataset_version = DatasetVersion.objects.for_domain(domain).filter(pk=values["dataset_version"]).first()
            if dataset_version is None:
                raise exceptions.ValidationError({"dataset_version": [_("No such dataset version in this domain.")]})
        with api_errors():
            run = start_evaluation(domain=domain, model_version=version, dataset_version=dataset_version,
                                   by=_actor(request), configurations=values.get("configurations"),
                                   options=values.get("options"))
        return Response(self.get_serializer(self.get_queryset().get(pk=run.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="The answers of an evaluation run", responses={200: EvalItemSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def items(self, request, *args, **kwargs):
        run = self.get_object()
        return Response(EvalItemSerializer(run.items.order_by("position", "configuration"), many=True).data)

    @extend_schema(summary="Download the report (CSV or JSON)",
                   parameters=[OpenApiParameter("format", str, enum=["csv", "json"])],
                   responses={(200, "text/csv"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path="report", content_negotiation_class=AttachmentNegotiation)
    def report(self, request, *args, **kwargs):
        from training_app.views_evaluation import _download

        fmt = request.query_params.get("format") or "csv"
        if fmt not in ("csv", "json"):
            raise exceptions.ValidationError({"format": [_("csv or json.")]})
        return _download(self.get_object(), fmt)
