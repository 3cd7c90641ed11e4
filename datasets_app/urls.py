"""Browser URLs of the datasets stage, under /d/<slug>/."""
from django.urls import path

from datasets_app import views

urlpatterns = [
    path("d/<slug:slug>/datasets/", views.dataset_list, name="dataset-list"),
]
