"""Discrete-event, virtual-clock simulator that runs the *same* policy objects as the live system.

Per policy run:
* arrivals come from a (scaled) trace; request r uses prompt `warm + r` of the prompt stream;
* on arrival: nearest cached neighbour (ApproxCache) → similarity s, K* (predictor, capped to the
  neighbour's cached levels); the demand estimator observes it; `policy.dispatch` picks worker, K′ and
  batch size; the request joins that worker's FIFO queue;
* a worker is work-conserving: when idle and something is queued it starts a batch at once — the head
  request's K′, plus the following queued requests of the same K′, up to the head's batch size — taking
  L(K′, b) from the profile; on completion the requests end and enter the cache (levels above their K′);
  policies that shed drop queued requests that cannot make their deadline even alone, and cut a batch
  that would make a member late when everything queued behind can still wait for it and the plan is not in
  a sustained overload (`dispatch.batch_to_run`, `dispatch.may_cut`);
* every `period_s` the controller rolls the demand estimate and asks the policy for a plan (the oracle
  gets the true demand of the coming period instead);
* a request still queued 2 × SLO after arrival is dropped. Every arrival ends exactly once: on time,
  late or dropped.
The run is deterministic for a seed (routing samples use a seeded RNG; ties break by worker index).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from .admission import QUEUE, admit
from .cache_model import ApproxCache
from .demand import DemandEstimate, DemandEstimator, default_class_quality, estimator_for
from .dispatch import batch_to_run, is_hopeless, may_cut, on_time_batch
from .interface import ClusterView, RequestView, SchedulerConfig
from .metrics import summarize
from .policies import Policy, make_policy, resolve_policy
from .profiles import LatencyProfile

_COMPLETE, _CONTROL, _DROP, _READY = 0, 1, 2, 3


@dataclass
class SimResult:
    """Per-request outcomes (arrays indexed by request) and the plan history of one policy run."""

    policy: str
    arrival: np.ndarray
    deadline: np.ndarray
    start: np.ndarray  # NaN: never started (dropped)
    finish: np.ndarray  # NaN: dropped
    dropped: np.ndarray
    k_star: np.ndarray
    k_prime: np.ndarray
    quality: np.ndarray  # Q(s, K′) of the served request
    similarity: np.ndarray
    worker: np.ndarray
    redirected: np.ndarray
    batch: np.ndarray  # size of the batch it was served in
    # {"time", "workers_per_level", "expected_quality", "solve_time_s"} per plan, the first at time 0
    plans: list[dict] = field(default_factory=list)
    cache_fallbacks: int = 0
    cache_evictions: int = 0
    wall_s: float = 0.0

    @property
    def n(self) -> int:
        return int(self.arrival.size)

    def summary(self, levels: list[int], window_s: float) -> dict:
        """The metrics table row of this run (DESIGN §7), plus its simulation time and mean plan solve."""
        metrics = summarize(
            self.arrival,
            self.deadline,
            self.finish,
            self.quality,
            self.k_prime,
            self.redirected,
            list(levels),
            window_s=window_s,
            start=self.start,
        )
        metrics["sim_wall_s"] = self.wall_s
        metrics["plan_solve_ms_mean"] = float(np.mean([p["solve_time_s"] for p in self.plans]) * 1e3)
        return metrics


def _q_row_function(qm, levels: list[int]):
    """s ↦ [Q(s, K′) for K′ in levels], with NaN s (no neighbour) giving 1 at K′ = 0 and the floor above.
    For the default analytic model g(K′) is looked up once here: this runs for every arrival."""
    miss = [1.0] + [qm.floor] * (len(levels) - 1)
    if qm.table_values is not None:
        return lambda s: list(miss) if not math.isfinite(s) else [qm.q(s, k) for k in levels]
    fl = qm.floor
    gs = [qm.g_of(k) for k in levels if k != 0]
    head = [1.0] if levels and levels[0] == 0 else []
    if len(head) + len(gs) != len(levels):  # level 0 not first: keep the general form
        return lambda s: list(miss) if not math.isfinite(s) else [qm.q(s, k) for k in levels]

    def row(s: float) -> list[float]:
        if not math.isfinite(s):
            return list(miss)
        t = 1.0 - s
        return head + [v if v > fl else fl for v in [1.0 - g * t for g in gs]]

    return row


def simulate(
    policy_name: str,
    config: SchedulerConfig,
    arrivals: np.ndarray,
    embeddings: np.ndarray,
    warm: int,
    cache_capacity: int = 100_000,
    seed: int = 0,
    top_m: int = 96,
    progress=None,
    cache: ApproxCache | None = None,
    batch_overhead_s: float = 0.0,
) -> SimResult:
    """Run one policy over the arrivals. embeddings: (warm + len(arrivals), d) unit vectors, stream order.

    `cache` may be a fresh ApproxCache built on the same embeddings (to reuse its neighbour index);
    its state is reset here. `batch_overhead_s`: seconds every batch holds its worker beyond L(K′, b) that
    the scheduler does not know of (a live worker's claim, image saving and ledger writes: compare_sim's
    `--batch-overhead`); the policies still plan, route and shed with the profile alone.
    """
    wall_started = time.perf_counter()
    arrivals = np.asarray(arrivals, dtype=np.float64)
    _check_prompt_count(embeddings, warm, arrivals.size)
    cache = _warm_cache(cache, embeddings, warm, arrivals.size, config.levels, cache_capacity, top_m)
    run = _setup_run(policy_name, config, arrivals, cache, warm, seed, batch_overhead_s)
    handlers = _event_handlers(run)
    _event_loop(run, handlers, progress)
    return _result(run, time.perf_counter() - wall_started)


@dataclass(eq=False)
class _Run:
    """The state of one policy run: the cluster, the queues, the event heap and the per-request outcomes."""

    policy_name: str
    config: SchedulerConfig
    arrivals: np.ndarray
    cache: ApproxCache
    warm: int
    policy: Policy
    estimator: DemandEstimator
    cluster: ClusterView
    class_of: dict[int, int]  # level → its index in config.levels (= its K* class)
    q_row: Callable[[float], list[float]]  # similarity → [Q(s, K′) for K′ in levels]
    queues: list[deque]  # per worker: queued request indices, FIFO
    running: list[list[int]]  # per worker: the batch being served
    heap: list[tuple[float, int, int, int]]  # (time, tie-break seq, event kind, worker or request)
    plans: list[dict]
    # per-request outcomes (the SimResult arrays)
    start: np.ndarray
    finish: np.ndarray
    dropped: np.ndarray
    k_star: np.ndarray
    k_prime: np.ndarray
    quality: np.ndarray
    similarity: np.ndarray
    worker: np.ndarray
    redirected: np.ndarray
    batch: np.ndarray
    # Python-list mirrors for the hot loop
    k_prime_list: list[int]
    batch_cap_list: list[int]  # batch size the dispatcher asked for, per request
    cost_list: list[float]  # expected service seconds per request (L(K′, b) / b)
    state: list[int]  # _QUEUED, _TAKEN (running or done) or _DROPPED
    ready_at: list[float]  # per worker: when it may start a batch (after loading a model variant)
    serves_models: bool  # proteus_models: K′ is a model variant index, no cache, load time on a switch
    # queue-first (prompt_aware): the requests the mode queued at K′ = 0 that have a neighbour, and that
    # neighbour, for the re-route when the mode ends (`_requeue_queue_first`)
    queue_first: dict[int, int]
    batch_overhead_s: float = 0.0  # unplanned seconds per batch (simulate's argument)


_QUEUED, _TAKEN, _DROPPED = 0, 1, 2


def _check_prompt_count(embeddings: np.ndarray, warm: int, n_requests: int) -> None:
    """Fail early when the prompt stream is shorter than warm-up plus requests."""
    if embeddings.shape[0] < warm + n_requests:
        raise ValueError(
            f"need {warm + n_requests} prompts (warm {warm} + {n_requests} requests), have {embeddings.shape[0]}"
        )


def _warm_cache(
    cache: ApproxCache | None,
    embeddings: np.ndarray,
    warm: int,
    n_requests: int,
    levels: list[int],
    cache_capacity: int,
    top_m: int,
) -> ApproxCache:
    """A new cache (or the given one, reset), warmed with the first `warm` prompts."""
    if cache is None:
        cache = ApproxCache(embeddings[: warm + n_requests], levels, cache_capacity, query_start=warm, top_m=top_m)
    else:
        cache.reset(cache_capacity)
    cache.warm(warm)
    return cache


def _setup_run(
    policy_name: str,
    config: SchedulerConfig,
    arrivals: np.ndarray,
    cache: ApproxCache,
    warm: int,
    seed: int,
    batch_overhead_s: float = 0.0,
) -> _Run:
    """The policy, estimator, idle cluster and empty outcomes; the first plan recorded, the first tick queued.
    `policy_name` labels the run; an `oracle@A` name runs the oracle with its lookahead (`resolve_policy`)."""
    registry_name, config = resolve_policy(policy_name, config)
    n = arrivals.size
    n_workers = config.n_workers
    levels = config.levels
    policy = make_policy(registry_name, config, seed)
    run = _Run(
        policy_name=policy_name,
        config=config,
        arrivals=arrivals,
        cache=cache,
        warm=warm,
        policy=policy,
        estimator=estimator_for(config, start=0.0),
        cluster=ClusterView.idle(policy.current.worker_levels),
        class_of={k: i for i, k in enumerate(levels)},
        q_row=_q_row_function(config.quality, levels),
        queues=[deque() for _ in range(n_workers)],
        running=[[] for _ in range(n_workers)],
        heap=[],
        plans=[],
        start=np.full(n, np.nan),
        finish=np.full(n, np.nan),
        dropped=np.zeros(n, dtype=bool),
        k_star=np.zeros(n, dtype=np.int64),
        k_prime=np.zeros(n, dtype=np.int64),
        quality=np.full(n, np.nan),
        similarity=np.full(n, np.nan),
        worker=np.full(n, -1, dtype=np.int64),
        redirected=np.zeros(n, dtype=bool),
        batch=np.zeros(n, dtype=np.int64),
        k_prime_list=[0] * n,
        batch_cap_list=[1] * n,
        cost_list=[0.0] * n,
        state=[_QUEUED] * n,
        ready_at=[0.0] * n_workers,
        serves_models=getattr(policy, "serves_models", False),
        queue_first={},
        batch_overhead_s=batch_overhead_s,
    )
    _record_plan(run, 0.0)
    if policy.uses_controller:
        heapq.heappush(run.heap, (config.period_s, -1, _CONTROL, 0))
    return run


class _MemoisedLatency(dict):
    """L(K′, b) from the profile, memoised (it is asked for on every arrival and batch): call it for any
    batch size; index it by K′ for L(K′, 1), a plain dict lookup on the hot path."""

    def __init__(self, profile: LatencyProfile) -> None:
        super().__init__()
        self._profile = profile
        self._table: dict[tuple[int, int], float] = {}

    def __call__(self, k: int, b: int) -> float:
        v = self._table.get((k, b))
        if v is None:
            v = self._table[(k, b)] = self._profile.latency(k, b)
        return v

    def __missing__(self, k: int) -> float:
        self[k] = value = self(k, 1)
        return value


@dataclass(frozen=True)
class _Handlers:
    """The hot event handlers of one run (closures over its state)."""

    arrival: Callable[[int, float], None]  # (request, time)
    complete: Callable[[int, float], None]  # (worker, time)
    drop: Callable[[int], None]  # (request)
    ready: Callable[[int, float], None]  # (worker, time): its model variant is loaded


def _event_handlers(run: _Run) -> _Handlers:
    """The per-event handlers, as closures over the run's state so the hot loop reads locals, not attributes.
    The cluster's lists are bound once: policies read them and nothing replaces them."""
    config, policy, cache, estimator, cluster = run.config, run.policy, run.cache, run.estimator, run.cluster
    predictor, quality_model, q_row, class_of = config.predictor, config.quality, run.q_row, run.class_of
    warm, slo, policy_name = run.warm, config.slo_s, run.policy_name
    drop_after = 2.0 * slo
    queues, running, heap, state = run.queues, run.running, run.heap, run.state
    k_prime_list, batch_cap_list, cost_list = run.k_prime_list, run.batch_cap_list, run.cost_list
    start, finish, dropped, batch_of = run.start, run.finish, run.dropped, run.batch
    k_star, k_prime, quality, similarity = run.k_star, run.k_prime, run.quality, run.similarity
    worker, redirected, queue_first = run.worker, run.redirected, run.queue_first
    queue_len, queued_s, busy, busy_until = cluster.queue_len, cluster.queued_s, cluster.running, cluster.busy_until
    serves_models, ready_at, batch_overhead_s = run.serves_models, run.ready_at, run.batch_overhead_s
    latency = _MemoisedLatency(policy.variant_profile if serves_models else config.profile)
    lat1 = latency  # L(K′, 1) by K′: latency[k]
    variant_quality = getattr(policy, "variant_quality_of", None)
    heappush = heapq.heappush
    seq = 0  # tie-break for events at the same time: the order they were scheduled

    sheds = getattr(policy, "sheds_hopeless", False)
    cuts = config.batch_cut
    admission_mode = config.admission
    replan_due = getattr(policy, "replan_due", None)
    arrival_times = run.arrivals

    def hopeless(r: int, t: float, service_s: float) -> bool:
        """Shed (drop, a violation) a queued request that would miss its deadline even if it started now in
        a batch taking `service_s`: running it would only take a worker from requests that can still make
        theirs."""
        if not is_hopeless(t, arrival_times[r] + slo, service_s):
            return False
        return shed(r)

    def shed(r: int) -> bool:
        """Drop queued request r (a violation: hopeless by `dispatch.is_hopeless`, or past 2 × SLO). True, so
        that a filter can call it."""
        state[r] = _DROPPED
        dropped[r] = True
        w = int(worker[r])
        queue_len[w] -= 1
        queued_s[w] = max(0.0, queued_s[w] - cost_list[r]) if queue_len[w] else 0.0
        return True

    def refill(queue: deque, level: int, size: int, t: float) -> list[int]:
        """The batch at `level` that runs when the full one would make a member late and is not cut. With the
        batch cut on, `dispatch.on_time_batch` over the queued requests of that level: the largest batch whose
        members make their deadlines in it; those passed over for it are shed. With it off (the rule before
        the cut): the members late in the full batch are shed and it is refilled from the queue."""
        same = [r for r in queue if k_prime_list[r] == level]
        if cuts:
            chosen, scanned = on_time_batch(
                t, [arrival_times[r] + slo for r in same], size, lambda b: latency(level, b)
            )
            taken = [same[i] for i in chosen]
            picked = set(taken)
            for r in same[:scanned]:
                if r not in picked:
                    shed(r)
            return taken
        service_s = latency(level, size)
        taken = []
        for r in same:
            if not hopeless(r, t, service_s):
                taken.append(r)
                if len(taken) == size:
                    break
        return taken

    def start_batch(w: int, t: float) -> None:
        """If worker w has queued work, start a batch: the head's K′ and the next queued of that K′, up to
        the head's batch size. A policy that sheds first drops the queued requests that would miss their
        deadline even alone and started now, then applies the batch cut (`dispatch.batch_to_run`, as the
        live worker does to its claimed batch); when the batch is not cut, `refill` decides what runs."""
        nonlocal seq
        if ready_at[w] > t:  # still loading a model variant: the _READY event starts it
            return
        if sheds:  # dispatch.is_hopeless with the batch-of-one latency, inlined: it runs per queued request
            queue = deque(
                r
                for r in queues[w]
                if state[r] == _QUEUED and not (t + lat1[k_prime_list[r]] > arrival_times[r] + slo and shed(r))
            )
        else:
            queue = deque(r for r in queues[w] if state[r] == _QUEUED)
        queues[w] = queue
        if not queue:
            return
        level, batch_cap = k_prime_list[queue[0]], batch_cap_list[queue[0]]
        taken = list(islice((r for r in queue if k_prime_list[r] == level), batch_cap))
        if sheds and len(taken) > 1:
            deadlines = [arrival_times[r] + slo for r in taken]

            def behind() -> Iterator[tuple[float, float]]:
                return ((cost_list[r], arrival_times[r] + slo) for r in queue if r not in taken)

            cut = cuts and may_cut(policy.current, config.batch_cut_overload)
            keep = batch_to_run(t, deadlines, lambda b: latency(level, b), behind) if cut else len(taken)
            if keep < len(taken):
                del taken[keep:]
            elif t + latency(level, len(taken)) > min(deadlines):  # no cut: shed its late members, refill
                taken = refill(queue, level, len(taken), t)
                queue = deque(r for r in queue if state[r] == _QUEUED)
                if not taken:
                    queues[w] = queue
                    start_batch(w, t)
                    return
        if len(taken) == 1 and taken[0] == queue[0]:  # the common case: the head alone
            queue.popleft()
            queues[w] = queue  # the refill above may have rebuilt the queue
        else:
            chosen = set(taken)
            queues[w] = deque(r for r in queue if r not in chosen)
        service_s = latency(level, len(taken))
        taken_cost = 0.0
        for r in taken:
            if queue_first:
                queue_first.pop(r, None)
            state[r] = _TAKEN
            start[r] = t
            batch_of[r] = len(taken)
            taken_cost += cost_list[r]
        queue_len[w] -= len(taken)
        queued_s[w] = max(0.0, queued_s[w] - taken_cost) if queue_len[w] else 0.0
        busy[w] = len(taken)
        busy_until[w] = t + service_s  # what the scheduler expects; the batch ends after the overhead too
        running[w] = taken
        seq += 1
        heappush(heap, (t + service_s + batch_overhead_s, seq, _COMPLETE, w))

    def enqueue(r: int, t: float, w: int, cost: float, deadline: float) -> None:
        """Request r joins worker w's queue (expected cost per request `cost`); its drop is scheduled at 2 × SLO;
        an idle worker starts at once."""
        nonlocal seq
        cost_list[r] = cost
        queues[w].append(r)
        queue_len[w] += 1
        queued_s[w] += cost
        seq += 1
        heappush(heap, (deadline + (drop_after - slo), seq, _DROP, r))
        if busy[w] == 0:
            start_batch(w, t)

    def on_arrival(r: int, t: float) -> None:
        """Request r arrives: neighbour and K*, demand observed, dispatched, queued, its drop scheduled."""
        neighbour, sim = cache.lookup(warm + r)
        if neighbour >= 0:
            available = cache.available(neighbour)
            ks = predictor.k_star(sim, available)
        else:
            available = ()
            ks = 0
        k_star[r] = ks
        similarity[r] = sim
        quality_row = q_row(sim)
        estimator.observe(ks, quality_row)
        deadline = t + slo
        decision = policy.dispatch(
            RequestView(r, t, deadline, sim if neighbour >= 0 else None, ks, available), cluster, t
        )
        w, kp, batch_cap = decision.worker_index, decision.k_prime, max(1, decision.batch_size)
        if serves_models:  # kp is the worker's model variant: a full generation with that model, no cache
            queue_model_request(r, t, w, kp, batch_cap, deadline)
            return
        if kp and kp not in available:
            raise RuntimeError(f"{policy_name}: K′={kp} not cached for the neighbour (levels {available})")
        if admission_mode != QUEUE:
            verdict = admit(admission_mode, t, deadline, w, kp, available, cluster, latency)
            if not verdict.accept:  # refused at the door: a violation that never takes a worker
                state[r] = _DROPPED
                dropped[r] = True
                k_prime_list[r] = k_prime[r] = kp
                quality[r] = quality_row[class_of[kp]] if kp in class_of else quality_model.q(sim, kp)
                worker[r] = w
                return
            if verdict.degraded:
                w, kp, batch_cap = verdict.worker, verdict.k_prime, 1
        k_prime_list[r] = kp
        batch_cap_list[r] = batch_cap
        k_prime[r] = kp
        quality[r] = quality_row[class_of[kp]] if kp in class_of else quality_model.q(sim, kp)
        worker[r] = w
        redirected[r] = decision.redirected
        if kp:
            cache.hit(neighbour, kp)
        elif decision.queue_first and neighbour >= 0:
            queue_first[r] = neighbour
        enqueue(r, t, w, latency(kp, batch_cap) / batch_cap, deadline)
        if replan_due is not None and replan_due(t):
            _control_tick(run, t, r + 1)

    def queue_model_request(r: int, t: float, w: int, variant: int, batch_cap: int, deadline: float) -> None:
        """proteus_models: request r joins worker w's queue at its model variant (quality: the variant's)."""
        k_prime_list[r], batch_cap_list[r] = variant, batch_cap
        quality[r] = variant_quality[variant]
        worker[r] = w
        enqueue(r, t, w, latency(variant, batch_cap) / batch_cap, deadline)

    def on_ready(w: int, t: float) -> None:
        """Worker w has loaded its new model variant: it starts on its queue."""
        if busy[w] == 0:
            start_batch(w, t)

    def on_complete(w: int, t: float) -> None:
        """Worker w's batch ends: its requests finish and enter the cache; the worker starts its next batch."""
        batch = running[w]
        service_s = t - start[batch[0]]
        for r in batch:
            finish[r] = t
            if not serves_models:
                cache.insert(warm + r, k_prime_list[r])
        policy.on_batch_done(w, k_prime_list[batch[0]], len(batch), service_s)
        running[w] = []
        busy[w] = 0
        start_batch(w, t)

    def on_drop(r: int) -> None:
        """Request r's 2 × SLO is up: dropped if it is still queued."""
        if state[r] == _QUEUED:
            shed(r)

    return _Handlers(on_arrival, on_complete, on_drop, on_ready)


