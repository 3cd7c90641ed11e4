from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/", include("domains.api_urls")),
    path("", include("domains.urls")),
    path("", include("datasets_app.urls")),
    path("", include("datasets_app.urls_review")),
    path("", include("training_app.urls")),
    path("", include("inference_app.urls")),
]



