from django.apps import AppConfig


class ServingAppConfig(AppConfig):
    """Serving control (no models): routing at submit, the live policy, the controller, beat."""

    name = "webapp.serving"
    label = "serving"
    verbose_name = "Serving control"

    def ready(self) -> None:
        from webapp.ledger.models import ServingConfig

        from . import signals  # models are importable only once the registry is ready
        from .live_config import check_recoverable

        signals.connect()
        if check_recoverable not in ServingConfig.EXTRA_CHECKS:
            ServingConfig.EXTRA_CHECKS.append(check_recoverable)
