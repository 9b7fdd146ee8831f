"""Keeping beat's tables in step with the ledger (connected in `ServingAppConfig.ready`).

After `migrate`, the periodic tasks exist; after the admin saves the serving configuration, the
controller's beat interval follows its period. Signals keep the ledger free of any import of
serving code: the model saves, serving reacts.
"""

from __future__ import annotations

from django.apps import apps
from django.db.models.signals import post_migrate, post_save

from webapp.ledger.models import ServingConfig

from .schedules import ensure_periodic_tasks, sync_controller_period


def _on_serving_config_saved(sender, instance: ServingConfig, **kwargs) -> None:
    sync_controller_period(instance.controller_period_s)


def _on_migrated(sender, **kwargs) -> None:
    ensure_periodic_tasks()


def connect() -> None:
    # post_migrate is sent per app with models; serving has none, the ledger holds ServingConfig.
    post_save.connect(_on_serving_config_saved, sender=ServingConfig, dispatch_uid="serving.sync_controller_period")
    post_migrate.connect(
        _on_migrated, sender=apps.get_app_config("ledger"), dispatch_uid="serving.ensure_periodic_tasks"
    )
