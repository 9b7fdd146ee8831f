"""Argus's ordered distribution aligner (ODA): a greedy K→K′ route over the controller's level counts.

The Argus paper (Middleware 2025, arXiv 2511.06724; `oda_algorithm` in the artifact's
`solver_milp_oda.py`) routes prompt classes to levels without an optimiser. Given the demand per K* class
h_k and the capacity per level f_k (what the workers the controller put at level k serve), it walks the
levels from the largest K down:

* **excess** (the demand waiting at level k exceeds f_k): level k serves f_k of it, the same share of every
  class in it, and the rest is pushed one level down (K′ < K*: loss-free for those prompts, slower);
* **spare** (f_k is not used up): prompts are pulled *up* from the classes just below (K* = k − 1 first,
  then k − 2, …) until the level is full: served at K′ > K*, they lose quality.

What is left after the smallest level (overload) is not served by the plan; the dispatcher's deadline
redirect takes it, as it does for the MILP's overload plans. This is our own code from the paper's
description; it keeps the artifact's order of work (top level first, pushes proportional, pulls nearest
first). Used by the `argus_oda` policy (`scheduler.policies`) as an ablation of the MILP's route plan:
same workers per level, only the route differs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .demand import DemandEstimate
from .planner import Plan, fallback_route_row


def align_distribution(demand: Sequence[float], capacity: Sequence[float]) -> np.ndarray:
    """Flows [class i][level j] (req/s) by ODA; classes and levels share one ascending list of K.

    `demand[i]`: req/s of K* class i; `capacity[j]`: req/s level j can take. A class's row sums to at most
    its demand (less only when the levels at and below it are full)."""
    d = np.maximum(np.asarray(demand, dtype=float), 0.0)
    cap = np.maximum(np.asarray(capacity, dtype=float), 0.0)
    if d.shape != cap.shape:
        raise ValueError(f"demand has {d.size} classes but capacity {cap.size} levels; they share one list")
    n = d.size
    flows = np.zeros((n, n))
    unserved = d.copy()  # demand of each class not yet routed (pulls take from it too)
    pushed = np.zeros(n)  # mass of each class pushed down to the level being visited
    for j in range(n - 1, -1, -1):
        waiting = pushed.copy()
        waiting[j] += unserved[j]
        unserved[j] = 0.0
        total = waiting.sum()
        if total > cap[j]:  # excess: serve the same share of everyone waiting, push the rest down
            share = cap[j] / total
            flows[:, j] += waiting * share
            pushed = waiting * (1.0 - share)
            continue
        flows[:, j] += waiting
        pushed = np.zeros(n)
        spare = cap[j] - total
        for i in range(j - 1, -1, -1):  # spare: pull up from the nearest classes below
            if spare <= 0.0:
                break
            take = min(unserved[i], spare)
            flows[i, j] += take
            unserved[i] -= take
            spare -= take
    return flows


def aligned_plan(plan: Plan, demand: DemandEstimate, headroom: float, util_target: float) -> Plan:
    """`plan` with its route, flows, utilisation and expected quality replaced by ODA's over the same workers
    per level (the plan's capacity at the utilisation target) and the same headroom-scaled class demand."""
    levels = list(plan.levels)
    flows = align_distribution(np.maximum(np.asarray(demand.rates, dtype=float), 0.0) * headroom, plan.capacity)
    quality = np.asarray(demand.quality, dtype=float)
    has_workers = np.asarray(plan.workers_per_level) > 0
    route = []
    for i, row in enumerate(flows):
        total = row.sum()
        if total > 1e-12:
            route.append((row / total).tolist())
        else:  # a class ODA sent nowhere (no demand, or overload): the planner's rule for such classes
            route.append(fallback_route_row(i, levels, quality[i], has_workers))
    served = float(flows.sum())
    level_load = flows.sum(axis=0)
    full = np.asarray(plan.capacity, dtype=float) / util_target
    return dataclasses.replace(
        plan,
        route=route,
        flows=flows.tolist(),
        utilisation=np.where(full > 0, level_load / np.maximum(full, 1e-12), 0.0).tolist(),
        expected_quality=float((quality * flows).sum() / served) if served > 0 else 1.0,
        served_rate=served,
    )
