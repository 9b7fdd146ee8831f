from django.apps import AppConfig


class CacheAppConfig(AppConfig):
    name = "webapp.cache"
    label = "cache"
    verbose_name = "Approximate cache"
