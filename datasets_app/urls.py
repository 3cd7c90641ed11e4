"""Browser URLs of the datasets stage, under /d/<slug>/: datasets, versions, teachers."""
from django.urls import path

from datasets_app import views, views_teachers

urlpatterns = [
    path("d/<slug:slug>/datasets/", views.dataset_list, name="dataset-list"),
    path("d/<slug:slug>/datasets/new/", views.dataset_create, name="dataset-create"),
    path("d/<slug:slug>/datasets/<int:pk>/", views.dataset_detail, name="dataset-detail"),
    path("d/<slug:slug>/datasets/<int:pk>/recipes/", views.dataset_recipe, name="dataset-recipe"),
    path("d/<slug:slug>/datasets/<int:pk>/add/", views.dataset_add, name="dataset-add"),
    path("d/<slug:slug>/datasets/<int:pk>/import/", views.dataset_import, name="dataset-import"),
    path("d/<slug:slug>/datasets/<int:pk>/freeze/", views.dataset_freeze, name="dataset-freeze"),
    path("d/<slug:slug>/versions/<int:pk>/", views.version_detail, name="version-detail"),
    path("d/<slug:slug>/versions/<int:pk>/download/", views.version_download, name="version-download"),
    path("d/<slug:slug>/teachers/", views_teachers.teacher_list, name="teacher-list"),
    path("d/<slug:slug>/teachers/new/", views_teachers.teacher_create, name="teacher-create"),
    path("d/<slug:slug>/teachers/<int:pk>/", views_teachers.teacher_edit, name="teacher-edit"),
    path("d/<slug:slug>/teachers/<int:pk>/delete/", views_teachers.teacher_delete, name="teacher-delete"),
    path("d/<slug:slug>/teachers/<int:pk>/keys/", views_teachers.teacher_key_add, name="teacher-key-add"),
    path("d/<slug:slug>/teacher-keys/<int:pk>/delete/", views_teachers.teacher_key_delete, name="teacher-key-delete"),
]
