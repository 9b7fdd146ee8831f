"""One reconciler pass with what it needs from serving: the recovery timings of the current SLO, the
workers whose heartbeat is fresh and the plan's level per worker (webapp/ledger/reconcile.py does the work)."""

from __future__ import annotations

from django.conf import settings

from webapp.ledger.models import ServingConfig
from webapp.ledger.reconcile import ReconcileContext, ReconcileReport, reconcile

from .cluster_state import live_workers
from .live_config import recovery_for
from .live_policy import adoptable_plan


def reconcile_context(config: ServingConfig) -> ReconcileContext:
    plan = adoptable_plan(config.policy, settings.T2I_WORKERS)
    return ReconcileContext(
        republish_s=recovery_for(config).republish_s,
        live_workers=live_workers(),
        planned_levels=list(plan.worker_levels) if plan else [],
    )


def reconcile_now(now=None) -> ReconcileReport:
    return reconcile(reconcile_context(ServingConfig.current()), now)
