"""The workload and the live configuration, built exactly as `python -m scheduler.simulate` builds them.

Time units. The emulated engine sleeps L(K′, b) × T2I_TIME_FACTOR (f). Everything the load generator
reports is in **profile seconds** (wall seconds ÷ f), the simulator's clock, so a live row and a simulated
row compare directly. The arrival schedule is built in profile seconds with the simulator's own functions
(`load_trace` → `scale_trace` with the same capacity) and then compressed by f for the wall clock, so with
the same options both see the same number of requests at the same (scaled) times. With f = 1 (a real GPU
cluster) profile seconds are wall seconds.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import DatabaseError

from scheduler.embeddings import read_prompts
from scheduler.interface import SchedulerConfig
from scheduler.predictor import Predictor
from scheduler.profiles import DEFAULT_LEVELS, load_profile
from scheduler.traces import load_trace, peak_rate, scale_trace
from webapp.ledger.models import ServingConfig
from webapp.serving.live_config import profile_source as live_source
from webapp.serving.live_config import scheduler_config
from webapp.serving.prompt_tokens import count_tokens


def time_factor(override: float | None = None) -> float:
    """The emulated engine's time factor (T2I_TIME_FACTOR; 1 = profile speed)."""
    if override is not None:
        f = float(override)
    else:
        f = getattr(settings, "T2I_TIME_FACTOR", None)
        f = float(f) if f is not None else float(os.environ.get("T2I_TIME_FACTOR", "") or 1.0)
    if not f > 0:
        raise ValueError(f"time factor must be > 0, got {f}")
    return f


def profile_source(override: str | None = None) -> str:
    """The live latency profile, chosen as the live scheduler chooses it (T2I_PROFILE, else the engine's
    measured profile, else T2I_FALLBACK_PROFILE; webapp.serving.live_config.profile_source)."""
    if override:
        return override

    return live_source()


@dataclass
class LiveSetup:
    """The live cluster's configuration, as the scheduler (and the simulator) sees it, in profile time."""

    config: SchedulerConfig
    policy: str
    time_factor: float
    slo_wall_s: float
    profile_source: str
    from_db: bool
    serving: dict = field(default_factory=dict)  # the ServingConfig fields that were read
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "time_factor": self.time_factor,
            "slo_wall_s": self.slo_wall_s,
            "profile_source": self.profile_source,
            "config_from_db": self.from_db,
            "serving_config": self.serving,
            "notes": list(self.notes),
        }


def read_serving_config():
    """ServingConfig.current(), or None when there is no database to read (the error is returned)."""
    try:
        return ServingConfig.current(), None
    except DatabaseError as exc:
        return None, exc


def live_setup(
    *,
    slo: float | None = None,
    factor: float | None = None,
    profile: str | None = None,
    workers: int | None = None,
    use_db: bool = True,
) -> LiveSetup:
    """The live configuration in profile time, for the simulator and for reading live results.

    With database access it is the live scheduler's own `scheduler_config(ServingConfig.current())`
    (policy, SLO, levels, thresholds, load threshold, controller period, utilisation target, workers,
    profile, N), converted to profile time: the profile unscaled, SLO and controller period ÷ the time
    factor. `slo` (profile seconds), `profile` and `workers` override. Without database access, the
    settings' defaults are used and a note says so."""
    f = time_factor(factor)
    src = profile_source(profile)
    sc, err = read_serving_config() if use_db else (None, None)
    notes: list[str] = []
    serving: dict = {}
    if sc is not None:
        live = scheduler_config(sc)
        levels, steps, slo_wall, policy = tuple(sc.level_list), int(sc.default_steps), float(sc.slo_seconds), sc.policy
        serving = {
            "policy": sc.policy,
            "slo_seconds": sc.slo_seconds,
            "k_levels": sc.k_levels,
            "thresholds": sc.thresholds,
            "load_threshold": sc.load_threshold,
            "util_target": sc.util_target,
            "controller_period_s": sc.controller_period_s,
            "default_steps": sc.default_steps,
            "manual_layout": sc.manual_layout,
            "max_in_flight": sc.max_in_flight,
        }
        if sc.manual_layout.strip():
            notes.append(f"the admin pins a manual K layout ({sc.manual_layout}); the simulator does not")
    else:
        levels, steps, slo_wall, policy = (
            DEFAULT_LEVELS,
            int(settings.T2I_DEFAULT_STEPS),
            float(settings.T2I_SLO_SECONDS),
            "unknown",
        )
        live = SchedulerConfig(
            n_workers=int(settings.T2I_WORKERS),
            profile=load_profile(src, levels=levels),
            slo_s=slo_wall,
            predictor=Predictor(),
        )
        notes.append(
            "no database access: scheduler settings are the defaults, not the server's"
            + (f" ({type(err).__name__})" if err else "")
        )
    prof = load_profile(src, levels=levels, n_steps=steps)  # unscaled: profile seconds
    cfg = dataclasses.replace(
        live,
        profile=prof,
        n_workers=int(workers or live.n_workers),
        slo_s=float(slo) if slo is not None else live.slo_s / f,
        period_s=live.period_s / f,
    )
    return LiveSetup(
        config=cfg,
        policy=policy,
        time_factor=f,
        slo_wall_s=slo_wall,
        profile_source=src,
        from_db=sc is not None,
        serving=serving,
        notes=notes,
    )


