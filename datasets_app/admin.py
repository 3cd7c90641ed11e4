"""The datasets stage in the Django admin: the same review actions as the queue, through the services."""
from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from datasets_app import services
from datasets_app.models import (
    DatasetVersion,
    EntityExample,
    JudgeExample,
    QADataset,
    QAPair,
    QAPairEvent,
    RecipeCheckpoint,
    RetrievalExample,
    TeacherConfig,
    TeacherKey,
)


class TeacherKeyForm(forms.ModelForm):
    secret = forms.CharField(label=_("secret"), required=False, widget=forms.PasswordInput(render_value=False),
                             help_text=_("Stored encrypted; it is never shown again. Leave empty to keep the current one."))

    class Meta:
        model = TeacherKey
        fields = ["teacher", "label", "disabled"]

    def clean(self):
        data = super().clean()
        if not self.instance.pk and not data.get("secret"):
            raise forms.ValidationError(_("Enter the key."))
        return data

    def save(self, commit=True):
        key = super().save(commit=False)
        if self.cleaned_data.get("secret"):
            key.set_secret(self.cleaned_data["secret"])
        if commit:
            key.save()
        return key


class TeacherKeyInline(admin.TabularInline):
    model = TeacherKey
    extra = 0
    fields = ["label", "fingerprint", "disabled", "requests", "failures", "prompt_tokens", "completion_tokens",
              "last_error", "last_used_at"]
    readonly_fields = ["label", "fingerprint", "requests", "failures", "prompt_tokens", "completion_tokens",
                       "last_error", "last_used_at"]
    can_delete = True

    def has_add_permission(self, request, obj=None):
        return False  # added through the key admin (with its password field) or the teacher page


@admin.register(TeacherConfig)
class TeacherConfigAdmin(admin.ModelAdmin):
    list_display = ["name", "domain", "provider", "model", "temperature", "concurrency", "rpm", "is_default"]
    list_filter = ["provider", "domain"]
    search_fields = ["name", "model", "base_url", "domain__slug"]
    inlines = [TeacherKeyInline]


@admin.register(TeacherKey)
class TeacherKeyAdmin(admin.ModelAdmin):
    form = TeacherKeyForm
    list_display = ["label", "teacher", "fingerprint", "disabled", "requests", "failures", "prompt_tokens",
                    "completion_tokens", "last_used_at"]
    list_filter = ["disabled", "teacher__domain"]
    search_fields = ["label", "fingerprint", "teacher__name", "teacher__domain__slug"]
    readonly_fields = ["fingerprint", "requests", "failures", "prompt_tokens", "completion_tokens", "last_error",
                       "last_used_at"]


@admin.register(QADataset)
class QADatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "domain", "double_review", "stale_since", "created_at"]
    list_filter = ["domain", "double_review"]
    search_fields = ["name", "description", "domain__slug"]


class QAPairEventInline(admin.TabularInline):
    model = QAPairEvent
    extra = 0
    fields = ["at", "actor", "action", "before", "after", "note"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(QAPair)
class QAPairAdmin(admin.ModelAdmin):
    list_display = ["question", "status", "source", "teacher_label", "quality_score", "held_out", "assigned_to",
                    "reviewed_by", "dataset"]
    list_filter = ["status", "source", "held_out", "dataset__domain", "dataset", "reviewed_by", "assigned_to"]
    search_fields = ["question", "answer", "teacher_label", "dataset__domain__slug"]
    readonly_fields = ["status", "reviewed_by", "reviewed_at", "second_reviewed_by", "second_verdict", "version",
                       "origin_key", "job", "created_by", "created_at", "updated_at", "source_text",
                       "evidence_start", "evidence_end"]
    raw_id_fields = ["chunk", "document", "parent"]
    inlines = [QAPairEventInline]
    actions = ["approve", "reject", "needs_edit", "reopen", "mark_held_out"]

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)
        changes = {f: form.cleaned_data[f] for f in services.EDITABLE if f in form.changed_data}
        if changes:
            # The admin goes through the same locked edit as the queue, with history.
            services.edit_pair(QAPair.objects.get(pk=obj.pk), by=request.user,
                               expected_version=obj.version, **changes)

    def _review(self, request, queryset, action, reason=""):
        done = skipped = 0
        for pair in queryset.select_related("dataset"):
            try:
                services.review_pair(pair, by=request.user, action=action, expected_version=pair.version,
                                     reason=reason)
                done += 1
            except (services.EditConflict, services.InvalidTransition):
                skipped += 1
        self.message_user(request, _("%(done)d pair(s) updated, %(skipped)d skipped (not allowed from their state "
                                     "or changed meanwhile).") % {"done": done, "skipped": skipped},
                          messages.SUCCESS if done else messages.WARNING)

    @admin.action(description=_("Approve selected pairs"))
    def approve(self, request, queryset):
        self._review(request, queryset, "approve")

    @admin.action(description=_("Reject selected pairs"))
    def reject(self, request, queryset):
        self._review(request, queryset, "reject", reason=str(_("rejected in the admin")))

    @admin.action(description=_("Mark selected pairs as needing an edit"))
    def needs_edit(self, request, queryset):
        self._review(request, queryset, "needs_edit")

    @admin.action(description=_("Send selected pairs back to pending"))
    def reopen(self, request, queryset):
        self._review(request, queryset, "reopen")

    @admin.action(description=_("Mark selected pairs as held-out test questions"))
    def mark_held_out(self, request, queryset):
        n = 0
        for pair in queryset:
            try:
                services.edit_pair(pair, by=request.user, expected_version=pair.version, held_out=True)
                n += 1
            except services.EditConflict:
                pass
        self.message_user(request, _("%(n)d pair(s) marked as held-out.") % {"n": n})


@admin.register(QAPairEvent)
class QAPairEventAdmin(admin.ModelAdmin):
    list_display = ["pair", "action", "actor", "at"]
    list_filter = ["action", "pair__dataset__domain"]
    search_fields = ["pair__question", "note", "actor__username"]
    readonly_fields = ["pair", "actor", "action", "before", "after", "note", "at"]


@admin.register(RetrievalExample)
class RetrievalExampleAdmin(admin.ModelAdmin):
    list_display = ["query", "dataset", "chunk", "score", "held_out"]
    list_filter = ["held_out", "dataset__domain"]
    search_fields = ["query", "positive_text"]
    raw_id_fields = ["chunk", "pair"]


@admin.register(EntityExample)
class EntityExampleAdmin(admin.ModelAdmin):
    list_display = ["text", "dataset", "teacher_label", "approved"]
    list_filter = ["approved", "dataset__domain"]
    search_fields = ["text"]
    raw_id_fields = ["chunk"]


@admin.register(JudgeExample)
class JudgeExampleAdmin(admin.ModelAdmin):
    list_display = ["question", "label", "dataset", "teacher_label"]
    list_filter = ["label", "dataset__domain"]
    search_fields = ["question", "passage", "analysis"]
    raw_id_fields = ["chunk", "pair"]


@admin.register(RecipeCheckpoint)
class RecipeCheckpointAdmin(admin.ModelAdmin):
    list_display = ["dataset", "recipe", "item_key", "produced", "job", "done_at"]
    list_filter = ["recipe", "dataset__domain"]
    search_fields = ["item_key", "dataset__domain__slug"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "domain", "name", "content_hash", "created_by", "created_at"]
    list_filter = ["domain"]
    search_fields = ["name", "content_hash", "domain__slug"]

    def has_change_permission(self, request, obj=None):
        return False  # versions are immutable
