"""Browser URLs: every page of a domain lives under /d/<slug>/."""
from django.contrib.auth import views as auth_views
from django.urls import path

from domains import views, views_auth, views_documents

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views_auth.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("d/<slug:slug>/", views.dashboard, name="domain-dashboard"),
    path("d/<slug:slug>/jobs/", views.job_list, name="job-list"),
    path("d/<slug:slug>/jobs/selfcheck/", views.job_selfcheck, name="job-selfcheck"),
    path("d/<slug:slug>/pipeline/", views.pipeline_start, name="pipeline-start"),
    path("d/<slug:slug>/jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("d/<slug:slug>/jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("d/<slug:slug>/documents/", views_documents.document_list, name="document-list"),
    path("d/<slug:slug>/documents/upload/", views_documents.document_upload, name="document-upload"),
    path("d/<slug:slug>/documents/chunking/", views_documents.document_chunking, name="document-chunking"),
    path("d/<slug:slug>/documents/<int:pk>/", views_documents.document_detail, name="document-detail"),
    path("d/<slug:slug>/documents/<int:pk>/reingest/", views_documents.document_reingest, name="document-reingest"),
    path("d/<slug:slug>/documents/<int:pk>/delete/", views_documents.document_delete, name="document-delete"),
    path("d/<slug:slug>/members/", views.member_list, name="member-list"),
    path("d/<slug:slug>/audit/", views.audit_log, name="audit-log"),
    path("d/<slug:slug>/members/add/", views.member_add, name="member-add"),
    path("d/<slug:slug>/members/<int:pk>/role/", views.member_role, name="member-role"),
    path("d/<slug:slug>/members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path("d/<slug:slug>/keys/", views.key_list, name="key-list"),
    path("d/<slug:slug>/keys/new/", views.key_create, name="key-create"),
    path("d/<slug:slug>/keys/<int:pk>/revoke/", views.key_revoke, name="key-revoke"),
]
