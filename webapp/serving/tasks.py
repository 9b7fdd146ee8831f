"""Beat tasks of serving control (run on the control queue)."""

from celery import shared_task

from webapp.ledger.queues import CONTROL_TASK, RECONCILE_TASK

from .controller import run_controller
from .recovery import reconcile_now
from .replan import take_deferred_requeue


@shared_task(name=CONTROL_TASK, ignore_result=True)
def control_task(requeue: bool = False) -> dict:
    """One controller run; `requeue` (or a re-route deferred to this run): queue-first has ended, so the rows it
    queued take the new plan's levels."""
    deferred = take_deferred_requeue()  # read (and cleared) on every run, so no stale mark outlives one
    row = run_controller(requeue=requeue or deferred)
    return {"plan": row.id, "status": row.status, "worker_levels": row.worker_levels}


@shared_task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_task() -> dict:
    return vars(reconcile_now())
