"""Configuration tables with exactly one row, edited in the admin."""

from __future__ import annotations

from django.contrib import admin
from django.db import models


class SingletonModel(models.Model):
    """`current()` returns the one row, creating it from `initial_values()` on first use."""

    class Meta:
        abstract = True

    @classmethod
    def initial_values(cls) -> dict:
        raise NotImplementedError

    @classmethod
    def current(cls):
        row = cls.objects.order_by("pk").first()
        if row is None:
            row, _ = cls.objects.get_or_create(pk=1, defaults=cls.initial_values())
        return row


class SingletonModelAdmin(admin.ModelAdmin):
    """Admin for a SingletonModel: the one row can be edited, never added twice or deleted."""

    def has_add_permission(self, request) -> bool:
        return not self.model.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        self.model.current()  # make sure the one row exists
        return super().changelist_view(request, extra_context)
