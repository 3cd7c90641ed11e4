from django.contrib import admin

from domains.models import ApiKey, Chunk, Document, DocumentPage, Domain, Job, Membership


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "language", "created_at"]
    list_filter = ["language"]
    search_fields = ["slug", "name", "description"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["domain", "user", "role", "created_at"]
    list_filter = ["role", "domain"]
    search_fields = ["domain__slug", "user__username", "user__email"]
    autocomplete_fields = ["user"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "domain", "scope", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["scope", "domain", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "domain__slug"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # keys are issued from the domain's key page, where the secret is shown once

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        from domains.services import revoke_api_key

        for key in queryset:
            revoke_api_key(key=key, by=request.user)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "domain", "kind", "status", "percent", "attempts", "worker", "heartbeat_at", "created_at"]
    list_filter = ["status", "kind", "domain"]
    search_fields = ["id", "kind", "message", "error", "domain__slug"]
    readonly_fields = [f.name for f in Job._meta.fields]
    date_hierarchy = "created_at"


class DocumentPageInline(admin.TabularInline):
    model = DocumentPage
    extra = 0
    fields = ["number", "ocr", "ocr_confidence"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["filename", "domain", "kind", "status", "page_count", "chunk_count", "size_bytes", "created_at"]
    list_filter = ["status", "kind", "domain"]
    search_fields = ["filename", "content_hash", "error", "domain__slug"]
    readonly_fields = ["content_hash", "storage_path", "size_bytes", "kind", "last_job", "ingested_at"]
    inlines = [DocumentPageInline]


@admin.register(DocumentPage)
class DocumentPageAdmin(admin.ModelAdmin):
    list_display = ["document", "number", "ocr", "ocr_confidence"]
    list_filter = ["ocr", "document__domain"]
    search_fields = ["text", "document__filename"]


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ["document", "ordinal", "heading", "pages_label", "length"]
    list_filter = ["domain"]
    search_fields = ["text", "document__filename", "content_hash"]


from domains.models import AuditEvent  # noqa: E402


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "domain", "actor_label", "action", "target", "summary"]
    list_filter = ["domain", "action"]
    search_fields = ["target", "summary", "actor_label"]
    readonly_fields = ["domain", "actor", "actor_label", "action", "target", "summary", "data", "created_at"]

    def has_add_permission(self, request):
        return False  # written by the services that do the work, never by hand

    def has_change_permission(self, request, obj=None):
        return False
