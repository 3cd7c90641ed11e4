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
