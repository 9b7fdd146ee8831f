"""The five policies (+ the oracle bound) behind one interface; see `scheduler.interface` for the seam.

| name          | levels                         | routing                                   | batching            |
|---------------|--------------------------------|-------------------------------------------|---------------------|
| prompt_aware  | MILP per K* class (controller),| K→K′ fractions per K* by similarity rank,  | plan cap at high    |
|               | re-solved early on a demand    | upgrades on the plan's spare capacity,     | load, 1 at low load |
|               | departure; sheds hopeless work | route-and-batch, redirect to least 𝒟_Q;    |                     |
|               |                                | queue-first at K′ = 0 while queues absorb  |                     |
| clipper_ha    | every worker at K′ = 0         | soonest-free worker                       | AIMD (Clipper)      |
| clipper_ht    | every worker at the largest K  | soonest-free worker                       | AIMD (Clipper)      |
| nirvana       | none: each request at its K*   | shortest queue                            | 1                   |
| proteus       | MILP, one prompt-agnostic class| level fractions that ignore K*,           | up to the plan cap  |
|               | (mean Q per level)             | soonest-free worker at that level         | (adaptive)          |
| oracle        | prompt_aware fed the true demand of the next period (simulator only; `oracle_lookahead_s`) |
|               | `oracle@A` by name: the oracle seeing A s ahead, beside the others in one run             |
| proteus_models| PROTEUS as published: a model variant per worker (MILP), load time on a switch; no cache;  |
|               | live with emulated workers only (docs/baselines.md)                                        |
| argus_oda     | prompt_aware's workers per level, but the route by Argus's greedy aligner (scheduler.oda)   |

Clipper's AIMD: per worker, after each batch, batch limit + 1 if the batch was full and took ≤ SLO, × 0.9
(rounded down, ≥ 1) if it took longer than the SLO; never above the profile's largest batch.

`make_policy(name, config, seed)` builds one. The controller policies (prompt_aware, proteus, oracle)
share the same period, demand estimator, utilisation target and batch-cap rule (SchedulerConfig).
prompt_aware's levers (issue 13) are SchedulerConfig settings so that each can be ablated; shedding is
the runner's job (the simulator and the live workers ask `sheds_hopeless`).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from collections import deque

from .demand import DemandEstimate
from .dispatch import effective_level, route_and_batch, shortest_queue, soonest_free
from .interface import ClusterView, Decision, RequestView, SchedulerConfig
from .model_variants import configured, variant_profile
from .oda import aligned_plan
from .planner import Plan, fixed_plan, solve_plan
from .profiles import LatencyProfile

POLICY_NAMES: tuple[str, ...] = ("prompt_aware", "clipper_ha", "clipper_ht", "nirvana", "proteus", "oracle")
# Extras, run on request (`--policies`): PROTEUS with real model variants (issue 14), Argus's route.
SIM_POLICY_NAMES: tuple[str, ...] = (*POLICY_NAMES, "proteus_models", "argus_oda")
DEFAULT_POLICIES: tuple[str, ...] = POLICY_NAMES
# The oracle plans with hindsight (the future's demand): a bound for the simulator, never live.
# proteus_models runs live too, with emulated workers (ServingConfig refuses it with a real engine).
LIVE_POLICY_NAMES: tuple[str, ...] = (*(n for n in POLICY_NAMES if n != "oracle"), "proteus_models")
# Policies whose K′ is a model variant index (scheduler.model_variants): no approximate cache, load on a switch.
MODEL_VARIANT_POLICIES: tuple[str, ...] = ("proteus_models",)
POLICY_LABELS: dict[str, str] = {
    "prompt_aware": "Prompt-aware (the paper)",
    "clipper_ha": "Clipper-HA (all K=0)",
    "clipper_ht": "Clipper-HT (all largest K)",
    "nirvana": "NIRVANA (own K*, no plan)",
    "proteus": "PROTEUS (prompt-agnostic MILP)",
    "oracle": "Oracle (hindsight bound, simulator only)",
    "proteus_models": "PROTEUS as published (model variants; live: emulated workers only)",
    "argus_oda": "prompt_aware with Argus's greedy route (ODA) instead of the MILP's (simulator only)",
}


PROMPT_AWARE_FAMILY = ("prompt_aware", "oracle", "argus_oda")  # prompt_aware and its bound and ablation


def sheds_hopeless(policy_name: str, config: SchedulerConfig) -> bool:
    """Whether a policy's runner (the simulator, the live workers) drops queued requests that can no longer
    meet their deadline: prompt_aware's overload lever (and the oracle's, which is prompt_aware with
    hindsight); the baselines only with the `shed_baselines` sensitivity setting."""
    return config.shed_hopeless if policy_name in PROMPT_AWARE_FAMILY else config.shed_baselines


class Policy:
    """Base class: holds the current plan; subclasses implement `dispatch` (and `plan` if controlled)."""

    name = "base"
    uses_controller = False

    def __init__(self, config: SchedulerConfig, seed: int = 0) -> None:
        self.config = config
        self.levels = config.levels
        self.caps = config.batch_caps()
        self.rng = random.Random(seed)
        self.lat1 = {k: config.profile.latency(k, 1) for k in self.levels}
        self._q_g = {k: config.quality.g_of(k) for k in self.levels}
        self.current: Plan = self.initial_plan()
        self.set_plan(self.current)

    # -- controller side ---------------------------------------------------------------------------
    def initial_plan(self) -> Plan:
        return fixed_plan(self.levels, self.config.n_workers, self.levels[0], self.caps, policy=self.name)

    def plan(self, now: float, demand: DemandEstimate | None) -> Plan:
        """Called every period by the controller. Fixed-level policies keep their plan."""
        return self.current

    def _solve(self, demand: DemandEstimate | None, prompt_aware: bool, profile: LatencyProfile | None = None) -> Plan:
        """The controller's MILP (shared settings for every policy that has one); `profile`: the latency table
        it plans with, by default the configuration's (proteus_models passes its variants' table)."""
        if demand is None:
            return self.current
        c = self.config
        p = solve_plan(
            demand,
            c.n_workers,
            profile or c.profile,
            c.slo_s,
            util_target=c.util_target,
            headroom=c.headroom,
            prompt_aware=prompt_aware,
            previous=self.current,
            batch_caps=self.caps,
            policy=self.name,
            time_limit_s=c.plan_time_limit_s,
            solver=c.solver,
        )
        self.set_plan(p)
        return p

    def set_plan(self, plan: Plan) -> None:
        """Adopt a plan (from `plan()` or, in the live system, from storage)."""
        self.current = plan
        self.by_level: dict[int, list[int]] = {k: [] for k in self.levels}
        for w, lv in enumerate(plan.worker_levels):
            self.by_level.setdefault(lv, []).append(w)
        self._cum = []
        for row in plan.route:
            acc, c = 0.0, []
            for f in row:
                acc += f
                c.append(acc)
            c[-1] = max(c[-1], 1.0 + 1e-9)
            self._cum.append(c)

    # -- dispatch side ------------------------------------------------------------------------------
    def dispatch(self, req: RequestView, cluster: ClusterView, now: float) -> Decision:
        raise NotImplementedError

    def on_batch_done(self, worker: int, k_prime: int, batch_size: int, service_s: float) -> None:
        """Feedback after each batch (used by AIMD)."""

    @property
    def sheds_hopeless(self) -> bool:
        """Whether the runner drops queued requests that can no longer meet their deadline."""
        return sheds_hopeless(self.name, self.config)

    # helpers
    def quality(self, s: float | None, k: int) -> float:
        if k == 0:
            return 1.0
        if s is None:
            return float("nan")
        return self.config.quality.q(s, k)

    def sample_level(self, k_star: int) -> int:
        i = self.levels.index(k_star) if k_star in self.levels else 0
        return self.levels[bisect.bisect_right(self._cum[i], self.rng.random())]

    def _no_neighbour(self, cluster: ClusterView, now: float) -> Decision:
        ws = self.by_level.get(0) or list(range(len(cluster.queue_len)))
        w, _ = soonest_free(ws, cluster, now)
        return Decision(w, 0, 1, False)


class SimilarityRanks:
    """Where a request's similarity falls among the recent ones of its K* class (0 = lowest, 1 = highest).

    The plan says what fraction of a class goes to each level; which requests go where is free. The loss of
    serving at K′ is g(K′)(1 − s), smallest for the most similar prompts, so the highest-s share of a class
    takes the highest K′ the plan gives it and the lowest-s share the lowest: the plan's fractions become
    per-class similarity thresholds that move with the recent stream.
    """

    def __init__(self, n_classes: int, window: int = 256) -> None:
        self.window = window
        self.recent: list[deque] = [deque() for _ in range(n_classes)]
        self.sorted: list[list[float]] = [[] for _ in range(n_classes)]

    def position(self, cls: int, s: float) -> float:
        """The mid-rank of s among the class's last `window` similarities (0.5 while there are none)."""
        ordered = self.sorted[cls]
        u = (bisect.bisect_left(ordered, s) + bisect.bisect_right(ordered, s)) / (2 * len(ordered)) if ordered else 0.5
        return min(u, 1.0 - 1e-12)

    def rank(self, cls: int, s: float) -> float:
        """The mid-rank of s among the class's last `window` similarities, then s joins them."""
        ordered, recent = self.sorted[cls], self.recent[cls]
        u = self.position(cls, s)
        recent.append(s)
        bisect.insort(ordered, s)
        if len(recent) > self.window:
            del ordered[bisect.bisect_left(ordered, recent.popleft())]
        return u


