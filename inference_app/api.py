"""The retrieval REST API: the domain's index (status, settings, rebuild), hit testing, model comparisons.

Every view goes through ``domains.api.DomainAccessMixin``; the work is done by
``inference_app.services``, the same functions the pages call. Viewers (and read keys) read
and search; experts (and read/write keys) rebuild, change settings and start comparisons.
"""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from domains.api import SLUG_PARAMETER, DomainAccessMixin, api_errors
from domains.models import Role
from domains.serializers import JobDetailSerializer
from inference_app import services
from inference_app.models import EmbeddingComparison, RetrievalIndex
from inference_app.serializers import (
    EmbeddingComparisonSerializer,
    EmbeddingComparisonStartSerializer,
    RetrievalIndexSerializer,
    RetrievalSettingsSerializer,
    SearchQuerySerializer,
    SearchSerializer,
)


def _actor(request):
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


@extend_schema(parameters=[SLUG_PARAMETER], tags=["retrieval"])
@extend_schema_view(
    get=extend_schema(summary="The retrieval index",
                      description="Which embedding model built it, how many chunks it holds, the fusion weights "
                                  "chosen on the domain's questions (with the table they were chosen from), and the "
                                  "last build job."),
    patch=extend_schema(summary="Change retrieval settings (experts, read/write keys)",
                        description="Change the embedding model or turn dense retrieval off (BM25 only); either "
                                    "queues a rebuild.",
                        request=RetrievalSettingsSerializer, responses={200: RetrievalIndexSerializer}),
)
class RetrievalIndexView(DomainAccessMixin, generics.GenericAPIView):
    serializer_class = RetrievalIndexSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_object(self) -> RetrievalIndex:
        return RetrievalIndex.objects.select_related("job", "model_version").get(
            pk=services.index_for(self.access.domain).pk)

    def get(self, request, *args, **kwargs):
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request, *args, **kwargs):
        data = RetrievalSettingsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with api_errors():
            services.update_index_settings(domain=self.access.domain, by=_actor(request), **data.validated_data)
        return Response(self.get_serializer(self.get_object()).data)


@extend_schema(parameters=[SLUG_PARAMETER], tags=["retrieval"], request=None,
               summary="Rebuild the retrieval index (experts, read/write keys)",
               description="Queues an `index` job (a build already queued is returned instead of a second one).",
               responses={202: JobDetailSerializer})
class RetrievalBuildView(DomainAccessMixin, APIView):
    http_method_names = ["post", "options"]

    def post(self, request, *args, **kwargs):
        with api_errors():
            job = services.start_index_build(domain=self.access.domain, by=_actor(request), reason="asked through the API")
        return Response(JobDetailSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(parameters=[SLUG_PARAMETER, SearchQuerySerializer], tags=["retrieval"],
               summary="Hit testing: top-k chunks for a query",
               description="BM25, dense and hybrid side by side, each hit with its score, chunk, document and page.",
               responses={200: SearchSerializer, 400: OpenApiResponse(description="No query, bad k, no index yet.")})
class RetrievalSearchView(DomainAccessMixin, APIView):
    http_method_names = ["get", "options"]

    def get(self, request, *args, **kwargs):
        params = SearchQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        methods = [m.strip() for m in params.validated_data["methods"].split(",") if m.strip()]
        with api_errors():
            result = services.search(domain=self.access.domain, query=params.validated_data["q"],
                                     k=params.validated_data["k"], methods=methods)
        return Response(result)


@extend_schema(parameters=[SLUG_PARAMETER], tags=["retrieval"])
@extend_schema_view(
    list=extend_schema(summary="Embedding model comparisons", description="Newest first."),
    retrieve=extend_schema(summary="An embedding model comparison",
                           description="`results` holds one row per candidate (hit@1/3/5/10, MRR@10, nDCG@10, "
                                       "seconds), best first, and a BM25 row as the floor."),
    create=extend_schema(summary="Compare embedding models (experts, read/write keys)",
                         description="Scores each candidate on the domain's own questions as an `embedding_compare` "
                                     "job.",
                         request=EmbeddingComparisonStartSerializer, responses={201: EmbeddingComparisonSerializer}),
)
class EmbeddingComparisonViewSet(DomainAccessMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                                 mixins.CreateModelMixin, viewsets.GenericViewSet):
    serializer_class = EmbeddingComparisonSerializer
    read_role = Role.VIEWER
    write_role = Role.EXPERT

    def get_queryset(self):
        if self.schema_only:
            return EmbeddingComparison.objects.none()
        return EmbeddingComparison.objects.for_domain(self.access.domain).select_related("job", "created_by")

    def create(self, request, *args, **kwargs):
        data = EmbeddingComparisonStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with api_errors():
            comparison = services.start_comparison(domain=self.access.domain, by=_actor(request),
                                                   candidates=data.validated_data["candidates"])
        return Response(self.get_serializer(comparison).data, status=status.HTTP_201_CREATED)
