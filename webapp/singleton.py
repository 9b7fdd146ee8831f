"""Configuration tables with exactly one row, edited in the admin."""

from __future__ import annotations

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
