from django.apps import AppConfig


class LoadgenAppConfig(AppConfig):
    name = "webapp.loadgen"
    label = "loadgen"
