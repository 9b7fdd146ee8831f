"""The Resource Controller, run by beat every `controller_period_s` (DESIGN §4 step 5).

Each tick: feed the arrivals since the last tick (their K* class and expected quality at every
level) to the demand estimator, add what is still queued, ask the active policy for a plan,
and store it as an AllocationPlan row. Routing in every web process adopts the newest usable
row within a second. Requests already queued keep the K′ they were given (drain), except the rows
prompt_aware's queue-first mode queued when a run asked for by the mode's end re-routes them (requeue.py).

A solve that raises, ends without any solution (the planner's fallback plan: see
`scheduler.planner.Plan.adoptable`) or takes longer than the slow-solve fraction of a period is
recorded (status failed/slow, with the reason) and the previous plan stays current. A manual K
layout from the admin pins the worker levels instead of solving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db.models import Count

from scheduler.demand import DemandEstimate, DemandEstimator, estimator_for
from scheduler.interface import SchedulerConfig
from scheduler.planner import Plan, PlanStatus
from scheduler.policies import MODEL_VARIANT_POLICIES, Policy, SimilarityRanks, make_policy
from webapp.ledger.models import AllocationPlan, GenerationRequest, PlanRecordStatus, ServingConfig, Status

from .live_config import config_key, scheduler_config
from .live_policy import adoptable_plan
from .requeue import requeue_queue_first

log = logging.getLogger(__name__)


@dataclass
class _ControllerState:
    config_key: tuple | None = None
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
    return Plan(
        levels=list(levels),
        worker_levels=list(layout),
        route=route,
        batch_size={k: caps[k] for k in levels},
        workers_per_level=[layout.count(k) for k in levels],
        status=PlanStatus.MANUAL,
        policy=policy_name,
    )


def run_controller(now: datetime | None = None, requeue: bool = False) -> AllocationPlan:
    """One controller tick; returns the row it stored (which may be a failed/slow record). `requeue`: queue-first
    has ended, so after the plan the rows it queued take the plan's levels (`requeue.requeue_queue_first`)."""
    now = now or datetime.now(UTC)
    config = ServingConfig.current()
    sc = scheduler_config(config)
    state = _state
    with state.lock:
        _rebuild_if_config_changed(state, config, sc, now)
        estimate, inputs = _estimate_demand(state, sc, now)
        inputs["manual_layout"] = config.layout_list
        # A manual layout pins K′ levels; ServingConfig.clean refuses one for a model-variant policy.
        if config.layout_list is not None and config.policy not in MODEL_VARIANT_POLICIES:
            plan = manual_plan(config.layout_list, sc, config.policy)
            state.policy.set_plan(plan)
            return _record(config.policy, PlanRecordStatus.MANUAL, "Manual K layout from the admin.", plan, inputs)
        if not state.policy.uses_controller:
            return _record(
                config.policy,
                PlanRecordStatus.FIXED,
                f"{config.policy} has no controller; fixed plan.",
                state.policy.current,
                inputs,
            )
        row = _solve_and_record(state.policy, config.policy, sc, estimate, inputs, now)
        if requeue:
            requeue_queue_first(state.policy)
        return row


def _rebuild_if_config_changed(
    state: _ControllerState, config: ServingConfig, sc: SchedulerConfig, now: datetime
) -> None:
    """A new policy and estimator when the configuration changed; it starts from the stored plan."""
    key = config_key(config)
    if state.config_key == key:
        return
    state.policy = make_policy(config.policy, sc)
    state.estimator = estimator_for(sc, start=(now - timedelta(seconds=sc.period_s)).timestamp())
    state.config_key = key
    state.last_tick = now - timedelta(seconds=sc.period_s)
    previous = adoptable_plan(config.policy, sc.n_workers)
    if previous is not None:
        state.policy.set_plan(previous)


def _estimate_demand(state: _ControllerState, sc: SchedulerConfig, now: datetime) -> tuple[DemandEstimate, dict]:
    """Demand per K* class from the arrivals since the last tick (plus the backlog when the policy
    plans for it), and the inputs recorded with the plan."""
    arrivals = _observe_arrivals(state.estimator, sc, state.last_tick, now, getattr(state.policy, "ranks", None))
    state.last_tick = now
    estimate = state.estimator.roll(now.timestamp())
    queued = _queued_per_class(sc.levels)
    if sc.backlog_aware:
        estimate = estimate.with_backlog(queued, sc.backlog_horizon_periods * sc.period_s)
    inputs = {"arrivals": arrivals, "queued_per_class": queued, "demand": estimate.to_dict(), "config": sc.to_dict()}
    return estimate, inputs


