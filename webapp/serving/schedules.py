"""Beat's periodic tasks, kept in django-celery-beat's tables so the admin can edit periods.

Every task carries `expires` just below its period: a run that could not start in time is
superseded by the next one instead of piling up behind a slow worker.
"""

from __future__ import annotations

import json

from django_celery_beat.models import IntervalSchedule, PeriodicTask

from webapp.ledger.models import ServingConfig
from webapp.ledger.queues import CONTROL_QUEUE, CONTROL_TASK, RECONCILE_TASK, SWEEP_CACHE_TASK

from .live_config import recovery_for

RECONCILE_NAME = "Reconcile the request ledger"
CONTROL_NAME = "Resource controller (plan refresh)"
SWEEP_NAME = "Remove orphaned latent-cache files"
DEFAULT_CONTROL_PERIOD_S = 10
SWEEP_PERIOD_S = 3600


def _interval(seconds: float) -> IntervalSchedule:
    every, _ = IntervalSchedule.objects.get_or_create(every=max(1, round(seconds)), period=IntervalSchedule.SECONDS)
    return every


def _ensure(name: str, task: str, period_s: float, expire_s: float | None = None) -> None:
    expire_s = expire_s if expire_s is not None else max(1, round(period_s) - 1)
    PeriodicTask.objects.get_or_create(
        name=name,
        defaults=dict(
            task=task, interval=_interval(period_s), queue=CONTROL_QUEUE, expire_seconds=expire_s, kwargs=json.dumps({})
        ),
    )


def ensure_periodic_tasks() -> None:
    """Create the periodic tasks once (after migrate); never overwrite an operator's edits."""
    _ensure(RECONCILE_NAME, RECONCILE_TASK, recovery_for(ServingConfig.current()).reconcile_s)
    _ensure(CONTROL_NAME, CONTROL_TASK, DEFAULT_CONTROL_PERIOD_S)
    _ensure(SWEEP_NAME, SWEEP_CACHE_TASK, SWEEP_PERIOD_S, expire_s=SWEEP_PERIOD_S - 100)


def sync_periods(config: ServingConfig) -> None:
    """Called when the serving configuration is saved: the controller's interval follows its period and
    the reconciler's follows the SLO (scheduler/recovery.py); beat re-reads a changed row."""
    _sync(CONTROL_NAME, config.controller_period_s)
    _sync(RECONCILE_NAME, recovery_for(config).reconcile_s)


def _sync(name: str, period_s: float) -> None:
    seconds = max(1, round(period_s))
    for task in PeriodicTask.objects.filter(name=name):
        if task.interval is None or task.interval.every != seconds:
            task.interval = _interval(seconds)
            task.expire_seconds = max(1, seconds - 1)
            task.save()