class PromptAware(Policy):
    """The paper: MILP per K* class, K→K′ routing by the plan's fractions (similarity-ranked), route-and-batch,
    deadline redirect; plus issue 13's levers: queue-first light load, upgrades on the plan's spare capacity,
    an event trigger for early re-plans, and shedding (by the runner) of requests that can no longer meet
    their deadline.

    Queue-first (`queue_first`): a plan that puts every worker at K′ = 0 starts the mode, in which every
    request goes at K′ = 0 to the worker that frees up first, as clipper_ha would, for as long as that worker
    can still finish it by its deadline: the queues absorb a burst that they can absorb, instead of the plan
    approximating for a rate that a short window overstates. The first request the queues cannot take ends
    the mode; it asks for a re-plan at once (`replan_due`), and the runner re-routes the requests the mode
    queued that are still waiting to the new plan's level for them (`take_requeue`, `requeue_level`), so a
    burst that the queues could not absorb is served as the plan would have served it. The mode starts again
    with the next all-K′ = 0 plan solved at least `replan_min_gap_s` after it ended. Live, each web process holds
    its own policy object; the end is shared through Redis (`end_queue_first`), so they all leave the mode at
    the first request any of them could not place, as the simulator's single dispatcher does."""

    name = "prompt_aware"
    uses_controller = True

    def __init__(self, config: SchedulerConfig, seed: int = 0) -> None:
        self._planned_at, self._arrivals_since_plan = 0.0, 0  # for the event trigger; set_plan reads them
        self._pressure = False  # since the last solve, a plan level's queue could not make a deadline
        self._queue_first = False  # the mode is on; set_plan starts it
        self._queue_first_started_at = -math.inf  # the time of the plan that started it
        self._queue_first_ended_at = -math.inf
        self._requeue_due = False  # the mode ended: re-plan now and re-route what it queued
        super().__init__(config, seed)
        self.ranks = SimilarityRanks(len(self.levels))
        self._all_workers = list(range(config.n_workers))
        self._budget_s, self._budget_t = 0.0, 0.0  # spare worker-seconds for upgrades, and when counted

    def plan(self, now: float, demand: DemandEstimate | None) -> Plan:
        self._planned_at, self._arrivals_since_plan, self._pressure = now, 0, False
        return self._solve(demand, prompt_aware=True)

    def set_plan(self, plan: Plan) -> None:
        super().set_plan(plan)
        # Worker-seconds per second the plan leaves idle, Σ_j n_j (1 − utilisation_j); none in overload.
        spare = len(plan.worker_levels) - sum(u * n for u, n in zip(plan.utilisation, plan.workers_per_level))
        self._spare = max(0.0, spare) if plan.served_rate >= plan.demand_rate * (1.0 - 1e-6) else 0.0
        if plan.time > self._planned_at:  # adopted from storage (live)
            self._planned_at, self._arrivals_since_plan, self._pressure = plan.time, 0, False
        if (
            self.config.queue_first
            and not self._queue_first
            and plan.time >= self._queue_first_ended_at + self.config.replan_min_gap_s
            and all(lv == self.levels[0] for lv in plan.worker_levels)
            and plan.served_rate >= plan.demand_rate * (1.0 - 1e-6)
        ):
            self._queue_first, self._queue_first_started_at = True, plan.time

    @property
    def in_queue_first(self) -> bool:
        """Whether requests are routed queue-first now (see the class docstring)."""
        return self._queue_first

    @property
    def queue_first_ended_at(self) -> float:
        """When the mode last ended here (-inf if it never did)."""
        return self._queue_first_ended_at

    def end_queue_first(self, at: float) -> bool:
        """The mode ended elsewhere at `at` (another live process, whose request found the queues full): end it
        here too if it started before then, without a re-plan or re-route of its own (the other process asked
        for them), and count the restart gap from `at`. True when the mode was on and has ended."""
        self._queue_first_ended_at = max(self._queue_first_ended_at, at)
        if not self._queue_first or at < self._queue_first_started_at:
            return False
        self._queue_first = False
        return True

    def take_requeue(self) -> bool:
        """Whether queue-first ended since the last call (the runner then re-routes, after the re-plan, the
        requests the mode queued that still wait); clears it."""
        due, self._requeue_due = self._requeue_due, False
        return due

    def requeue_level(self, req: RequestView) -> int:
        """The K′ the current plan gives a request that queue-first queued and that still waits: its level by
        similarity rank within its class (the rank read, not added again), resumable from its neighbour."""
        if not req.levels_available:
            return 0
        i = self.levels.index(req.k_star) if req.k_star in self.levels else 0
        if not self.config.similarity_ranked or req.similarity is None:
            return effective_level(self.sample_level(req.k_star), req.levels_available)
        u = self.ranks.position(i, req.similarity)
        return effective_level(self.levels[bisect.bisect_right(self._cum[i], u)], req.levels_available)

    def replan_due(self, now: float, arrivals: int | None = None) -> bool:
        """Event trigger: the arrival rate since the last solve departs from the plan's demand by more than
        `replan_threshold` (a burst the period has not seen yet, or a lull that frees capacity for quality),
        and `replan_min_gap_s` has passed; with `pressure_replan`, also when a request since the last solve found
        its plan level's queue too long to meet its deadline. The runner then re-solves at once; the period
        stays a floor.
        `arrivals` since the plan: counted here from dispatch unless the runner knows better (the live
        system counts the ledger's rows, since each web process sees only its share)."""
        if not self.config.event_replan:
            return False
        if self._requeue_due:  # queue-first just ended: the queues are full, plan for what is coming
            return True
        elapsed = now - self._planned_at
        if elapsed < self.config.replan_min_gap_s:
            return False
        if self._pressure and self.config.pressure_replan:
            return True
        planned = self.current.demand_rate
        observed = (self._arrivals_since_plan if arrivals is None else arrivals) / elapsed
        if self._planned_at <= 0.0:  # before the first solve only a burst counts: a lull has nothing to free
            return observed > (1.0 + self.config.replan_threshold) * max(planned, 1e-9)
        return abs(observed - planned) > self.config.replan_threshold * max(planned, 1e-9)

    def route_level(self, req: RequestView) -> int:
        """The level the plan sends this request to: by its similarity rank within its class, or at random."""
        if not self.config.similarity_ranked or req.similarity is None:
            return self.sample_level(req.k_star)
        i = self.levels.index(req.k_star) if req.k_star in self.levels else 0
        return self.levels[bisect.bisect_right(self._cum[i], self.ranks.rank(i, req.similarity))]

    def upgrade(self, req: RequestView, k: int, cluster: ClusterView, now: float) -> Decision | None:
        """Spare capacity: serve at a better level than the plan's (least loss first, K′ = 0 first) on the
        worker that frees up first, if it still finishes `upgrade_margin` × SLO before the deadline and the
        plan's spare worker-seconds cover the extra work. The plan leaves Σ_j n_j (1 − utilisation_j) worker-
        seconds idle per second; they accrue as a budget of at most `upgrade_budget_slo` SLOs' worth, so an
        idle lull can absorb upgrades but a burst the plan has not seen yet cannot drain more than that.
        An infinite budget banks nothing: any upgrade that meets the margin is made while the plan has spare.
        Overload (a plan short of capacity) leaves no spare, hence no upgrade."""
        config, spare = self.config, self._spare
        unbanked = math.isinf(config.upgrade_budget_slo)
        if unbanked and spare <= 0.0:
            return None
        if not unbanked:
            self._budget_s = min(
                spare * config.upgrade_budget_slo * config.slo_s,
                self._budget_s + spare * max(0.0, now - self._budget_t),
            )
            self._budget_t = now
        w, backlog = soonest_free(self._all_workers, cluster, now)
        latest = req.deadline - config.upgrade_margin * config.slo_s
        for lv in sorted((lv for lv in self.levels if lv < k), key=lambda lv: self._loss_key(req, lv)[0]):
            kp = effective_level(lv, req.levels_available)
            extra = self.lat1[kp] - self.lat1[k]
            if kp < k and now + backlog + self.lat1[kp] <= latest and (unbanked or extra <= self._budget_s):
                if not unbanked:
                    self._budget_s -= extra
                return Decision(w, kp, 1, False)
        return None

    def dispatch(self, req: RequestView, cluster: ClusterView, now: float) -> Decision:
        self._arrivals_since_plan += 1
        if self._queue_first:
            decision = self._queue_first_route(req, cluster, now)
            if decision is not None:
                return decision
        avail = req.levels_available
        if not avail:
            return self._no_neighbour(cluster, now)
        k = self.route_level(req)
        if self.config.light_load_upgrade and k > 0:
            upgraded = self.upgrade(req, k, cluster, now)
            if upgraded is not None:
                return upgraded
        ws = self.by_level.get(k)
        if not ws:  # plan has no worker there (should not happen): least-loss level with workers
            k = min((lv for lv in self.levels if self.by_level.get(lv)), key=lambda lv: self._loss_key(req, lv))
            ws = self.by_level[k]
        kp = effective_level(k, avail)
        w, b, backlog = route_and_batch(ws, cluster, now, self.caps[k] if kp == k else 1, self.config.load_threshold)
        if now + backlog + self.lat1[kp] <= req.deadline or not self.config.deadline_redirect:
            return Decision(w, kp, b, False)
        self._pressure = True  # the plan's level has more queued than it can drain in time
        return self._redirect(req, cluster, now, k, w, kp, b, backlog)

    def _queue_first_route(self, req: RequestView, cluster: ClusterView, now: float) -> Decision | None:
        """K′ = 0 on the soonest-free worker if it can still finish the request by its deadline; else the mode
        ends and None. (The similarity ranks stay those of the requests the plans routed.)"""
        w, backlog = soonest_free(self._all_workers, cluster, now)
        if now + backlog + self.lat1[self.levels[0]] <= req.deadline:
            return Decision(w, self.levels[0], self.caps[self.levels[0]], False, queue_first=True)
        self._queue_first, self._queue_first_ended_at, self._requeue_due = False, now, True
        return None

    def _loss_key(self, req: RequestView, lv: int) -> tuple[float, int]:
        """Sort key: least 𝒟_Q first; among loss-free levels the cheapest (highest K′) first."""
        s = req.similarity
        kp = effective_level(lv, req.levels_available)
        qs = self.quality(s, req.k_star)
        q = self.quality(s, kp)
        loss = qs - q
        return (loss if loss > 1e-12 else 0.0, -kp)

    def _redirect(
        self, req: RequestView, cluster: ClusterView, now: float, k0: int, w0: int, kp0: int, b0: int, backlog0: float
    ) -> Decision:
        best = (now + backlog0 + self.lat1[kp0], w0, kp0, b0)
        # Same level, soonest-free worker first (no quality change).
        w, bl = soonest_free(self.by_level[k0], cluster, now)
        fin = now + bl + self.lat1[kp0]
        if fin <= req.deadline:
            return Decision(w, kp0, 1, False)
        if fin < best[0]:
            best = (fin, w, kp0, 1)
        for lv in sorted(
            (lv for lv in self.levels if lv != k0 and self.by_level.get(lv)), key=lambda lv: self._loss_key(req, lv)
        ):
            kp = effective_level(lv, req.levels_available)
            w, b, bl = route_and_batch(
                self.by_level[lv], cluster, now, self.caps[lv] if kp == lv else 1, self.config.load_threshold
            )
            fin = now + bl + self.lat1[kp]
            if fin <= req.deadline:
                return Decision(w, kp, b, True)
            if fin < best[0]:
                best = (fin, w, kp, b)
        _, w, kp, b = best
        return Decision(w, kp, b, kp != kp0)


