"""Browser URLs of the retrieval stage, under /d/<slug>/."""
from django.urls import path

from inference_app import views

urlpatterns = [
    path("d/<slug:slug>/retrieval/", views.retrieval_page, name="retrieval"),
    path("d/<slug:slug>/retrieval/build/", views.retrieval_build, name="retrieval-build"),
    path("d/<slug:slug>/retrieval/settings/", views.retrieval_settings, name="retrieval-settings"),
    path("d/<slug:slug>/retrieval/compare/", views.comparison_start, name="comparison-start"),
    path("d/<slug:slug>/comparisons/<int:pk>/", views.comparison_detail, name="comparison-detail"),
]
