from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "webapp.ledger"
    label = "ledger"
    verbose_name = "Generation requests"
