"""Beat's periodic tasks, kept in django-celery-beat's tables so the admin can edit periods."""

from __future__ import annotations

import json

from django.conf import settings


def ensure_periodic_tasks(**kwargs) -> None:
    """Create the periodic tasks once (after migrate); never overwrite an operator's edits."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from .tasks import RECONCILE_TASK

    period = settings.T2I_RECONCILE_SECONDS
    every, _ = IntervalSchedule.objects.get_or_create(every=period, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.get_or_create(
        name="Reconcile the request ledger",
        defaults=dict(task=RECONCILE_TASK, interval=every, queue="control",
                      # a pass that could not start within its period is superseded by the next
                      expire_seconds=max(1, period - 1), kwargs=json.dumps({})),
    )
