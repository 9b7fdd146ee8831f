"""Keeping beat's tables in step with the ledger, and the cache with accounts (connected in
`ServingAppConfig.ready`).

After `migrate`, the periodic tasks exist; after the admin saves the serving configuration, the
controller's beat interval follows its period and the reconciler's the SLO. Signals keep the ledger
free of any import of serving code: the model saves, serving reacts.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.db.models.signals import post_migrate, post_save, pre_delete

from webapp.cache import store as cache_store
from webapp.ledger.models import ServingConfig

from .schedules import ensure_periodic_tasks, sync_periods


def _on_serving_config_saved(sender, instance: ServingConfig, **kwargs) -> None:
    sync_periods(instance)


def _on_migrated(sender, **kwargs) -> None:
    ensure_periodic_tasks()


def _on_user_deleted(sender, instance, **kwargs) -> None:
    """Account deletion removes the cache entries the user's generations made, through the store's purge
    (its advisory lock; latent files go once the deletion commits, nothing if it rolls back)."""
    cache_store.purge_created_by(instance.pk)


def connect() -> None:
    # post_migrate is sent per app with models; serving has none, the ledger holds ServingConfig.
    post_save.connect(_on_serving_config_saved, sender=ServingConfig, dispatch_uid="serving.sync_periods")
    post_migrate.connect(
        _on_migrated, sender=apps.get_app_config("ledger"), dispatch_uid="serving.ensure_periodic_tasks"
    )
    pre_delete.connect(_on_user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="serving.purge_user_cache")
