"""The live system's side of the scheduler seam (scheduler/interface.py).

The same policy objects the simulator runs make every decision here; this module only turns
live state into their inputs: the admin's ServingConfig into a SchedulerConfig, the ledger's
queued and running rows into a ClusterView, and the newest AllocationPlan into the policy's
current plan. Each web process keeps one policy object and re-reads the plan at most once a
second, so dispatch costs two small queries.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Min

from scheduler.interface import ClusterView, Decision, RequestView, SchedulerConfig
from scheduler.planner import Plan
from scheduler.policies import Policy, make_policy
from scheduler.predictor import Predictor
from scheduler.profiles import LatencyProfile, load_profile

from .models import AllocationPlan, BatchRecord, GenerationRequest, ServingConfig, Status

log = logging.getLogger(__name__)

PLAN_REFRESH_S = 1.0


@lru_cache(maxsize=8)
def _profile(source: str, levels: tuple[int, ...], steps: int, time_factor: float) -> LatencyProfile:
    """The profile in wall-clock seconds of this deployment: emulated workers with a time
    factor sleep L × factor, so planning, batch caps and backlogs must use L × factor too."""
    profile = load_profile(source, levels=levels, n_steps=steps)
    if time_factor == 1.0:
        return profile
    return LatencyProfile(levels=profile.levels, batch_sizes=profile.batch_sizes,
                          table_s={k: tuple(t * time_factor for t in row) for k, row in profile.table_s.items()},
                          n_steps=profile.n_steps, name=f"{profile.name}×{time_factor:g}")


def profile_source() -> str:
    """T2I_PROFILE (a preset such as sdxl-a100, or a CSV), else the engine's measured profile."""
    if settings.T2I_PROFILE:
        return settings.T2I_PROFILE
    measured = Path(settings.T2I_MEASURED_PROFILE)
    if measured.exists():
        return str(measured)
    return settings.T2I_FALLBACK_PROFILE


def scheduler_config(config: ServingConfig) -> SchedulerConfig:
    levels = tuple(config.level_list)
    time_factor = settings.T2I_TIME_FACTOR if settings.T2I_ENGINE == "emulated" else 1.0
    profile = _profile(profile_source(), levels, config.default_steps, time_factor)
    return SchedulerConfig(
        n_workers=settings.T2I_WORKERS, profile=profile, slo_s=config.slo_seconds,
        predictor=Predictor(config.threshold_pairs), period_s=config.controller_period_s,
        util_target=config.util_target, load_threshold=config.load_threshold,
        # Give the solver a cap so a hard solve ends in time; the controller still discards a slow one.
        plan_time_limit_s=max(0.1, settings.T2I_SLOW_SOLVE_FRACTION * config.controller_period_s))


def config_key(config: ServingConfig) -> tuple:
    """What a policy object depends on: a change in any of these builds a new one."""
    return (config.policy, config.k_levels, config.thresholds, config.slo_seconds,
            config.load_threshold, config.util_target, config.controller_period_s,
            config.default_steps, settings.T2I_WORKERS, profile_source(), settings.T2I_TIME_FACTOR)


def plan_from_row(row: AllocationPlan) -> Plan:
    plan = Plan.from_dict(row.solution)
    plan.version = row.id
    return plan


@dataclass
class _Holder:
    key: tuple | None = None
    policy: Policy | None = None
    plan_id: int | None = None
    batch_seen: int = 0
    checked_at: float = 0.0


class LivePolicy:
    """This process's policy object, kept in step with the admin's configuration and the plan."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._h = _Holder()

    def get(self, config: ServingConfig) -> tuple[Policy, int | None]:
        with self._lock:
            h = self._h
            key = config_key(config)
            if h.key != key:
                h.policy = make_policy(config.policy, scheduler_config(config))
                h.key, h.plan_id, h.checked_at = key, None, 0.0
                h.batch_seen = BatchRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0
            now = time.monotonic()
            if now - h.checked_at >= PLAN_REFRESH_S:
                h.checked_at = now
                self._refresh(h, config)
            return h.policy, h.plan_id

    def _refresh(self, h: _Holder, config: ServingConfig) -> None:
        row = AllocationPlan.current()
        if row is not None and row.id != h.plan_id and row.policy == config.policy:
            plan = plan_from_row(row)
            if len(plan.worker_levels) == settings.T2I_WORKERS:
                h.policy.set_plan(plan)
                h.plan_id = row.id
        # Feedback for policies that adapt per batch (Clipper's AIMD).
        for rec in BatchRecord.objects.filter(id__gt=h.batch_seen).order_by("id")[:500]:
            h.policy.on_batch_done(rec.worker, rec.k_prime, rec.batch_size, rec.service_seconds)
            h.batch_seen = rec.id

    def reset(self) -> None:
        with self._lock:
            self._h = _Holder()


live_policy = LivePolicy()


def cluster_view(policy: Policy, now: float) -> ClusterView:
    """Per-worker queue length, running batch and expected backlog, from the ledger."""
    n = settings.T2I_WORKERS
    view = ClusterView.idle(list(policy.current.worker_levels[:n]) + [0] * (n - len(policy.current.worker_levels)))
    profile = policy.config.profile
    caps = policy.caps
    rows = (GenerationRequest.objects.filter(status__in=(Status.QUEUED, Status.RUNNING), worker__isnull=False)
            .values("worker", "status", "k_served").annotate(n=Count("id"), started=Min("started_at")))
    for r in rows:
        w = r["worker"]
        if w is None or w >= n:
            continue
        k = r["k_served"] or 0
        k = k if k in caps else 0
        if r["status"] == Status.QUEUED:
            view.queue_len[w] += r["n"]
            full, rest = divmod(r["n"], caps[k])
            view.queued_s[w] += full * profile.latency(k, caps[k]) + (profile.latency(k, rest) if rest else 0.0)
        else:
            view.running[w] += r["n"]
            started = r["started"].timestamp() if r["started"] else now
            view.busy_until[w] = max(view.busy_until[w], started + profile.latency(k, r["n"]))
    return view


def dispatch(*, policy: Policy, request_id: str, arrival: float, deadline: float,
             similarity: float | None, k_star: int, levels_available: tuple[int, ...]) -> Decision:
    """Ask `policy` (this process's, from `live_policy.get`) where and at which K′ a request goes."""
    view = cluster_view(policy, arrival)
    return policy.dispatch(RequestView(id=request_id, arrival=arrival, deadline=deadline,
                                       similarity=similarity, k_star=k_star,
                                       levels_available=levels_available), view, arrival)
