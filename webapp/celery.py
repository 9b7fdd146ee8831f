"""The one Celery app. Workers: `celery -A webapp worker -Q gpu.<i>`; beat and control too."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers", "webapp.ledger", "webapp.serving", "webapp.cache"])
