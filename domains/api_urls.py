"""REST API under /api/ (namespace ``api``): domains and everything nested in one, tokens, schema and docs."""
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from datasets_app import api as datasets_api
from domains import api
from inference_app import api as inference_api
from inference_app import api_serving
from training_app import api as training_api

app_name = "api"

router = SimpleRouter()
router.register("domains", api.DomainViewSet, basename="domain")
in_domain = rf"domains/(?P<slug>{api.SLUG_REGEX})"
router.register(rf"{in_domain}/members", api.MemberViewSet, basename="member")
router.register(rf"{in_domain}/api-keys", api.ApiKeyViewSet, basename="api-key")
router.register(rf"{in_domain}/jobs", api.JobViewSet, basename="job")
router.register(rf"{in_domain}/documents", api.DocumentViewSet, basename="document")
router.register(rf"{in_domain}/datasets", datasets_api.DatasetViewSet, basename="dataset")
router.register(rf"{in_domain}/pairs", datasets_api.PairViewSet, basename="pair")
router.register(rf"{in_domain}/versions", datasets_api.VersionViewSet, basename="dataset-version")
router.register(rf"{in_domain}/teachers", datasets_api.TeacherViewSet, basename="teacher")
router.register(rf"{in_domain}/teacher-keys", datasets_api.TeacherKeyViewSet, basename="teacher-key")
router.register(rf"{in_domain}/runs", training_api.TrainingRunViewSet, basename="training-run")
router.register(rf"{in_domain}/models", training_api.ModelVersionViewSet, basename="model-version")
router.register(rf"{in_domain}/exports", training_api.ModelExportViewSet, basename="model-export")
router.register(rf"{in_domain}/evaluations", training_api.EvaluationRunViewSet, basename="evaluation")
router.register(rf"{in_domain}/batches", api_serving.AnswerBatchViewSet, basename="answer-batch")
router.register(rf"{in_domain}/embedding-comparisons", inference_api.EmbeddingComparisonViewSet,
                basename="embedding-comparison")

urlpatterns = [
    path("auth/token/", api.ObtainTokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", api.LocalRedocView.as_view(url_name="api:schema"), name="redoc"),
    re_path(rf"^{in_domain}/chunking/$", api.ChunkingView.as_view(), name="domain-chunking"),
    re_path(rf"^{in_domain}/pipeline/$", api.PipelineView.as_view(), name="pipeline"),
    re_path(rf"^{in_domain}/retrieval/$", inference_api.RetrievalIndexView.as_view(), name="retrieval-index"),
    re_path(rf"^{in_domain}/retrieval/build/$", inference_api.RetrievalBuildView.as_view(), name="retrieval-build"),
    re_path(rf"^{in_domain}/retrieval/search/$", inference_api.RetrievalSearchView.as_view(),
            name="retrieval-search"),
    re_path(rf"^{in_domain}/ask/$", api_serving.AskView.as_view(), name="ask"),
    re_path(rf"^d/(?P<slug>{api.SLUG_REGEX})/ask/?$", api_serving.AskView.as_view(), name="ask-short"),
    *router.urls,
]
