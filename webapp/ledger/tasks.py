"""Beat tasks of the ledger (run on the `control` queue)."""

from celery import shared_task

from .controller import run_controller
from .reconcile import reconcile

RECONCILE_TASK = "ledger.reconcile"
CONTROL_TASK = "ledger.control"


@shared_task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_task() -> dict:
    return vars(reconcile())


@shared_task(name=CONTROL_TASK, ignore_result=True)
def control_task() -> dict:
    row = run_controller()
    return {"plan": row.id, "status": row.status, "worker_levels": row.worker_levels}
