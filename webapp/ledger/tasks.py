"""Beat task of the ledger (run on the control queue)."""

from celery import shared_task

from .queues import RECONCILE_TASK
from .reconcile import reconcile


@shared_task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_task() -> dict:
    return vars(reconcile())
