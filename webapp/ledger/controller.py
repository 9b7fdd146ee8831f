"""The Resource Controller, run by beat every `controller_period_s` (DESIGN §4 step 5).

Each tick: feed the arrivals since the last tick (their K* class and expected quality at every
level) to the demand estimator, add what is still queued, ask the active policy for a plan,
and store it as an AllocationPlan row. Dispatch in every web process adopts the newest usable
row within a second. Requests already queued keep the K′ they were given (drain).

A solve that fails, or takes longer than half a period, is recorded (status failed/slow, with
the reason) and the previous plan stays current. A manual K layout from the admin pins the
worker levels instead of solving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

import numpy as np
from django.conf import settings
from django.db.models import Count

from scheduler.demand import DemandEstimator
from scheduler.interface import SchedulerConfig
from scheduler.planner import Plan
from scheduler.policies import Policy, make_policy

from .live_scheduler import config_key, plan_from_row, scheduler_config
from .models import AllocationPlan, GenerationRequest, ServingConfig, Status

log = logging.getLogger(__name__)


@dataclass
class _ControllerState:
    key: tuple | None = None
    policy: Policy | None = None
    estimator: DemandEstimator | None = None
    last_tick: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _ControllerState()


def manual_plan(layout: list[int], sc: SchedulerConfig, policy_name: str) -> Plan:
    """A plan whose worker levels are the operator's layout. Each K* class goes to the largest
    pinned level not above its K* (no quality loss), else to the smallest pinned level."""
    levels = sc.levels
    pinned = sorted(set(layout))
    route = []
    for k_star in levels:
        fitting = [k for k in pinned if k <= k_star]
        target = fitting[-1] if fitting else pinned[0]
        route.append([1.0 if k == target else 0.0 for k in levels])
    caps = sc.batch_caps()
    return Plan(levels=list(levels), worker_levels=list(layout), route=route,
                batch_size={k: caps[k] for k in levels},
                workers_per_level=[layout.count(k) for k in levels], status="manual",
                policy=policy_name)


def _observe_arrivals(est: DemandEstimator, sc: SchedulerConfig, since: datetime, until: datetime) -> int:
    rows = list(GenerationRequest.objects.filter(created_at__gte=since, created_at__lt=until)
                .values_list("k_star", "similarity"))
    levels = sc.levels
    similarity = np.array([np.nan if s is None else s for _, s in rows], dtype=float)
    quality = sc.quality.q_matrix(similarity, levels)  # a row per arrival, a column per level
    for (k_star, s), q_row in zip(rows, quality):
        est.observe(k_star if k_star in levels else 0, None if s is None else q_row)
    return len(rows)


def _queued_per_class(levels: list[int]) -> list[int]:
    counts = dict(GenerationRequest.objects.filter(status=Status.QUEUED).values_list("k_star")
                  .annotate(n=Count("id")).values_list("k_star", "n"))
    return [counts.get(k, 0) + (counts.get(None, 0) if k == 0 else 0) for k in levels]


def _record(policy: str, status: str, message: str, plan: Plan | None, inputs: dict) -> AllocationPlan:
    return AllocationPlan.objects.create(
        policy=policy, status=status, message=message[:4000], inputs=inputs,
        solution=plan.to_dict() if plan else {},
        worker_levels=list(plan.worker_levels) if plan else [],
        expected_quality=plan.expected_quality if plan else None,
        utilisation=list(plan.utilisation) if plan else [],
        solve_ms=plan.solve_time_s * 1000 if plan else None)


def run_controller(now: datetime | None = None) -> AllocationPlan:
    """One controller tick; returns the row it stored (which may be a failed/slow record)."""
    now = now or datetime.now(dt_timezone.utc)
    config = ServingConfig.current()
    sc = scheduler_config(config)
    st = _state
    with st.lock:
        key = config_key(config)
        if st.key != key:
            st.policy = make_policy(config.policy, sc)
            st.estimator = DemandEstimator(sc.levels, sc.quality, alpha=sc.ewma_alpha,
                                           start=(now - timedelta(seconds=sc.period_s)).timestamp())
            st.key = key
            st.last_tick = now - timedelta(seconds=sc.period_s)
            previous = AllocationPlan.current()
            if previous is not None and previous.policy == config.policy and \
                    len(previous.worker_levels) == sc.n_workers:
                st.policy.set_plan(plan_from_row(previous))
        arrivals = _observe_arrivals(st.estimator, sc, st.last_tick, now)
        st.last_tick = now
        estimate = st.estimator.roll(now.timestamp())
        queued = _queued_per_class(sc.levels)
        if sc.backlog_aware:
            estimate = estimate.with_backlog(queued, sc.backlog_horizon_periods * sc.period_s)
        inputs = {"arrivals": arrivals, "queued_per_class": queued, "demand": estimate.to_dict(),
                  "config": sc.to_dict(), "manual_layout": config.layout_list}

        layout = config.layout_list
        if layout is not None:
            plan = manual_plan(layout, sc, config.policy)
            st.policy.set_plan(plan)
            return _record(config.policy, "manual", "Manual K layout from the admin.", plan, inputs)
        if not st.policy.uses_controller:
            plan = st.policy.current
            return _record(config.policy, "fixed", f"{config.policy} has no controller; fixed plan.",
                           plan, inputs)

        previous_plan = st.policy.current
        started = time.perf_counter()
        try:
            plan = st.policy.plan(now.timestamp(), estimate)
        except Exception as exc:  # keep serving on the old plan, and say why
            log.exception("controller: solve failed; keeping plan v%s", previous_plan.version)
            st.policy.set_plan(previous_plan)
            return _record(config.policy, "failed", f"Solve raised {type(exc).__name__}: {exc}. "
                           f"Kept the previous plan.", None, inputs)
        elapsed = time.perf_counter() - started
        if str(plan.status).startswith("failed"):
            st.policy.set_plan(previous_plan)
            log.warning("controller: solver failed (%s); keeping the previous plan", plan.status)
            return _record(config.policy, "failed", f"Solver: {plan.status}. Kept the previous plan.",
                           plan, inputs)
        if elapsed > settings.T2I_SLOW_SOLVE_FRACTION * sc.period_s:
            st.policy.set_plan(previous_plan)
            log.warning("controller: solve took %.2f s (> %.0f%% of the period); keeping the previous plan",
                        elapsed, 100 * settings.T2I_SLOW_SOLVE_FRACTION)
            return _record(config.policy, "slow", f"Solve took {elapsed:.2f} s, more than "
                           f"{settings.T2I_SLOW_SOLVE_FRACTION:.0%} of the {sc.period_s:.0f} s period. "
                           f"Kept the previous plan.", plan, inputs)
        row = _record(config.policy, "ok", f"Solver: {plan.status}.", plan, inputs)
        plan.version = row.id
        return row


def reset_controller_state() -> None:
    """Forget the in-memory estimator and policy (tests; a config change does this by itself)."""
    global _state
    _state = _ControllerState()
