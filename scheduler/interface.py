"""The seam between a policy and whatever runs it (the simulator now, the live Django system later).

A runner owns time, queues and workers; a policy owns decisions. They meet in two calls:

* **Controller** — every `SchedulerConfig.period_s` seconds (Celery beat in the live system):

      estimate = estimator.roll(now)                # scheduler.demand.DemandEstimator, fed by observe()
      if config.backlog_aware:                       # queued = requests waiting, counted per K* class
          estimate = estimate.with_backlog(queued, config.backlog_horizon_periods * config.period_s)
      plan = policy.plan(now, estimate)              # -> scheduler.planner.Plan (JSON: plan.to_dict())

  The live system stores `plan.to_dict()` and, in every process that dispatches, calls
  `policy.set_plan(Plan.from_dict(row))` when a newer version appears. `plan.worker_levels[w]` is the
  level of worker w, `plan.batch_size[k]` the batch cap at level k. Policies without a controller
  (Clipper-HA/HT, NIRVANA) return a fixed plan; calling `plan` is harmless.

* **Dispatcher** — once per request, at arrival:

      decision = policy.dispatch(RequestView(...), ClusterView(...), now)
      # -> Decision(worker_index, k_prime, batch_size, redirected)

  The runner enqueues the request on `decision.worker_index`, to be served at `decision.k_prime`
  (resuming from the neighbour's latent at that step; 0 = full generation) in a batch of at most
  `decision.batch_size` requests of the same K′. It calls `estimator.observe(request.k_star, q_row)` so
  the next plan sees the demand, and, after each batch, `policy.on_batch_done(...)` (Clipper's AIMD uses
  it; others ignore it).

Everything crossing the seam is a plain dataclass of numbers and lists: no simulator internals, no ORM
objects. `ClusterView` is indexed by worker and may be kept and updated in place by the runner. How the
simulator fills it (the live system should do the same from its ledger rows):

  levels[w]      plan.worker_levels[w]
  queue_len[w]   requests queued for w, not yet claimed
  running[w]     size of the batch w is serving (0 when idle)
  busy_until[w]  start of that batch + L(K′, b) from the profile
  queued_s[w]    Σ over w's queued requests of L(K′, b)/b, with b the batch size each was dispatched with

Worker side: a worker takes the oldest queued request and up to `batch_size − 1` more queued requests
with the same K′ (the head's batch_size), and runs them as one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .predictor import Predictor
from .profiles import LatencyProfile
from .quality import QualityModel


@dataclass(slots=True)
class RequestView:
    """What a dispatcher may know about one request."""

    id: int | str
    arrival: float  # seconds (runner's clock)
    deadline: float  # arrival + SLO
    similarity: float | None  # cosine similarity to the nearest cached prompt; None: empty cache
    k_star: int  # predicted K*, already capped to the neighbour's cached levels
    levels_available: tuple[int, ...] = ()  # levels cached for that neighbour (empty: no neighbour)


@dataclass(slots=True)
class ClusterView:
    """Live per-worker state, lists indexed by worker."""

    levels: list[int]  # level each worker is set to by the current plan
    queue_len: list[int]  # requests queued, not yet running
    running: list[int]  # requests in the batch being served (0: idle)
    busy_until: list[float]  # when the running batch is expected to finish (≤ now: idle)
    queued_s: list[float]  # expected seconds to serve what is queued

    @classmethod
    def idle(cls, levels: list[int]) -> ClusterView:
        n = len(levels)
        return cls(list(levels), [0] * n, [0] * n, [0.0] * n, [0.0] * n)

    def backlog_s(self, w: int, now: float) -> float:
        """Expected seconds until worker w has finished everything it holds."""
        rem = self.busy_until[w] - now
        return (rem if rem > 0 else 0.0) + self.queued_s[w]


@dataclass(slots=True)
class Decision:
    worker_index: int
    k_prime: int
    batch_size: int
    redirected: bool = False
    # Routed at K′ = 0 by prompt_aware's queue-first mode: the re-plan that ends the mode may re-route it
    # (to the new plan's level for it) while it is still queued.
    queue_first: bool = False


@dataclass
class SchedulerConfig:
    """Settings shared by every policy (fairness: same period, estimator, utilisation target, caps)."""

    n_workers: int
    profile: LatencyProfile
    slo_s: float
    quality: QualityModel = field(default_factory=QualityModel)
    predictor: Predictor = field(default_factory=Predictor)
    period_s: float = 10.0  # controller period
    util_target: float = 0.85  # planned utilisation of each level's full-batch capacity
    headroom: float = 1.0  # demand multiplier before planning
    ewma_alpha: float = 0.5  # weight of the newest window in the demand EWMA
    demand_estimate: str = "total"  # what the controllers plan for: "total", "max" (per class), "last", "ewma"
    trend_beta: float = 0.0  # Holt's trend on the demand (0: off); forecasts one period ahead when on
    load_threshold: float = 1.0  # outstanding requests per worker at a level: below → spread, b = 1
    deadline_redirect: bool = True  # prompt_aware's redirect (off only for ablations)
    backlog_aware: bool = True  # plan for arrivals + draining what is queued ...
    backlog_horizon_periods: float = 2.0  # ... within this many controller periods
    plan_time_limit_s: float | None = None  # MILP wall-clock cap (live system); None: exact, deterministic
    solver: str = "glpk"  # the controller's MILP solver: "glpk" or "highs" (scipy.optimize.milp)
    # prompt_aware's levers (issue 13); each can be switched off for an ablation.
    similarity_ranked: bool = True  # within a K* class, higher s → higher K′ (instead of random sampling)
    queue_first: bool = True  # light load: every request at K′ = 0 while the queues can still make its deadline
    light_load_upgrade: bool = True  # spare capacity serves a request better than the plan's level ...
    upgrade_margin: float = 0.3  # ... if it still finishes this many SLOs before its deadline ...
    upgrade_budget_slo: float = 2.0  # ... and the plan's spare worker-seconds (at most this many SLOs' worth) cover it
    event_replan: bool = True  # re-solve between periods when arrivals depart from the plan's demand ...
    replan_threshold: float = 0.3  # ... by more than this fraction ...
    replan_min_gap_s: float = 2.0  # ... with at least this long between solves
    pressure_replan: bool = False  # ... or when a request's plan level has a queue it cannot drain by the deadline
    shed_hopeless: bool = True  # prompt_aware's runner drops queued requests that can no longer meet their deadline
    batch_cut: bool = True  # ... and cuts a batch that would make a member late (dispatch.batch_to_run) ...
    batch_cut_overload: float = 1.6  # ... unless the plan's demand exceeds what it serves by this factor
    shed_baselines: bool = False  # sensitivity: the baselines shed too
    # The oracle (simulator only) plans for the true demand of the period-long window that ends this many seconds
    # after the plan; None: one period (the next period's demand). 0: the last period's exact demand.
    oracle_lookahead_s: float | None = None
    admission: str = "queue"  # at arrival, for every policy: "queue", "degrade" or "shed" (scheduler/admission.py)
    variant_quality: dict[str, float] | None = None  # proteus_models: quality per model variant (None: defaults)
    # proteus_models: its variants' latencies and load times × this (live emulated workers sleep L × time factor)
    variant_time_factor: float = 1.0

    @property
    def levels(self) -> list[int]:
        return list(self.profile.levels)

    def batch_caps(self) -> dict[int, int]:
        return self.profile.batch_caps(self.slo_s)

    @property
    def oracle_lookahead(self) -> float:
        """How far ahead the oracle sees, in seconds: `oracle_lookahead_s`, at most (and by default) one period."""
        return self.period_s if self.oracle_lookahead_s is None else min(self.oracle_lookahead_s, self.period_s)

    def top_level_capacity(self) -> float:
        """Cluster capacity (req/s) with every worker at the top level in full batches: what
        `--peak-load` is measured against. workers × cap(top) / L(top, cap(top))."""
        caps = self.batch_caps()
        top = self.levels[-1]
        return self.n_workers * caps[top] / self.profile.latency(top, caps[top])

    def to_dict(self) -> dict:
        """The settings as JSON can hold them (the live controller stores them with each plan): an unbounded
        upgrade budget or overload factor (inf) is written as null."""
        return {
            "n_workers": self.n_workers,
            "profile": self.profile.name,
            "slo_s": self.slo_s,
            "levels": self.levels,
            "period_s": self.period_s,
            "util_target": self.util_target,
            "headroom": self.headroom,
            "ewma_alpha": self.ewma_alpha,
            "demand_estimate": self.demand_estimate,
            "trend_beta": self.trend_beta,
            "load_threshold": self.load_threshold,
            "deadline_redirect": self.deadline_redirect,
            "backlog_aware": self.backlog_aware,
            "backlog_horizon_periods": self.backlog_horizon_periods,
            "solver": self.solver,
            "similarity_ranked": self.similarity_ranked,
            "queue_first": self.queue_first,
            "light_load_upgrade": self.light_load_upgrade,
            "upgrade_margin": self.upgrade_margin,
            "upgrade_budget_slo": _finite_or_none(self.upgrade_budget_slo),
            "event_replan": self.event_replan,
            "replan_threshold": self.replan_threshold,
            "replan_min_gap_s": self.replan_min_gap_s,
            "pressure_replan": self.pressure_replan,
            "batch_cut": self.batch_cut,
            "batch_cut_overload": _finite_or_none(self.batch_cut_overload),
            "shed_hopeless": self.shed_hopeless,
            "shed_baselines": self.shed_baselines,
            "oracle_lookahead_s": self.oracle_lookahead_s,
            "admission": self.admission,
            "variant_quality": self.variant_quality,
            "batch_caps": {str(k): v for k, v in self.batch_caps().items()},
            "thresholds": [list(t) for t in self.predictor.thresholds],
            "quality": self.quality.to_dict(),
        }


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
