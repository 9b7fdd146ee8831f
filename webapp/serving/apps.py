from django.apps import AppConfig


class ServingAppConfig(AppConfig):
    """Serving control (no models): routing at submit, the live policy, the controller, beat."""

    name = "webapp.serving"
    label = "serving"
    verbose_name = "Serving control"

    def ready(self) -> None:
        from . import signals  # models are importable only once the registry is ready

        signals.connect()
