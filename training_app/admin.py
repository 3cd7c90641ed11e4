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

    @admin.action(description=_("Make the selected version the active one of its kind (through the gate)"))
    def promote(self, request, queryset):
        from django.contrib import messages
        from django.core.exceptions import ValidationError

        from training_app.promotion import promote_version

        for version in queryset.order_by("number"):
            try:
                promote_version(version=version, by=request.user, reason="promoted in the admin")
            except ValidationError as exc:
                self.message_user(request, f"v{version.number}: " + " ".join(exc.messages), messages.ERROR)

    @admin.action(description=_("Deactivate the selected versions"))
    def demote(self, request, queryset):
        from training_app.promotion import demote_version

        for version in queryset:
            demote_version(version=version, by=request.user)


@admin.register(ModelExport)
class ModelExportAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "model_version", "gguf_outtype", "quantize", "merged", "modelfile", "job",
                    "created_by", "created_at"]
    list_filter = ["gguf_outtype", "quantize", "domain"]
    search_fields = ["domain__slug", "output_path"]
    readonly_fields = ["model_version", "job", "output_path", "files", "created_by", "created_at"]


from training_app.models import EvalItem, EvaluationRun, ExpertScore, Promotion, PromotionPolicy  # noqa: E402


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "model_version", "dataset_version", "job", "created_at"]
    list_filter = ["domain"]
    readonly_fields = ["results", "probe", "job", "created_at", "expert_scores", "disagreements"]

    @admin.display(description=_("expert scores"))
    def expert_scores(self, obj):
        from django.utils.html import format_html_join

        from training_app import scoring

        rows = scoring.expert_summary(obj)
        if not rows:
            return "—"
        return format_html_join(
            "", "<div>{}: n={}, mean {} (95% CI {} – {})</div>",
            ((r["label"], r["n"], f"{r['mean']:.2f}", *(f"{r[k]:.2f}" if r[k] is not None else "—"
                                                        for k in ("low", "high"))) for r in rows))

    @admin.display(description=_("disagreements"))
    def disagreements(self, obj):
        from django.utils.html import format_html_join

        from training_app import scoring

        rows = scoring.disagreements(obj)
        if not rows:
            return "—"
        return format_html_join(
            "", '<div class="disagreement">#{} {} · {} · scores {} · automatic {} · {}</div>',
            ((d["item"].position, d["item"].question[:80], d["item"].configuration,
              ", ".join(str(s) for s in d["scores"]), "right" if d["automatic_correct"] else "wrong",
              " + ".join(d["reasons"])) for d in rows))


@admin.register(EvalItem)
class EvalItemAdmin(admin.ModelAdmin):
    list_display = ["__str__", "run", "configuration", "position", "answerable"]
    list_filter = ["configuration", "answerable"]
    search_fields = ["question", "answer"]
    readonly_fields = ["metrics", "citations"]


@admin.register(ExpertScore)
class ExpertScoreAdmin(admin.ModelAdmin):
    """Expert scores with the configuration shown (the admin is not the blind view)."""

    list_display = ["__str__", "item", "configuration", "expert", "score", "created_at"]
    list_filter = ["score", "item__configuration"]
    search_fields = ["comment", "item__question"]

    @admin.display(description=_("configuration"))
    def configuration(self, obj):
        return obj.item.configuration


@admin.register(Promotion)
class PromotionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "previous", "by", "forced", "created_at"]
    list_filter = ["forced", "domain"]
    readonly_fields = ["gate", "created_at"]


@admin.register(PromotionPolicy)
class PromotionPolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "configuration", "metrics", "probe_max_drop"]


from training_app.models import HubCredential, HubPush  # noqa: E402


@admin.register(HubCredential)
class HubCredentialAdmin(admin.ModelAdmin):
    """The token is never shown back: only its hub, domain and last characters."""

    list_display = ["__str__", "domain", "hub", "fingerprint", "created_by", "updated_at"]
    list_filter = ["hub", "domain"]
    search_fields = ["domain__slug", "hub", "fingerprint"]
    exclude = ["token_encrypted"]
    readonly_fields = ["domain", "hub", "fingerprint", "created_by", "updated_at"]

    def has_add_permission(self, request):
        return False  # tokens are given on the export page, where they are encrypted


@admin.register(HubPush)
class HubPushAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "export", "hub", "repo_id", "private", "url", "job", "created_by",
                    "created_at"]
    list_filter = ["hub", "private", "domain"]
    search_fields = ["repo_id", "domain__slug", "url", "commit"]
    readonly_fields = ["export", "hub", "repo_id", "private", "job", "url", "commit", "card", "created_by",
                       "created_at"]
