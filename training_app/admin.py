from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from training_app.models import ModelExport, ModelVersion, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "kind", "base_model", "dataset_hash", "job", "created_by", "created_at"]
    list_filter = ["kind", "domain"]
    search_fields = ["name", "base_model", "dataset_hash", "domain__slug"]
    readonly_fields = ["job", "output_path", "metrics", "dataset_hash", "created_at"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "kind", "base_model", "dataset_hash", "is_active", "created_at"]
    list_filter = ["kind", "is_active", "domain"]
    search_fields = ["base_model", "dataset_hash", "domain__slug"]
    readonly_fields = ["run", "parent", "base_path", "adapter_path", "merged_path", "dataset_hash", "config",
                       "metrics", "is_active", "created_at"]
    actions = ["promote", "demote"]

    @admin.action(description=_("Make the selected version the active one of its kind"))
    def promote(self, request, queryset):
        for version in queryset.order_by("number"):
            version.promote()

    @admin.action(description=_("Deactivate the selected versions"))
    def demote(self, request, queryset):
        for version in queryset:
            version.demote()


@admin.register(ModelExport)
class ModelExportAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "model_version", "gguf_outtype", "quantize", "merged", "modelfile", "job",
                    "created_by", "created_at"]
    list_filter = ["gguf_outtype", "quantize", "domain"]
    search_fields = ["domain__slug", "output_path"]
    readonly_fields = ["model_version", "job", "output_path", "files", "created_by", "created_at"]
