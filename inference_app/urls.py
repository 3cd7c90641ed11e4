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

from inference_app import views_chat  # noqa: E402

urlpatterns += [
    path("d/<slug:slug>/chat/", views_chat.chat_page, name="chat"),
    path("d/<slug:slug>/chat/<int:pk>/", views_chat.chat_page, name="chat-conversation"),
    path("d/<slug:slug>/chat/ask/", views_chat.chat_ask, name="chat-ask"),
    path("d/<slug:slug>/chat/stream/", views_chat.chat_stream, name="chat-stream"),
    path("d/<slug:slug>/chat/settings/", views_chat.chat_settings, name="chat-settings"),
    path("d/<slug:slug>/chat/messages/<int:pk>/feedback/", views_chat.message_feedback, name="message-feedback"),
    path("p/<str:token>/", views_chat.public_chat, name="public-chat"),
    path("p/<str:token>/<int:pk>/", views_chat.public_chat, name="public-chat-conversation"),
    path("p/<str:token>/ask/", views_chat.public_ask, name="public-chat-ask"),
    path("p/<str:token>/stream/", views_chat.public_stream, name="public-chat-stream"),
    path("p/<str:token>/messages/<int:pk>/feedback/", views_chat.public_feedback, name="public-message-feedback"),
]

from inference_app import views_ops  # noqa: E402

urlpatterns += [path("d/<slug:slug>/ops/", views_ops.ops_page, name="ops")]