def _observe_arrivals(
    est: DemandEstimator, sc: SchedulerConfig, since: datetime, until: datetime, ranks: SimilarityRanks | None = None
) -> int:
    """Feed the arrivals of [since, until) to the estimator, and their similarities to the policy's per-class
    ranks when it keeps them (prompt_aware: the controller's copy re-routes queue-first rows by them)."""
    rows = list(
        GenerationRequest.objects.filter(created_at__gte=since, created_at__lt=until)
        .order_by("created_at")
        .values_list("k_star", "similarity")
    )
    levels = sc.levels
    similarity = np.array([np.nan if s is None else s for _, s in rows], dtype=float)
    quality = sc.quality.q_matrix(similarity, levels)  # a row per arrival, a column per level
    for (k_star, s), q_row in zip(rows, quality):
        cls = k_star if k_star in levels else 0
        est.observe(cls, None if s is None else q_row)
        if ranks is not None and s is not None:
            ranks.rank(levels.index(cls), s)
    return len(rows)


def _queued_per_class(levels: list[int]) -> list[int]:
    counts = dict(
        GenerationRequest.objects.filter(status=Status.QUEUED)
        .values_list("k_star")
        .annotate(n=Count("id"))
        .values_list("k_star", "n")
    )
    return [counts.get(k, 0) + (counts.get(None, 0) if k == 0 else 0) for k in levels]


def _solve_and_record(
    policy: Policy, policy_name: str, sc: SchedulerConfig, estimate: DemandEstimate, inputs: dict, now: datetime
) -> AllocationPlan:
    """Solve; adopt and store the plan, or keep the previous one and store why."""
    previous_plan = policy.current
    started = time.perf_counter()
    try:
        plan = policy.plan(now.timestamp(), estimate)
    except Exception as exc:  # keep serving on the old plan, and say why
        log.exception("controller: solve failed; keeping plan v%s", previous_plan.version)
        policy.set_plan(previous_plan)
        return _record(
            policy_name,
            PlanRecordStatus.FAILED,
            f"Solve raised {type(exc).__name__}: {exc}. Kept the previous plan.",
            None,
            inputs,
        )
    elapsed = time.perf_counter() - started
    if not plan.adoptable:
        policy.set_plan(previous_plan)
        log.warning("controller: the solver found no plan (%s); keeping the previous plan", plan.solver_message)
        return _record(
            policy_name,
            PlanRecordStatus.FAILED,
            f"Solver found no plan ({plan.solver_message}); its fallback was not adopted. Kept the previous plan.",
            plan,
            inputs,
        )
    if elapsed > settings.T2I_SLOW_SOLVE_FRACTION * sc.period_s:
        policy.set_plan(previous_plan)
        log.warning(
            "controller: solve took %.2f s (> %.0f%% of the period); keeping the previous plan",
            elapsed,
            100 * settings.T2I_SLOW_SOLVE_FRACTION,
        )
        return _record(
            policy_name,
            PlanRecordStatus.SLOW,
            f"Solve took {elapsed:.2f} s, more than "
            f"{settings.T2I_SLOW_SOLVE_FRACTION:.0%} of the {sc.period_s:.0f} s period. "
            f"Kept the previous plan.",
            plan,
            inputs,
        )
    detail = f" ({plan.solver_message})" if plan.solver_message not in ("", plan.status) else ""
    row = _record(policy_name, PlanRecordStatus.OK, f"Solver: {plan.status}{detail}.", plan, inputs)
    plan.version = row.id
    return row


def _record(policy: str, status: str, message: str, plan: Plan | None, inputs: dict) -> AllocationPlan:
    return AllocationPlan.objects.create(
        policy=policy,
        status=status,
        message=message[:4000],
        inputs=inputs,
        solution=plan.to_dict() if plan else {},
        worker_levels=list(plan.worker_levels) if plan else [],
        expected_quality=plan.expected_quality if plan else None,
        utilisation=list(plan.utilisation) if plan else [],
        solve_ms=plan.solve_time_s * 1000 if plan else None,
    )


def reset_controller_state() -> None:
    """Forget the in-memory estimator and policy (tests; a config change does this by itself)."""
    global _state
    _state = _ControllerState()
