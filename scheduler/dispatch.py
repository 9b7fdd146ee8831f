"""Per-request dispatch rules: route-and-batch, the deadline check and the least-𝒟_Q redirect.

Route-and-batch (the paper's rule), among the workers at the chosen level:
* **load measure**: outstanding requests (queued + one for a busy worker) per worker at that level;
* **low load** (measure < `load_threshold`, default 1.0, or some worker at the level is idle): send the
  request to the worker that will be free soonest, batch size 1 — lowest latency;
* **high load**: send it to the worker whose queue is the longest that is not yet a full batch (plan
  batch size), so full batches form — highest throughput; if every queue is full, the soonest-free one.

Deadline check: expected finish = now + the worker's backlog + L(K′, 1) (conservative: it ignores the
saving from joining a partial batch). If it misses the deadline the request is redirected: first the
soonest-free worker at the same level, then the other levels in order of least quality loss
𝒟_Q = max(0, Q(s, K*) − Q(s, K′)) — among loss-free levels (K′ ≤ K*) the cheapest first — and the first
that can meet the deadline wins. If none can, the option that finishes earliest is taken.

Everything here loops over at most the workers of one level and the (few) levels: no per-request work
proportional to the cache or the history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .interface import ClusterView

if TYPE_CHECKING:
    from .planner import Plan

VECTOR_MIN_WORKERS = 64  # from this many workers a scan is vectorised: numpy's per-call overhead pays off


def is_hopeless(now: float, deadline: float, min_service_s: float) -> bool:
    """The shedding rule, the same for the simulator and the live workers: a queued request that would
    finish after its deadline even if it started now (its batch-of-one latency) is a violation whatever
    happens; running it would only take a worker from requests that can still make theirs."""
    return now + min_service_s > deadline


def batch_to_run(
    now: float,
    deadlines: Sequence[float],
    service_s: Callable[[int], float],
    queued_after: Callable[[], Iterable[tuple[float, float]]] = tuple,
) -> int:
    """The batch cut, the same for the simulator and the live workers (policies that shed): of a batch taken
    at one K′ (`deadlines` in the order taken, each member able to make its deadline alone), how many run
    now. A member that would finish late in the full batch but on time in a shorter one should not be
    shed for it: the batch is cut to the longest prefix whose `service_s(b)` = L(K′, b) meets every member's
    deadline, *if* nobody pays for the cut: the members left out still make theirs in the batch after it, and
    so does every request queued behind on this worker (`queued_after()`: (expected seconds, deadline) in
    queue order, asked for only when a cut is considered). Otherwise the batch is not cut and
    `on_time_batch` decides what runs: a cut that makes someone else late only moves the violation, and in a
    sustained overload (long queues, everyone near their deadline) it costs throughput the cluster does not
    have. (Seen in the simulator: a request 3.2 s from its deadline shed because it was paired at K′ = 25,
    5.3 s, when alone it took 3.2 s; and, without the check on the queue behind and `may_cut`, +1.6…1.9 pp
    violations in the Azure trace's sustained overload.)"""
    n = len(deadlines)
    earliest = math.inf
    for b in range(1, n + 1):
        earliest = min(earliest, deadlines[b - 1])
        if b > 1 and now + service_s(b) > earliest:
            keep = b - 1
            clock = now + service_s(keep) + service_s(n - keep)
            if any(clock > d for d in deadlines[keep:]):
                return n
            for cost, deadline in queued_after():
                clock += cost
                if clock > deadline:
                    return n
            return keep
    return n


def on_time_batch(
    now: float, deadlines: Sequence[float], size: int, service_s: Callable[[int], float]
) -> tuple[list[int], int]:
    """The batch that runs when the full one would make a member late and the batch cut is refused (the rule
    the simulator and the live workers share, with the cut switched on): the largest b ≤ `size` for which b
    candidates, taken in order (queue order: earliest deadline first), finish by their deadlines in a batch
    of b (`service_s(b)` = L(K′, b)). Returns their indices and how many candidates were scanned for them:
    the others among those are late even in the batch that runs and are shed; the candidates after them stay
    queued. Judging the members by the full batch shed requests that would have made it in the shorter batch
    that then ran (seen in the simulator: a request 4.6 s from its deadline shed as late in a pair at K′ = 25,
    5.6 s, and its partner then run alone, 3.2 s). Where the queue fills the full batch, nothing changes."""
    for b in range(min(size, len(deadlines)), 0, -1):
        done_by = now + service_s(b)
        chosen: list[int] = []
        for i, deadline in enumerate(deadlines):
            if done_by <= deadline:
                chosen.append(i)
                if len(chosen) == b:
                    return chosen, i + 1
    return [], len(deadlines)


def may_cut(plan: Plan | None, overload_factor: float) -> bool:
    """Whether the batch cut applies under this plan: not in a sustained overload, where the plan's demand
    exceeds what it can serve by more than `overload_factor` (there every worker-second is a request served,
    and shedding the late member keeps the throughput). 1.6 was chosen from 1.1, 1.3, 1.6 and 2.0 on four
    workloads: it keeps the cut's gain at load 1.0 and removes its cost in the Azure trace's sustained
    overload; the full sweep confirms both (docs/results.md, "The batch cut")."""
    return plan is None or plan.demand_rate <= plan.served_rate * overload_factor


def effective_level(k: int, available: tuple[int, ...]) -> int:
    """The level a request can actually resume at when sent to level k: k if its neighbour has it, else
    the nearest cached level above (else below); 0 without a neighbour."""
    if k == 0 or not available:
        return 0
    if k in available:
        return k
    above = [lv for lv in available if lv > k]
    if above:
        return min(above)
    return max(available)


def soonest_free(workers: list[int], cluster: ClusterView, now: float) -> tuple[int, float]:
    """(worker, backlog seconds) of the worker that frees up first (the first such in `workers`)."""
    bu, qs = cluster.busy_until, cluster.queued_s
    if len(workers) >= VECTOR_MIN_WORKERS:
        for w in workers[:16]:  # an idle worker near the front ends the search before numpy starts
            if bu[w] <= now and qs[w] <= 0.0:
                return w, 0.0 + qs[w]
        n = len(bu)
        ws = np.fromiter(workers, dtype=np.int64, count=len(workers))
        backlog = (
            np.maximum(np.fromiter(bu, dtype=np.float64, count=n)[ws] - now, 0.0)
            + np.fromiter(qs, dtype=np.float64, count=n)[ws]
        )
        k = int(backlog.argmin())  # the first minimum, like the loop
        return workers[k], float(backlog[k])
    best_w, best_b = workers[0], float("inf")
    for w in workers:
        rem = bu[w] - now
        b = (rem if rem > 0 else 0.0) + qs[w]
        if b < best_b:
            best_w, best_b = w, b
            if b <= 0.0:  # nothing frees up sooner than now
                break
    return best_w, best_b


def shortest_queue(cluster: ClusterView, now: float) -> int:
    """NIRVANA's rule: the worker with the fewest outstanding requests (queued + the one running), then the
    least backlog; the first such. Scans every worker, so large clusters take the vectorised path."""
    ql, bu, qs = cluster.queue_len, cluster.busy_until, cluster.queued_s
    if len(ql) >= VECTOR_MIN_WORKERS:
        n = len(ql)
        rem = np.fromiter(bu, dtype=np.float64, count=n) - now  # fromiter: the cheapest list → array
        busy = rem > 0
        count = np.fromiter(ql, dtype=np.int64, count=n) + busy
        cand = np.flatnonzero(count == count.min())
        if cand.size == 1:
            return int(cand[0])
        backlog = np.where(busy[cand], rem[cand], 0.0) + np.fromiter(qs, dtype=np.float64, count=n)[cand]
        return int(cand[int(backlog.argmin())])  # argmin: the first minimum, like the loop
    best_w, best = 0, (math.inf, math.inf)
    for w in range(len(ql)):
        rem = bu[w] - now
        key = (ql[w] + (1 if rem > 0 else 0), (rem if rem > 0 else 0.0) + qs[w])
        if key < best:
            best_w, best = w, key
            if key == (0, 0.0):  # an idle worker: nothing is shorter
                break
    return best_w


def route_and_batch(
    workers: list[int], cluster: ClusterView, now: float, batch_plan: int, load_threshold: float = 1.0
) -> tuple[int, int, float]:
    """Pick (worker, batch size, its backlog seconds) among `workers` (all at one level)."""
    ql, run = cluster.queue_len, cluster.running
    outstanding = 0
    idle = False
    for w in workers:
        q = ql[w]
        busy = run[w] > 0
        if q == 0 and not busy:
            idle = True  # low load whatever the others hold
            break
        outstanding += q + (1 if busy else 0)
    if idle or outstanding < load_threshold * len(workers) or batch_plan <= 1:
        w, b = soonest_free(workers, cluster, now)
        return w, 1, b
    best_w, best_q, best_b = -1, -1, float("inf")
    bu, qs = cluster.busy_until, cluster.queued_s
    for w in workers:
        q = ql[w]
        if q < batch_plan:
            rem = bu[w] - now
            bl = (rem if rem > 0 else 0.0) + qs[w]
            if q > best_q or (q == best_q and bl < best_b):
                best_w, best_q, best_b = w, q, bl
    if best_w < 0:
        best_w, best_b = soonest_free(workers, cluster, now)
    return best_w, batch_plan, best_b
