from django.apps import AppConfig


class WebAppConfig(AppConfig):
    name = "webapp.web"
    label = "web"
