"""Browser URLs of the training stage, under /d/<slug>/: training runs and model versions."""
from django.urls import path

from training_app import views, views_evaluation

urlpatterns = [
    path("d/<slug:slug>/runs/", views.training_list, name="training-list"),
    path("d/<slug:slug>/runs/new/", views.training_start, name="training-start"),
    path("d/<slug:slug>/runs/<int:pk>/", views.training_detail, name="training-detail"),
    path("d/<slug:slug>/runs/<int:pk>/tensorboard.zip", views.training_tensorboard, name="training-tensorboard"),
    path("d/<slug:slug>/models/", views.model_list, name="model-list"),
    path("d/<slug:slug>/models/<int:pk>/", views.model_detail, name="model-detail"),
    path("d/<slug:slug>/models/<int:pk>/promote/", views.model_promote, name="model-promote"),
    path("d/<slug:slug>/models/<int:pk>/demote/", views.model_demote, name="model-demote"),
    path("d/<slug:slug>/models/<int:pk>/export/", views.model_export_start, name="model-export"),
    path("d/<slug:slug>/exports/<int:pk>/download/", views.export_download, name="export-download"),
    path("d/<slug:slug>/exports/<int:pk>/push/", views.export_push, name="export-push"),
    path("d/<slug:slug>/evaluations/", views_evaluation.evaluation_list, name="evaluation-list"),
    path("d/<slug:slug>/evaluations/policy/", views_evaluation.promotion_policy, name="promotion-policy"),
    path("d/<slug:slug>/evaluations/new/", views_evaluation.evaluation_start, name="evaluation-start"),
    path("d/<slug:slug>/evaluations/<int:pk>/", views_evaluation.evaluation_detail, name="evaluation-detail"),
    path("d/<slug:slug>/evaluations/<int:pk>/score/", views_evaluation.evaluation_score, name="evaluation-score"),
]