def _event_loop(run: _Run, handlers: _Handlers, progress) -> None:
    """Advance the virtual clock: whichever comes first of the next arrival and the next scheduled event
    (ties: the scheduled event), until every arrival is in and the heap is empty."""
    on_arrival, on_complete, on_drop, on_ready = handlers.arrival, handlers.complete, handlers.drop, handlers.ready
    heap = run.heap
    heappop, heappush = heapq.heappop, heapq.heappush
    period = run.config.period_s
    arrival_times = run.arrivals.tolist()
    n = len(arrival_times)
    tick = max(1, n // 200)
    next_arrival = 0
    while next_arrival < n or heap:
        t_arrival = arrival_times[next_arrival] if next_arrival < n else math.inf
        if heap and heap[0][0] <= t_arrival:
            t, _, kind, index = heappop(heap)
            if kind == _COMPLETE:
                on_complete(index, t)
            elif kind == _DROP:
                on_drop(index)
            elif kind == _READY:
                on_ready(index, t)
            else:
                _control_tick(run, t, next_arrival)
                if next_arrival < n:
                    heappush(heap, (t + period, -1, _CONTROL, 0))
            continue
        on_arrival(next_arrival, t_arrival)
        next_arrival += 1
        if progress is not None and next_arrival % tick == 0:
            progress.update(tick)
    if progress is not None:
        progress.update(n - (n // tick) * tick)


def _control_tick(run: _Run, t: float, next_arrival: int) -> None:
    """The controller: roll the demand estimate (plus the backlog), ask the policy for a plan, apply it."""
    config, policy = run.config, run.policy
    if getattr(policy, "wants_future_demand", False):
        estimate = _future_demand(run, t, next_arrival)
        run.estimator.roll(t)
    else:
        estimate = run.estimator.roll(t)
    if config.backlog_aware:
        estimate = estimate.with_backlog(_queued_per_class(run), config.backlog_horizon_periods * config.period_s)
    before = list(run.cluster.levels)
    take_requeue = getattr(policy, "take_requeue", None)
    requeue = take_requeue is not None and take_requeue()
    policy.plan(t, estimate)
    run.cluster.levels[:] = policy.current.worker_levels
    if requeue:
        _requeue_queue_first(run)
    if run.serves_models:
        _switch_models(run, before, t)
    _record_plan(run, t)


def _requeue_queue_first(run: _Run) -> None:
    """Queue-first has ended and the policy has re-planned: every request the mode queued at K′ = 0 that is
    still waiting takes the new plan's level for it (`PromptAware.requeue_level`), on the same worker and in
    the same place in its queue, as the live controller relabels the queued rows."""
    policy, config, cluster, cache = run.policy, run.config, run.cluster, run.cache
    slo, caps = config.slo_s, policy.caps
    for r, neighbour in run.queue_first.items():
        if run.state[r] != _QUEUED:
            continue
        available = cache.available(neighbour)
        sim = float(run.similarity[r])
        arrival = float(run.arrivals[r])
        kp = policy.requeue_level(RequestView(r, arrival, arrival + slo, sim, int(run.k_star[r]), available))
        if kp == 0:
            continue
        w, cap = int(run.worker[r]), caps[kp]
        cost = config.profile.latency(kp, cap) / cap
        cluster.queued_s[w] = max(0.0, cluster.queued_s[w] + cost - run.cost_list[r])
        run.cost_list[r] = cost
        run.k_prime_list[r] = run.k_prime[r] = kp
        run.batch_cap_list[r] = cap
        run.quality[r] = run.q_row(sim)[run.class_of[kp]]
        cache.hit(neighbour, kp)
    run.queue_first.clear()


def _switch_models(run: _Run, before: list[int], t: float) -> None:
    """proteus_models: a worker whose variant changed loads it once its running batch ends, serving nothing
    for the variant's load time; what it had queued waits and is then served by the new variant."""
    policy, cluster = run.policy, run.cluster
    for w, (old, new) in enumerate(zip(before, cluster.levels)):
        if old == new:
            continue
        ready = max(t, cluster.busy_until[w], run.ready_at[w]) + policy.load_s[new]
        run.ready_at[w] = ready
        cluster.busy_until[w] = ready  # the dispatchers see the load as backlog
        for r in run.queues[w]:
            if run.state[r] == _QUEUED:
                run.k_prime_list[r] = new
                run.quality[r] = policy.variant_quality_of[new]
        heapq.heappush(run.heap, (ready, -2, _READY, w))


def _queued_per_class(run: _Run) -> list[int]:
    """Requests still queued, per K* class."""
    queued = [0] * len(run.config.levels)
    state, k_star, class_of = run.state, run.k_star, run.class_of
    for queue in run.queues:
        for r in queue:
            if state[r] == _QUEUED:
                queued[class_of[k_star[r]]] += 1
    return queued


def _future_demand(run: _Run, t: float, next_arrival: int) -> DemandEstimate:
    """The oracle's estimate: the true demand and mean quality per class of the coming period, or, with
    `oracle_lookahead_s` = a, of the period-long window [t + a − period, t + a) (the arrivals in it that are
    already in are looked up in the cache as it is now, like the future ones)."""
    config, cache, class_of = run.config, run.cache, run.class_of
    levels, period = config.levels, config.period_s
    ahead = config.oracle_lookahead
    end = int(np.searchsorted(run.arrivals, t + ahead, side="left"))
    begin = next_arrival if ahead >= period else int(np.searchsorted(run.arrivals, t + ahead - period, side="left"))
    counts = np.zeros(len(levels))
    quality_sum = np.zeros((len(levels), len(levels)))
    neighbours, sims = cache.lookup_many(run.warm + begin, run.warm + end)
    for neighbour, sim in zip(neighbours.tolist(), sims.tolist()):
        ks = config.predictor.k_star(sim, cache.available(neighbour)) if neighbour >= 0 else 0
        i = class_of[ks]
        counts[i] += 1
        quality_sum[i] += run.q_row(sim)
    default_quality = default_class_quality(levels, config.quality)
    mean_quality = np.where(counts[:, None] > 0, quality_sum / np.maximum(counts, 1)[:, None], default_quality)
    return DemandEstimate(levels=list(levels), rates=(counts / period).tolist(), quality=mean_quality.tolist(), time=t)


def _record_plan(run: _Run, t: float) -> None:
    """Append the policy's current plan to the run's plan history."""
    plan = run.policy.current
    run.plans.append(
        {
            "time": t,
            "workers_per_level": list(plan.workers_per_level)
            or [plan.worker_levels.count(k) for k in run.config.levels],
            "expected_quality": plan.expected_quality,
            "solve_time_s": plan.solve_time_s,
        }
    )


def _result(run: _Run, wall_s: float) -> SimResult:
    """The per-request outcomes and plan history as a SimResult."""
    return SimResult(
        policy=run.policy_name,
        arrival=run.arrivals,
        deadline=run.arrivals + run.config.slo_s,
        start=run.start,
        finish=run.finish,
        dropped=run.dropped,
        k_star=run.k_star,
        k_prime=run.k_prime,
        quality=run.quality,
        similarity=run.similarity,
        worker=run.worker,
        redirected=run.redirected,
        batch=run.batch,
        plans=run.plans,
        cache_fallbacks=run.cache.fallbacks,
        cache_evictions=run.cache.evictions,
        wall_s=wall_s,
    )
