from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LedgerConfig(AppConfig):
    name = "webapp.ledger"
    label = "ledger"
    verbose_name = "Generation requests"

    def ready(self) -> None:
        from .schedules import ensure_periodic_tasks

        post_migrate.connect(ensure_periodic_tasks, sender=self)
