from django.contrib import admin

from .models import GenerationRequest, ServingConfig


@admin.register(GenerationRequest)
class GenerationRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "status", "worker", "k_star", "k_served", "created_at",
                    "finished_at", "attempts", "short_prompt")
    list_filter = ("status", "worker", "k_served", "model_label")
    search_fields = ("prompt", "id", "owner__username")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in GenerationRequest._meta.fields]

    @admin.display(description="prompt")
    def short_prompt(self, obj: GenerationRequest) -> str:
        return obj.prompt[:60]

    def has_add_permission(self, request) -> bool:
        return False  # requests are made through the API or the form

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ServingConfig)
class ServingConfigAdmin(admin.ModelAdmin):
    list_display = ("__str__", "slo_seconds", "default_steps", "default_size", "allowed_sizes",
                    "max_in_flight", "updated_at")

    def has_add_permission(self, request) -> bool:
        return not ServingConfig.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        ServingConfig.current()  # make sure the one row exists
        return super().changelist_view(request, extra_context)
