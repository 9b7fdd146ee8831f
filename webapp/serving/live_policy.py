"""This process's policy object: the same objects the simulator runs, kept in step with the ledger.

Each web process keeps one policy object, rebuilt when the admin's configuration changes, and
re-reads the newest adoptable plan at most once a second, so routing costs two small queries. A rebuilt
object learns when queue-first last ended in any process (`replan.follow_queue_first_end`) before it adopts a plan.
The controller adopts stored plans by the same rule (`adoptable_plan`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from scheduler.planner import Plan
from scheduler.policies import Policy, make_policy
from webapp.ledger.models import AllocationPlan, BatchRecord, ServingConfig

from .live_config import config_key, scheduler_config
from .replan import follow_queue_first_end

PLAN_REFRESH_S = 1.0


def plan_from_row(row: AllocationPlan) -> Plan:
    plan = Plan.from_dict(row.solution)
    plan.version = row.id
    return plan


def adoptable_plan(policy_name: str, n_workers: int) -> Plan | None:
    """The newest usable stored plan that this deployment can run: made for the active policy, with
    one level per worker of this cluster. None if there is none."""
    row = AllocationPlan.current()
    if row is None or row.policy != policy_name:
        return None
    plan = plan_from_row(row)
    return plan if len(plan.worker_levels) == n_workers else None


@dataclass
class _PolicyState:
    config_key: tuple | None = None
    policy: Policy | None = None
    plan_id: int | None = None
    last_batch_id: int = 0
    checked_at: float = 0.0


class LivePolicy:
    """This process's policy object, kept in step with the admin's configuration and the plan."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _PolicyState()

    def get(self, config: ServingConfig) -> tuple[Policy, int | None]:
        """The policy for `config` with the newest plan adopted, and that plan's version."""
        with self._lock:
            state = self._state
            key = config_key(config)
            if state.config_key != key:
                state.policy = make_policy(config.policy, scheduler_config(config))
                # It starts in queue-first (its initial plan is all K′ = 0): if the mode has ended in some process
                # since, it ends here before a stored plan is adopted, which restarts it by the usual rule.
                follow_queue_first_end(state.policy)
                state.config_key, state.plan_id, state.checked_at = key, None, 0.0
                state.last_batch_id = BatchRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0
            now = time.monotonic()
            if now - state.checked_at >= PLAN_REFRESH_S:
                state.checked_at = now
                self._refresh(state, config)
            return state.policy, state.plan_id

    @staticmethod
    def _refresh(state: _PolicyState, config: ServingConfig) -> None:
        plan = adoptable_plan(config.policy, settings.T2I_WORKERS)
        if plan is not None and plan.version != state.plan_id:
            state.policy.set_plan(plan)
            state.plan_id = plan.version
        # Feedback for policies that adapt per batch (Clipper's AIMD).
        for record in BatchRecord.objects.filter(id__gt=state.last_batch_id).order_by("id")[:500]:
            state.policy.on_batch_done(record.worker, record.k_prime, record.batch_size, record.service_seconds)
            state.last_batch_id = record.id

    def reset(self) -> None:
        with self._lock:
            self._state = _PolicyState()


live_policy = LivePolicy()
