"""The admin's serving configuration as the scheduler core sees it (scheduler/interface.py).

Turns the one `ServingConfig` row and the deployment's settings into a `SchedulerConfig`, the
input every policy object is built from, in the web process, the controller and the emulated
workers alike.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models.signals import post_save

from scheduler.interface import SchedulerConfig
from scheduler.predictor import Predictor
from scheduler.profiles import LatencyProfile, load_profile
from scheduler.recovery import RecoveryTimings, recovery_timings
from webapp.ledger.models import ServingConfig

from .batch_overhead import measured_overhead_s

CONFIG_TTL_S = 1.0  # an admin's change reaches every process within this
_config_lock = threading.Lock()
_config_cache: tuple[float, ServingConfig] | None = None  # (monotonic time read, the row)


def serving_config() -> ServingConfig:
    """The one ServingConfig row as the submit path reads it: at most once per CONFIG_TTL_S per process, and
    at once after a save in this process. Callers must not modify it (it is shared by the process's threads).

    Inside a transaction it is read fresh and not kept: that read may see the transaction's own uncommitted
    change, which must not outlive a rollback (tests run in one; the web's requests do not)."""
    global _config_cache
    if connection.in_atomic_block:
        return ServingConfig.current()
    cached = _config_cache
    now = time.monotonic()
    if cached is not None and now - cached[0] < CONFIG_TTL_S:
        return cached[1]
    with _config_lock:
        row = ServingConfig.current()
        _config_cache = (now, row)
    return row


def forget_serving_config(**_signal_kwargs) -> None:
    """Drop this process's copy (on every save of the row, so this process sees the change at once)."""
    global _config_cache
    _config_cache = None


post_save.connect(forget_serving_config, sender=ServingConfig, dispatch_uid="t2i-forget-serving-config")


@lru_cache(maxsize=8)
def _profile(source: str, levels: tuple[int, ...], steps: int, time_factor: float, overhead_s: float) -> LatencyProfile:
    """The profile in wall-clock seconds of this deployment: emulated workers with a time factor sleep
    L × factor, so planning, batch caps and backlogs must use L × factor too; plus the per-batch overhead the
    workers measured (batch_overhead)."""
    return load_profile(source, levels=levels, n_steps=steps).adjusted(time_factor, overhead_s)


def profile_source() -> str:
    """T2I_PROFILE (a preset such as sdxl-a100, or a CSV), else the engine's measured profile."""
    if settings.T2I_PROFILE:
        return settings.T2I_PROFILE
    measured = Path(settings.T2I_MEASURED_PROFILE)
    if measured.exists():
        return str(measured)
    return settings.T2I_FALLBACK_PROFILE


# ServingConfig fields that are SchedulerConfig fields of the same name and value: the load threshold, the
# admission mode and prompt_aware's levers (all but the upgrade budget, converted below: blank means no bank).
LEVER_FIELDS: tuple[str, ...] = (
    "load_threshold",
    "admission",
    *(name for name in ServingConfig.PROMPT_AWARE_LEVERS if name != "upgrade_budget_slo"),
)


def scheduler_config(config: ServingConfig) -> SchedulerConfig:
    levels = tuple(config.level_list)
    time_factor = settings.T2I_TIME_FACTOR if settings.T2I_ENGINE == "emulated" else 1.0
    profile = _profile(profile_source(), levels, config.default_steps, time_factor, measured_overhead_s())
    return SchedulerConfig(
        n_workers=settings.T2I_WORKERS,
        profile=profile,
        slo_s=config.slo_seconds,
        predictor=Predictor(config.threshold_pairs),
        period_s=config.controller_period_s,
        util_target=config.util_target,
        **{name: getattr(config, name) for name in LEVER_FIELDS},
        upgrade_budget_slo=math.inf if config.upgrade_budget_slo is None else config.upgrade_budget_slo,
        variant_time_factor=time_factor,  # proteus_models: its variants on the emulated workers' clock
        # Give the solver a cap so a hard solve ends in time; the controller still discards a slow one.
        plan_time_limit_s=max(0.1, settings.T2I_SLOW_SOLVE_FRACTION * config.controller_period_s),
    )


def config_key(config: ServingConfig) -> tuple:
    """What a policy object depends on: a change in any of these builds a new one."""
    return (
        config.policy,
        config.k_levels,
        config.thresholds,
        config.slo_seconds,
        *(getattr(config, name) for name in LEVER_FIELDS),
        config.upgrade_budget_slo,
        config.util_target,
        config.controller_period_s,
        config.default_steps,
        settings.T2I_WORKERS,
        profile_source(),
        settings.T2I_TIME_FACTOR,
        measured_overhead_s(),
    )


def recovery_for(config: ServingConfig) -> RecoveryTimings:
    """The recovery timings of scheduler/recovery.py for the interactive SLO and the longest batch the
    batch caps allow at any level; T2I_LEASE_SECONDS / T2I_RECONCILE_SECONDS / T2I_REPUBLISH_AFTER_SECONDS
    override single values (tests shorten them)."""
    sc = scheduler_config(config)
    caps = sc.batch_caps()
    longest = max((sc.profile.latency(k, caps[k]) for k in sc.profile.levels if k in caps), default=0.0)
    timings = recovery_timings(config.slo_seconds, longest)
    overrides = {
        "lease_s": settings.T2I_LEASE_SECONDS,
        "reconcile_s": settings.T2I_RECONCILE_SECONDS,
        "republish_s": settings.T2I_REPUBLISH_AFTER_SECONDS,
    }
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if "lease_s" in overrides:
        overrides["heartbeat_s"] = overrides["lease_s"] / 3
    return dataclasses.replace(timings, **overrides) if overrides else timings


def check_recoverable(config: ServingConfig) -> None:
    """ServingConfig.clean's check (registered in ServingAppConfig.ready): refuse an SLO for which a crashed
    worker's requests could never be recovered before they expire."""
    if config.slo_seconds is None or config.slo_seconds <= 0:
        return  # the field's own validator says what is wrong
    try:
        problem = recovery_for(config).problem()
    except (KeyError, ValueError):
        return  # levels or profile invalid: _clean_scheduling reports it
    if problem:
        raise ValidationError({"slo_seconds": problem})
