"""Discrete-event, virtual-clock simulator that runs the *same* policy objects as the live system.

Per policy run:
* arrivals come from a (scaled) trace; request r uses prompt `warm + r` of the prompt stream;
* on arrival: nearest cached neighbour (ApproxCache) → similarity s, K* (predictor, capped to the
  neighbour's cached levels); the demand estimator observes it; `policy.dispatch` picks worker, K′ and
  batch size; the request joins that worker's FIFO queue;
* a worker is work-conserving: when idle and something is queued it starts a batch at once — the head
  request's K′, plus the following queued requests of the same K′, up to the head's batch size — taking
  L(K′, b) from the profile; on completion the requests end and enter the cache (levels above their K′);
* every `period_s` the controller rolls the demand estimate and asks the policy for a plan (the oracle
  gets the true demand of the coming period instead);
* a request still queued 2 × SLO after arrival is dropped. Every arrival ends exactly once: on time,
  late or dropped.
The run is deterministic for a seed (routing samples use a seeded RNG; ties break by worker index).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .cache_model import ApproxCache
from .demand import DemandEstimate, DemandEstimator, default_class_quality
from .interface import ClusterView, RequestView, SchedulerConfig
from .policies import Policy, make_policy

_COMPLETE, _CONTROL, _DROP = 0, 1, 2


@dataclass
class SimResult:
    """Per-request outcomes (arrays indexed by request) and the plan history of one policy run."""

    policy: str
    arrival: np.ndarray
    deadline: np.ndarray
    start: np.ndarray            # NaN: never started (dropped)
    finish: np.ndarray           # NaN: dropped
    dropped: np.ndarray
    k_star: np.ndarray
    k_prime: np.ndarray
    quality: np.ndarray          # Q(s, K′) of the served request
    similarity: np.ndarray
    worker: np.ndarray
    redirected: np.ndarray
    batch: np.ndarray            # size of the batch it was served in
    plans: list[dict] = field(default_factory=list)   # {"time", "workers_per_level", "expected_quality", "solve_time_s"}
    cache_fallbacks: int = 0
    cache_evictions: int = 0
    wall_s: float = 0.0

    @property
    def n(self) -> int:
        return int(self.arrival.size)


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


def simulate(policy_name: str, config: SchedulerConfig, arrivals: np.ndarray, embeddings: np.ndarray,
             warm: int, cache_capacity: int = 100_000, seed: int = 0, top_m: int = 96,
             progress=None, cache: ApproxCache | None = None) -> SimResult:
    """Run one policy over the arrivals. embeddings: (warm + len(arrivals), d) unit vectors, stream order.

    `cache` may be a fresh ApproxCache built on the same embeddings (to reuse its neighbour index);
    its state is reset here.
    """
    import time as _time

    t_wall = _time.perf_counter()
    arrivals = np.asarray(arrivals, dtype=np.float64)
    n = arrivals.size
    if embeddings.shape[0] < warm + n:
        raise ValueError(f"need {warm + n} prompts (warm {warm} + {n} requests), have {embeddings.shape[0]}")
    levels = config.levels
    prof = config.profile
    qm = config.quality
    pred = config.predictor
    slo = config.slo_s
    W = config.n_workers
    if cache is None:
        cache = ApproxCache(embeddings[: warm + n], levels, cache_capacity, query_start=warm, top_m=top_m)
    else:
        cache.reset(cache_capacity)
    cache.warm(warm)

    policy: Policy = make_policy(policy_name, config, seed)
    estimator = DemandEstimator(levels, qm, alpha=config.ewma_alpha, start=0.0)
    cluster = ClusterView.idle(policy.current.worker_levels)
    queues: list[deque] = [deque() for _ in range(W)]
    running: list[list[int]] = [[] for _ in range(W)]

    start = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    dropped = np.zeros(n, dtype=bool)
    k_star = np.zeros(n, dtype=np.int64)
    k_prime = np.zeros(n, dtype=np.int64)
    quality = np.full(n, np.nan)
    sim_arr = np.full(n, np.nan)
    worker = np.full(n, -1, dtype=np.int64)
    redirected = np.zeros(n, dtype=bool)
    batch_of = np.zeros(n, dtype=np.int64)
    kp_l = [0] * n          # python mirrors for the hot loop
    bs_l = [1] * n
    cost_l = [0.0] * n
    state = [0] * n         # 0 queued, 1 running/done, 2 dropped
    lat_cache: dict[tuple[int, int], float] = {}

    def lat(k: int, b: int) -> float:
        v = lat_cache.get((k, b))
        if v is None:
            v = lat_cache[(k, b)] = prof.latency(k, b)
        return v

    heap: list[tuple[float, int, int, int]] = []
    seq = 0
    plans: list[dict] = []
    period = config.period_s

    def record_plan(t: float) -> None:
        p = policy.current
        plans.append({"time": t, "workers_per_level": list(p.workers_per_level) or
                      [p.worker_levels.count(k) for k in levels],
                      "expected_quality": p.expected_quality, "solve_time_s": p.solve_time_s})

    record_plan(0.0)
    if policy.uses_controller:
        heapq.heappush(heap, (period, -1, _CONTROL, 0))

    def start_batch(w: int, t: float) -> None:
        nonlocal seq
        q = queues[w]
        while q and state[q[0]] != 0:
            q.popleft()
        if not q:
            return
        head = q[0]
        k = kp_l[head]
        bmax = bs_l[head]
        taken: list[int] = []
        keep: deque = deque()
        for r in q:
            if state[r] != 0:
                continue
            if len(taken) < bmax and kp_l[r] == k:
                taken.append(r)
            else:
                keep.append(r)
        queues[w] = keep
        svc = lat(k, len(taken))
        qs = 0.0
        for r in taken:
            state[r] = 1
            start[r] = t
            batch_of[r] = len(taken)
            qs += cost_l[r]
        cluster.queue_len[w] -= len(taken)
        cluster.queued_s[w] = max(0.0, cluster.queued_s[w] - qs) if cluster.queue_len[w] else 0.0
        cluster.running[w] = len(taken)
        cluster.busy_until[w] = t + svc
        running[w] = taken
        seq += 1
        heapq.heappush(heap, (t + svc, seq, _COMPLETE, w))

    def control(t: float, ai: int) -> None:
        if getattr(policy, "wants_future_demand", False):
            est = future_demand(t, ai)
            estimator.roll(t)
        else:
            est = estimator.roll(t)
        if config.backlog_aware:
            queued = [0] * len(levels)
            for q in queues:
                for r in q:
                    if state[r] == 0:
                        queued[class_of[k_star[r]]] += 1
            est = est.with_backlog(queued, config.backlog_horizon_periods * period)
        policy.plan(t, est)
        cluster.levels[:] = policy.current.worker_levels
        record_plan(t)

    def future_demand(t: float, ai: int) -> DemandEstimate:
        hi = int(np.searchsorted(arrivals, t + period, side="left"))
        cnt = np.zeros(len(levels))
        qsum = np.zeros((len(levels), len(levels)))
        js, ss = cache.lookup_many(warm + ai, warm + hi)
        for j, s in zip(js.tolist(), ss.tolist()):
            ks = pred.k_star(s, cache.available(j)) if j >= 0 else 0
            i = class_of[ks]
            cnt[i] += 1
            qsum[i] += q_row(s)
        qd = default_class_quality(levels, qm)
        qmean = np.where(cnt[:, None] > 0, qsum / np.maximum(cnt, 1)[:, None], qd)
        return DemandEstimate(levels=list(levels), rates=(cnt / period).tolist(), quality=qmean.tolist(), time=t)

    class_of = {k: i for i, k in enumerate(levels)}
    q_row = _q_row_function(qm, levels)
    drop_after = 2.0 * slo
    ai = 0
    arr_l = arrivals.tolist()
    tick = max(1, n // 200)
    while ai < n or heap:
        t_arr = arr_l[ai] if ai < n else math.inf
        if heap and heap[0][0] <= t_arr:
            t, _, kind, x = heapq.heappop(heap)
            if kind == _COMPLETE:
                w = x
                batch = running[w]
                svc = t - start[batch[0]]
                for r in batch:
                    finish[r] = t
                    cache.insert(warm + r, kp_l[r])
                policy.on_batch_done(w, kp_l[batch[0]], len(batch), svc)
                running[w] = []
                cluster.running[w] = 0
                start_batch(w, t)
            elif kind == _DROP:
                r = x
                if state[r] == 0:
                    state[r] = 2
                    dropped[r] = True
                    w = int(worker[r])
                    cluster.queue_len[w] -= 1
                    cluster.queued_s[w] = max(0.0, cluster.queued_s[w] - cost_l[r]) if cluster.queue_len[w] else 0.0
            else:  # control
                control(t, ai)
                if ai < n:
                    heapq.heappush(heap, (t + period, -1, _CONTROL, 0))
            continue
        # arrival
        r = ai
        t = t_arr
        ai += 1
        if progress is not None and ai % tick == 0:
            progress.update(tick)
        j, s = cache.lookup(warm + r)
        if j >= 0:
            avail = cache.available(j)
            ks = pred.k_star(s, avail)
        else:
            avail = ()
            ks = 0
        k_star[r] = ks
        sim_arr[r] = s
        qrow = q_row(s)
        estimator.observe(ks, qrow)
        dl = t + slo
        d = policy.dispatch(RequestView(r, t, dl, s if j >= 0 else None, ks, avail), cluster, t)
        w, kp, b = d.worker_index, d.k_prime, max(1, d.batch_size)
        if kp and kp not in avail:
            raise RuntimeError(f"{policy_name}: K′={kp} not cached for the neighbour (levels {avail})")
        kp_l[r] = kp
        bs_l[r] = b
        k_prime[r] = kp
        quality[r] = qrow[class_of[kp]] if kp in class_of else qm.q(s, kp)
        worker[r] = w
        redirected[r] = d.redirected
        if kp:
            cache.hit(j, kp)
        c = lat(kp, b) / b
        cost_l[r] = c
        queues[w].append(r)
        cluster.queue_len[w] += 1
        cluster.queued_s[w] += c
        seq += 1
        heapq.heappush(heap, (dl + (drop_after - slo), seq, _DROP, r))
        if cluster.running[w] == 0:
            start_batch(w, t)
    if progress is not None:
        progress.update(n - (n // tick) * tick)
    return SimResult(policy=policy_name, arrival=arrivals, deadline=arrivals + slo, start=start, finish=finish,
                     dropped=dropped, k_star=k_star, k_prime=k_prime, quality=quality, similarity=sim_arr,
                     worker=worker, redirected=redirected, batch=batch_of, plans=plans,
                     cache_fallbacks=cache.fallbacks, cache_evictions=cache.evictions,
                     wall_s=_time.perf_counter() - t_wall)