@dataclass
class Workload:
    """The replayed stream: arrival times (profile seconds from 0) and the prompt of each request."""

    arrivals: np.ndarray
    prompts: list[str]
    warm: int
    capacity_rps: float  # top-level capacity, profile time
    trace_requests: int  # arrivals after scaling, before --max-requests/--max-seconds
    truncated_by: str | None = None

    @property
    def n(self) -> int:
        return int(self.arrivals.size)

    @property
    def duration_s(self) -> float:
        return float(self.arrivals[-1]) if self.n else 0.0

    def describe(self, factor: float = 1.0) -> str:
        n = self.n
        pr = peak_rate(self.arrivals)
        return (
            f"trace: {n} requests over {self.duration_s:.0f} s (peak 10-s rate {pr:.2f}/s, mean "
            f"{n / max(self.duration_s, 1e-9):.2f}/s; capacity at the top K: {self.capacity_rps:.2f}/s)"
            + (f"; wall clock ×{factor:g}: {self.duration_s * factor:.0f} s" if factor != 1 else "")
            + (f"; cut by {self.truncated_by} from {self.trace_requests}" if self.truncated_by else "")
        )


class WorkloadError(ValueError):
    pass


def build_workload(
    trace: list[str],
    prompts_path: str,
    warm: int,
    time_scale: float,
    peak_load: float | None,
    cfg: SchedulerConfig,
    factor: float = 1.0,
    max_requests: int | None = None,
    max_seconds: float | None = None,
    start: float | None = None,
) -> Workload:
    """Arrivals exactly as the simulator computes them; then, optionally, only the segment from profile
    time `start` on (shifted so its first arrival is at 0), bounded by `max_seconds` of **wall** time
    (an arrival at profile time t is sent at wall time t × factor) and by `max_requests`.
    Request i of the replayed stream uses prompt warm + i (the first `warm` prompts warm the cache)."""
    if warm < 0:
        raise WorkloadError("--warm must be ≥ 0")
    capacity = cfg.top_level_capacity()
    arrivals = scale_trace(load_trace(trace), time_scale, peak_load, capacity)
    total = int(arrivals.size)
    cut = None
    if start:
        arrivals = arrivals[arrivals >= start]
        arrivals = arrivals - arrivals[0] if arrivals.size else arrivals
        cut = f"--start {start:g}"
    if max_seconds is not None:
        keep = int(np.searchsorted(arrivals * factor, max_seconds, side="left"))
        if keep < arrivals.size:
            arrivals, cut = arrivals[:keep], " ".join(filter(None, [cut, f"--max-seconds {max_seconds:g}"]))
    if max_requests is not None and max_requests < arrivals.size:
        arrivals, cut = arrivals[:max_requests], " ".join(filter(None, [cut, f"--max-requests {max_requests}"]))
    n = int(arrivals.size)
    if n == 0:
        raise WorkloadError("the scaled trace has no arrivals" + (f" within {cut}" if cut else ""))
    prompts = read_prompts(prompts_path)
    if warm + n > len(prompts):
        raise WorkloadError(
            f"the trace needs {warm + n} prompts (--warm {warm} + {n} requests) but {prompts_path} has only "
            f"{len(prompts)}; lower --time-scale/--peak-load, --max-requests or --warm, or use a longer "
            f"prompt file"
        )
    return Workload(
        arrivals=arrivals,
        prompts=prompts[warm : warm + n],
        warm=warm,
        capacity_rps=capacity,
        trace_requests=total,
        truncated_by=cut,
    )


def write_segment(path: str, arrivals: np.ndarray) -> None:
    """The replayed arrivals as a one-column trace (seconds, profile time): `python -m scheduler.simulate
    --trace PATH --time-scale 1` (no --peak-load) replays exactly this stream."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# arrival times in seconds (profile time), written by manage.py loadgen\n")
        fh.writelines(f"{t:.6f}\n" for t in arrivals)


def fit_prompt(prompt: str, limit: int | None = None) -> str:
    """Drop words from the end until the prompt fits the server's CLIP token limit (it rejects longer
    prompts with a 400). Used only with --clip-prompts; the simulator embeds the full text."""
    limit = limit or settings.T2I_MAX_PROMPT_TOKENS
    if count_tokens(prompt) <= limit:
        return prompt
    words = prompt.split()
    lo, hi = 0, len(words)  # binary search for the longest prefix of words that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])