class Oracle(PromptAware):
    """prompt_aware planned with the true demand of the next period (the runner supplies it)."""

    name = "oracle"
    wants_future_demand = True


class ArgusOda(PromptAware):
    """Ablation of the route plan: prompt_aware's controller chooses the workers per level, then Argus's
    ordered distribution aligner (`scheduler.oda`) routes the classes over them instead of the MILP's flows.
    Every other lever (similarity ranks, upgrades, event re-plans, shedding) is prompt_aware's."""

    name = "argus_oda"

    def plan(self, now: float, demand: DemandEstimate | None) -> Plan:
        solved = super().plan(now, demand)
        if demand is None:  # nothing new was solved
            return solved
        self.set_plan(aligned_plan(solved, demand, self.config.headroom, self.config.util_target))
        return self.current


class Proteus(Policy):
    """PROTEUS over the same levels: prompt-agnostic MILP, fractions ignore K*, adaptive batching."""

    name = "proteus"
    uses_controller = True

    def plan(self, now: float, demand: DemandEstimate | None) -> Plan:
        return self._solve(demand, prompt_aware=False)

    def dispatch(self, req: RequestView, cluster: ClusterView, now: float) -> Decision:
        if not req.levels_available:
            return self._no_neighbour(cluster, now)
        k = self.levels[bisect.bisect_right(self._cum[0], self.rng.random())]  # same row for every class
        ws = self.by_level.get(k) or list(range(len(cluster.queue_len)))
        w, _ = soonest_free(ws, cluster, now)
        kp = effective_level(k, req.levels_available)
        # Adaptive batching: the worker takes whatever is queued, up to the plan's cap for the level.
        return Decision(w, kp, self.caps[k] if kp == k else 1, False)


