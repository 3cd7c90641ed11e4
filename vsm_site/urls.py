from django.contrib import admin
from django.urls import include, path

from inference_app import api_serving, monitoring

urlpatterns = [
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/", include("domains.api_urls")),
    # OpenAI-compatible: clients post to <base_url>/chat/completions with base_url http://host/v1
    path("v1/chat/completions", api_serving.ChatCompletionsView.as_view(), name="openai-chat-completions"),
    path("metrics", monitoring.metrics_view, name="metrics"),
    path("v1/models", api_serving.ModelsView.as_view(), name="openai-models"),
    path("", include("domains.urls")),
    path("", include("datasets_app.urls")),
    path("", include("datasets_app.urls_review")),
    path("", include("training_app.urls")),
    path("", include("inference_app.urls")),
]



