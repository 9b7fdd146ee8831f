"""Beat's periodic tasks, kept in django-celery-beat's tables so the admin can edit periods.

Both tasks carry `expires` just below their period: a run that could not start in time is
superseded by the next one instead of piling up behind a slow worker.
"""

from __future__ import annotations

import json

from django.conf import settings

RECONCILE_NAME = "Reconcile the request ledger"
CONTROL_NAME = "Resource controller (plan refresh)"
SWEEP_NAME = "Remove orphaned latent-cache files"
SWEEP_TASK = "workers.sweep_cache_files"  # by name: webapp does not import workers' tasks


def _interval(seconds: float):
    from django_celery_beat.models import IntervalSchedule

    every, _ = IntervalSchedule.objects.get_or_create(every=max(1, round(seconds)),
                                                      period=IntervalSchedule.SECONDS)
    return every


def ensure_periodic_tasks(**kwargs) -> None:
    """Create the periodic tasks once (after migrate); never overwrite an operator's edits."""
    from django_celery_beat.models import PeriodicTask

    from .tasks import CONTROL_TASK, RECONCILE_TASK

    period = settings.T2I_RECONCILE_SECONDS
    PeriodicTask.objects.get_or_create(
        name=RECONCILE_NAME,
        defaults=dict(task=RECONCILE_TASK, interval=_interval(period), queue="control",
                      expire_seconds=max(1, period - 1), kwargs=json.dumps({})))
    PeriodicTask.objects.get_or_create(
        name=CONTROL_NAME,
        defaults=dict(task=CONTROL_TASK, interval=_interval(10), queue="control",
                      expire_seconds=9, kwargs=json.dumps({})))
    PeriodicTask.objects.get_or_create(
        name=SWEEP_NAME,
        defaults=dict(task=SWEEP_TASK, interval=_interval(3600), queue="control",
                      expire_seconds=3500, kwargs=json.dumps({})))


def sync_controller_period(period_s: float) -> None:
    """Called when the serving configuration is saved: beat re-reads the changed row."""
    from django_celery_beat.models import PeriodicTask

    seconds = max(1, round(period_s))
    for task in PeriodicTask.objects.filter(name=CONTROL_NAME):
        if task.interval is None or task.interval.every != seconds:
            task.interval = _interval(seconds)
            task.expire_seconds = max(1, seconds - 1)
            task.save()