class ProteusModels(Policy):
    """PROTEUS as published: each worker runs one model variant (scheduler.model_variants); the MILP picks
    workers per variant for the total demand (one prompt-agnostic class, quality = the variant's); requests
    go to a variant by the plan's fractions, soonest-free worker, adaptive batch up to its cap. No cache.
    `k_prime` in its decisions is the variant index; the runner charges a worker the variant's load time
    when the plan switches it (`serves_models`, `load_s`, `variant_quality_of`).

    Its `config` is the given one with the variants' latency profile (levels = variant indices), so whatever
    reads `policy.config.profile` and `policy.caps` (the live cluster view, admission) sees the variants;
    `config.variant_time_factor` scales them to the live emulated workers' clock."""

    name = "proteus_models"
    uses_controller = True
    serves_models = True

    def __init__(self, config: SchedulerConfig, seed: int = 0) -> None:
        self.variants = configured(config.variant_quality, config.variant_time_factor)
        self.variant_profile = variant_profile(self.variants)
        self.load_s = [v.load_s for v in self.variants]
        self.variant_quality_of = [v.quality for v in self.variants]
        super().__init__(dataclasses.replace(config, profile=self.variant_profile), seed)

    def plan(self, now: float, demand: DemandEstimate | None) -> Plan:
        if demand is None:
            return self.current
        levels = self.levels
        total = DemandEstimate(
            levels, [demand.total] + [0.0] * (len(levels) - 1), [self.variant_quality_of] * len(levels), now
        )
        return self._solve(total, prompt_aware=False, profile=self.variant_profile)

    def dispatch(self, req: RequestView, cluster: ClusterView, now: float) -> Decision:
        v = self.levels[bisect.bisect_right(self._cum[0], self.rng.random())]
        ws = self.by_level.get(v) or list(range(len(cluster.queue_len)))
        w, _ = soonest_free(ws, cluster, now)
        return Decision(w, cluster.levels[w], self.caps[cluster.levels[w]], False)

    def quality(self, s: float | None, k: int) -> float:
        """A request served by variant k has that variant's quality, whatever its prompt."""
        return self.variant_quality_of[k]


