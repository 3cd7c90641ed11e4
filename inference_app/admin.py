from django.contrib import admin

from inference_app.models import EmbeddingComparison, RetrievalIndex


@admin.register(RetrievalIndex)
class RetrievalIndexAdmin(admin.ModelAdmin):
    list_display = ["__str__", "encoder", "dense_enabled", "built_encoder", "passages", "stale", "built_at"]
    list_filter = ["dense_enabled", "stale"]
    search_fields = ["domain__slug", "encoder", "built_encoder"]
    readonly_fields = ["built_encoder", "model_version", "storage_path", "passages", "dim", "manifest", "fusion",
                       "fusion_table", "fusion_queries", "job", "built_at"]


@admin.register(EmbeddingComparison)
class EmbeddingComparisonAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "queries", "passages", "job", "created_by", "created_at"]
    list_filter = ["domain"]
    readonly_fields = ["results", "queries", "passages", "job", "created_at"]


from inference_app.models import AnswerBatch, ApiRequest, Conversation, Deployment, Feedback, Message  # noqa: E402


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["__str__", "mode", "backend", "k", "threshold", "public", "rate_limit", "updated_at"]
    list_filter = ["mode", "backend", "public"]
    exclude = ["remote_key_encrypted"]  # never shown back


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["role", "content", "mode", "covered", "model_label", "error", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "user", "updated_at"]
    list_filter = ["domain"]
    search_fields = ["title"]
    inlines = [MessageInline]


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["message", "domain", "user", "rating", "pair", "created_at"]
    list_filter = ["domain", "rating"]


@admin.register(ApiRequest)
class ApiRequestAdmin(admin.ModelAdmin):
    list_display = ["created_at", "domain", "api_key", "endpoint", "status", "stream", "latency_ms", "tokens",
                    "covered"]
    list_filter = ["domain", "endpoint", "status"]


@admin.register(AnswerBatch)
class AnswerBatchAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "filename", "answered", "covered", "job", "created_at"]
    list_filter = ["domain"]
    readonly_fields = ["questions", "job"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "conversation", "role", "mode", "covered", "model_label", "created_at"]
    list_filter = ["domain", "role", "mode", "covered"]
    search_fields = ["content"]
