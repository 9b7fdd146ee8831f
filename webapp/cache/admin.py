"""Admin for the approximate cache: entries (read-only, provenance filters, purge action), the byte budget
and thresholds. Prompt text is for superusers only (webapp/ledger/admin_privacy.py)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.template.defaultfilters import filesizeformat

from webapp.ledger.admin_privacy import PromptPrivacyAdmin
from webapp.ledger.models import ServingConfig
from webapp.singleton import SingletonModelAdmin

from . import store as cache_store
from .models import CacheConfig, CacheEntry


@admin.register(CacheEntry)
class CacheEntryAdmin(PromptPrivacyAdmin):
    list_display = (
        "id",
        "short_prompt",
        "levels",
        "hits",
        "score",
        "size",
        "tenant",
        "creator",
        "model_key",
        "created_at",
        "last_hit_at",
    )
    list_filter = ("tenant", ("creator", admin.RelatedOnlyFieldListFilter), "created_at", "model_key")
    list_select_related = ("creator",)
    search_fields = ("prompt", "creator__username", "=tenant")
    ordering = ("-created_at",)
    fields = (
        "prompt",
        "model_key",
        "tenant",
        "creator",
        "source_request",
        "levels",
        "hits",
        "score",
        "size",
        "created_at",
        "last_hit_at",
    )
    readonly_fields = fields
    prompt_columns = ("short_prompt",)
    actions = ["purge_selected"]
    show_full_result_count = False  # no COUNT(*) over a large cache on every page

    @admin.display(description="prompt")
    def short_prompt(self, obj: CacheEntry) -> str:
        return obj.prompt[:80]

    @admin.display(description="size", ordering="bytes")
    def size(self, obj: CacheEntry) -> str:
        return filesizeformat(obj.bytes)

    def get_queryset(self, request):
        return super().get_queryset(request).defer("embedding", "clip_embedding")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # rows must not go without their files: use purge
        return actions

    # Filter by creator, tenant or creation date, select all, then purge: the admin side of
    # `manage.py purge_cache --owner/--tenant/--before/--prompt-contains`.
    @admin.action(description="Purge selected entries (rows and latent files)", permissions=["delete"])
    def purge_selected(self, request, queryset) -> None:
        entries, files = cache_store.purge(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Purged {entries} cache entries and {files} latent files.", messages.SUCCESS)

    def delete_model(self, request, obj: CacheEntry) -> None:
        cache_store.purge([obj.pk])

    def delete_queryset(self, request, queryset) -> None:
        cache_store.purge(list(queryset.values_list("pk", flat=True)))

    def has_add_permission(self, request) -> bool:
        return False  # entries come from generations (worker, warm_cache)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        s = cache_store.stats()
        extra_context = dict(
            extra_context or {},
            title=(
                f"Cache entries — {s['entries']} prompts, {s['levels']} latents, "
                f"{filesizeformat(s['bytes'])} of {filesizeformat(s['budget'])} budget"
            ),
        )
        return super().changelist_view(request, extra_context)


@admin.register(CacheConfig)
class CacheConfigAdmin(SingletonModelAdmin):
    list_display = ("__str__", "budget", "used", "thresholds", "updated_at")
    fields = ("byte_budget", "used", "thresholds")
    readonly_fields = ("used", "thresholds")

    @admin.display(description="byte budget")
    def budget(self, obj: CacheConfig) -> str:
        return f"{filesizeformat(obj.byte_budget)} ({obj.byte_budget} bytes)"

    @admin.display(description="used")
    def used(self, obj: CacheConfig) -> str:
        return filesizeformat(cache_store.used_bytes())

    @admin.display(description="similarity → K* thresholds")
    def thresholds(self, obj: CacheConfig) -> str:
        return f"{ServingConfig.current().thresholds} (edit under Serving configuration → Scheduling)"

    def save_model(self, request, obj: CacheConfig, form, change) -> None:
        super().save_model(request, obj, form, change)
        # A lower budget takes effect now, once the new value is committed.
        transaction.on_commit(cache_store.evict_to_budget)