class Nirvana(Policy):
    """NIRVANA on every worker: each request at its own K*, shortest-queue routing, batch 1."""

    name = "nirvana"

    def dispatch(self, req: RequestView, cluster: ClusterView, now: float) -> Decision:
        best_w = shortest_queue(cluster, now)
        kp = effective_level(req.k_star, req.levels_available) if req.k_star else 0
        return Decision(best_w, kp, 1, False)


class Clipper(Policy):
    """Every worker at one level, soonest-free routing, AIMD batch size per worker."""

    level_index = 0

    def __init__(self, config: SchedulerConfig, seed: int = 0) -> None:
        super().__init__(config, seed)
        self.max_batch = config.profile.max_batch
        self.aimd = [1] * config.n_workers

    def initial_plan(self) -> Plan:
        return fixed_plan(
            self.levels, self.config.n_workers, self.levels[self.level_index], self.caps, policy=self.name
        )

    def dispatch(self, req: RequestView, cluster: ClusterView, now: float) -> Decision:
        k = self.levels[self.level_index]
        kp = effective_level(k, req.levels_available)
        w, _ = soonest_free(self.by_level[k], cluster, now)
        return Decision(w, kp, self.aimd[w], False)

    def on_batch_done(self, worker: int, k_prime: int, batch_size: int, service_s: float) -> None:
        if service_s <= self.config.slo_s:
            if batch_size >= self.aimd[worker]:  # only a full batch says the limit can grow
                self.aimd[worker] = min(self.max_batch, self.aimd[worker] + 1)
        else:
            self.aimd[worker] = max(1, int(self.aimd[worker] * 0.9))


