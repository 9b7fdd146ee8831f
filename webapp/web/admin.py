"""Admin of API tokens: superusers see every user's tokens (never a secret or digest) and can revoke them.

Replaces django-rest-knox's own admin, which lists the digest and can mint tokens. Failed-login lockouts
are django-axes' admin (Axes › Access attempts: deleting an entry unlocks that user or address).
"""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from knox.models import AuthToken

if admin.site.is_registered(AuthToken):
    admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    list_display = ("token_id", "user", "created", "expiry", "active")
    list_filter = ("created", "expiry")
    search_fields = ("user__username",)
    fields = ("token_id", "user", "created", "expiry")
    readonly_fields = fields
    list_select_related = ("user",)
    ordering = ("-created",)

    @admin.display(description="id (first characters)")
    def token_id(self, obj: AuthToken) -> str:
        return f"{obj.token_key}…"

    @admin.display(boolean=True)
    def active(self, obj: AuthToken) -> bool:
        return obj.expiry is None or obj.expiry > timezone.now()

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:  # revoke
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request) -> bool:
        return False  # owners create tokens (/tokens/, /api/v1/tokens/): the secret is theirs alone

    def has_change_permission(self, request, obj=None) -> bool:
        return False
