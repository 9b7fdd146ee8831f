"""Beat task of the approximate cache (run on the control queue)."""

from celery import shared_task

from webapp.ledger.queues import SWEEP_CACHE_TASK

from . import store


@shared_task(name=SWEEP_CACHE_TASK, ignore_result=True)
def sweep_cache_files() -> int:
    """Remove latent files no cache row names (left by a process killed mid-insert)."""
    return store.sweep_orphan_files()
