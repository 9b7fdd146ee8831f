from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """The GPU process. No models since the cache moved to `webapp.cache`; the app stays installed
    for its management commands and for the migration history of the tables it created."""

    name = "workers"
    label = "workers"
    verbose_name = "GPU workers"