class ClipperHA(Clipper):
    name = "clipper_ha"
    level_index = 0


class ClipperHT(Clipper):
    name = "clipper_ht"
    level_index = -1


_REGISTRY: dict[str, type[Policy]] = {
    "prompt_aware": PromptAware,
    "clipper_ha": ClipperHA,
    "clipper_ht": ClipperHT,
    "nirvana": Nirvana,
    "proteus": Proteus,
    "oracle": Oracle,
    "proteus_models": ProteusModels,
    "argus_oda": ArgusOda,
}


ORACLE_VARIANT_PREFIX = "oracle@"  # oracle@A: the oracle seeing A s ahead, beside the others in one run


def oracle_variant(name: str) -> float | None:
    """A, for a policy name `oracle@A`: the oracle that sees A seconds ahead (`oracle_lookahead_s`; at most one
    period counts), so that one run can hold oracles of several foresights side by side. None for any other
    name; ValueError when what follows the @ is not a number ≥ 0."""
    if not name.startswith(ORACLE_VARIANT_PREFIX):
        return None
    try:
        ahead = float(name[len(ORACLE_VARIANT_PREFIX) :])
    except ValueError:
        ahead = math.nan
    if not ahead >= 0.0 or math.isinf(ahead):
        raise ValueError(f"{name!r}: oracle@A needs A, the seconds the oracle sees ahead, as a number ≥ 0")
    return ahead


def is_sim_policy(name: str) -> bool:
    """Whether the simulator runs this name: a policy of SIM_POLICY_NAMES or an `oracle@A` variant."""
    return name in SIM_POLICY_NAMES or oracle_variant(name) is not None


def resolve_policy(name: str, config: SchedulerConfig) -> tuple[str, SchedulerConfig]:
    """The registry name and the config a policy name runs with: `oracle@A` is the oracle with
    `oracle_lookahead_s` = A; every other name runs as it is."""
    ahead = oracle_variant(name)
    if ahead is None:
        return name, config
    return "oracle", dataclasses.replace(config, oracle_lookahead_s=ahead)


def make_policy(name: str, config: SchedulerConfig, seed: int = 0) -> Policy:
    """Build a policy by name (see POLICY_NAMES)."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(SIM_POLICY_NAMES)}") from None
    return cls(config, seed)
