from django.contrib import admin

from webapp.singleton import SingletonModelAdmin

from .admin_privacy import REDACTED, PromptPrivacyAdmin
from .models import AllocationPlan, BatchRecord, GenerationRequest, ServingConfig


@admin.register(GenerationRequest)
class GenerationRequestAdmin(PromptPrivacyAdmin):
    """Read-only. Staff who are not superusers see no prompt text (admin_privacy.py)."""

    prompt_fields = ("prompt", "negative_prompt", "cache_neighbor_prompt", "error")
    prompt_columns = ("short_prompt",)
    list_display = (
        "id",
        "owner",
        "status",
        "priority",
        "worker",
        "k_star",
        "k_served",
        "created_at",
        "finished_at",
        "attempts",
        "short_prompt",
    )
    list_filter = ("status", "priority", "worker", "k_served", "model_label")
    search_fields = ("prompt", "id", "owner__username")
    date_hierarchy = "created_at"
    exclude = ("embedding",)  # 384 floats: nothing to read
    readonly_fields = [f.name for f in GenerationRequest._meta.fields if f.name != "embedding"]

    @admin.display(description="prompt")
    def short_prompt(self, obj: GenerationRequest) -> str:
        return obj.prompt[:60]

    @admin.display(description="error")
    def error_redacted(self, obj: GenerationRequest) -> str:
        """The error, with the request's own prompt texts hidden should an engine message quote them."""
        text = obj.error
        for prompt in sorted({obj.prompt, obj.negative_prompt} - {""}, key=len, reverse=True):
            text = text.replace(prompt, REDACTED)
        return text

    def has_add_permission(self, request) -> bool:
        return False  # requests are made through the API or the form

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ServingConfig)
class ServingConfigAdmin(SingletonModelAdmin):
    list_display = (
        "__str__",
        "policy",
        "slo_seconds",
        "batch_slo_seconds",
        "manual_layout",
        "controller_period_s",
        "max_in_flight",
        "cache_scope",
        "updated_at",
    )
    fieldsets = [
        (
            "Requests",
            {
                "fields": [
                    "slo_seconds",
                    "batch_slo_seconds",
                    "default_steps",
                    "min_steps",
                    "max_steps",
                    "default_size",
                    "allowed_sizes",
                    "max_in_flight",
                    "admission",
                ]
            },
        ),
        (
            "Scheduling",
            {
                "fields": [
                    "policy",
                    "k_levels",
                    "thresholds",
                    "load_threshold",
                    "util_target",
                    "controller_period_s",
                    "manual_layout",
                ],
                "description": "Applied by the controller at its next run and by routing "
                "within a second; no restart. The cache byte budget is under "
                "Approximate cache › Cache configuration.",
            },
        ),
        (
            "Prompt-aware levers",
            {
                "fields": list(ServingConfig.PROMPT_AWARE_LEVERS),
                "description": "prompt_aware's controller and workers, as the simulator runs them "
                "(docs/results.md measures each). Applied like the scheduling settings.",
            },
        ),
        (
            "Cache and privacy",
            {
                "fields": ["cache_scope"],
                "description": "shared: any request may resume from any cache entry (most reuse); "
                "tenant: only from entries of its own tenant and operator-warmed ones; off: no lookup, "
                "no insert. No request ever shows another user's prompt, whatever the scope.",
            },
        ),
    ]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AllocationPlan)
class AllocationPlanAdmin(ReadOnlyAdmin):
    """Plan history: every controller run, including failed and slow solves with the reason."""

    list_display = ("id", "created_at", "policy", "status", "worker_levels", "expected_quality", "solve_ms", "message")
    list_filter = ("status", "policy")
    readonly_fields = [f.name for f in AllocationPlan._meta.fields]


@admin.register(BatchRecord)
class BatchRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "finished_at",
        "worker",
        "k_prime",
        "batch_size",
        "service_seconds",
        "overhead_seconds",
        "engine",
        "plan_version",
    )
    list_filter = ("worker", "k_prime", "batch_size", "engine")
    readonly_fields = [f.name for f in BatchRecord._meta.fields]
