"""Browser URLs of the review queue and single pairs, under /d/<slug>/."""
from django.urls import path

from datasets_app import views_review as views

urlpatterns = [
    path("d/<slug:slug>/review/", views.review_queue, name="review-queue"),
    path("d/<slug:slug>/review/bulk/", views.review_bulk, name="review-bulk"),
    path("d/<slug:slug>/review/assign/", views.review_assign, name="review-assign"),
    path("d/<slug:slug>/pairs/<int:pk>/", views.pair_review, name="pair-review"),
    path("d/<slug:slug>/pairs/<int:pk>/review/", views.pair_action, name="pair-action"),
    path("d/<slug:slug>/pairs/<int:pk>/edit/", views.pair_edit, name="pair-edit"),
]
