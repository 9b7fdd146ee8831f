"""Beat tasks of the ledger (run on the `control` queue)."""

from celery import shared_task

from .reconcile import reconcile

RECONCILE_TASK = "ledger.reconcile"


@shared_task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_task() -> dict:
    return vars(reconcile())
