"""Resource Controller: the mixed-integer program that turns demand per K* class into a plan.

Variables:
  n_j  ≥ 0 integer   workers at level j, Σ_j n_j = N (the whole cluster);
  x_ij ≥ 0           rate (req/s) of class i routed to level j.
Constraints:
  Σ_i x_ij ≤ ρ · n_j · b_j / L(j, b_j)     capacity of level j at the utilisation target ρ, with b_j the
                                             batch cap (largest b with L ≤ SLO/2);
  Σ_j x_ij ≤ h · d_i                        a class is never sent more than its (headroom-scaled) demand
                                             (= when the cluster can serve all demand: see the objective).
Objective, lexicographic: first serve as much demand as possible — max Σ x_ij, which has a closed form
because any class may go to any level: min(Σ_i h·d_i, ρ · N · max_j b_j / L(j, b_j)) — then, with
Σ x_ij held at that maximum, maximise Σ q_ij x_ij (expected quality, i.e. minimise 𝒟_Q). When demand exceeds capacity the program stays
feasible and serves what it can; the route fractions then describe the served share and the dispatcher's
deadline redirect handles the rest.

Solvers: GLPK's branch and bound (`scheduler.mip_glpk`, default, ~0.5 ms) or HiGHS through
`scipy.optimize.milp` (`solver="highs"`, 10–60 ms: HiGHS's root-node machinery is sized for far larger
programs). Both solve to the same relative gap and reach the same optimum (tested); GLPK is what lets the
simulator run the controller every simulated 10 s and still replay tens of thousands of requests a second.

Workers the program does not need are spread over the used levels so utilisation is evened out (more
slack for bursts). Prompt-agnostic planning (PROTEUS) is the same program over a single class whose
quality per level is the demand-weighted mean over all classes.

The `Plan` is plain data and JSON-serialisable (`to_dict`/`from_dict`): the live system stores it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .demand import DemandEstimate
from .mip_glpk import MipSolution, solve_mip
from .profiles import LatencyProfile

SOLVERS: tuple[str, ...] = ("glpk", "highs")
MIP_REL_GAP = 1e-5     # on the quality objective alone: ≈ 1e-5 relative error in expected quality
SERVED_SLACK = 1e-6    # relative slack on "serve the maximum" under overload (well above solver tolerances)


@dataclass
class Plan:
    """A controller decision. Classes (K*) and levels (K′) are both indexed by `levels`."""

    levels: list[int]
    worker_levels: list[int]                 # level of each worker, len = cluster size
    route: list[list[float]]                 # route[i][j]: share of class levels[i] sent to levels[j]
    batch_size: dict[int, int]               # batch size per level (the cap; dispatch may use 1)
    workers_per_level: list[int] = field(default_factory=list)
    flows: list[list[float]] = field(default_factory=list)   # flows[i][j]: planned req/s of class i at level j
    capacity: list[float] = field(default_factory=list)      # req/s per level at the utilisation target
    utilisation: list[float] = field(default_factory=list)   # planned load / full capacity per level
    expected_quality: float = 1.0
    served_rate: float = 0.0
    demand_rate: float = 0.0
    solve_time_s: float = 0.0
    status: str = "fixed"
    policy: str = ""
    prompt_aware: bool = True
    time: float = 0.0
    version: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_size"] = {str(k): int(v) for k, v in self.batch_size.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        d = dict(d)
        d["batch_size"] = {int(k): int(v) for k, v in d["batch_size"].items()}
        d["levels"] = [int(x) for x in d["levels"]]
        d["worker_levels"] = [int(x) for x in d["worker_levels"]]
        return cls(**d)


def fixed_plan(levels: list[int], n_workers: int, level: int, batch_size: dict[int, int],
               policy: str = "") -> Plan:
    """Every worker at one level; every class routed there (Clipper-style)."""
    j = levels.index(level)
    route = [[1.0 if jj == j else 0.0 for jj in range(len(levels))] for _ in levels]
    wpl = [n_workers if jj == j else 0 for jj in range(len(levels))]
    return Plan(levels=list(levels), worker_levels=[level] * n_workers, route=route,
                batch_size=dict(batch_size), workers_per_level=wpl, policy=policy, status="fixed")


def assign_worker_levels(counts: list[int], levels: list[int], previous: list[int] | None) -> list[int]:
    """Concrete level per worker with the fewest changes from the previous plan (queued work drains)."""
    n = sum(counts)
    quota = dict(zip(levels, counts))
    out: list[int | None] = [None] * n
    if previous is not None and len(previous) == n:
        for w, lv in enumerate(previous):
            if quota.get(lv, 0) > 0:
                out[w] = lv
                quota[lv] -= 1
    rest = [lv for lv in levels for _ in range(quota[lv])]
    it = iter(rest)
    for w in range(n):
        if out[w] is None:
            out[w] = next(it)
    return [int(x) for x in out]  # type: ignore[arg-type]


def fallback_route_row(i: int, levels: list[int], q_row: np.ndarray, has_workers: np.ndarray) -> list[float]:
    """Route for a class the program sent nowhere: the cheapest level with no quality loss (≤ its K*),
    else the level with the least loss; only levels that have workers."""
    k_star = levels[i]
    cand = [j for j in range(len(levels)) if has_workers[j]]
    if not cand:
        cand = list(range(len(levels)))
    zero = [j for j in cand if levels[j] <= k_star]
    pick = max(zero, key=lambda j: levels[j]) if zero else max(cand, key=lambda j: (q_row[j], -levels[j]))
    return [1.0 if j == pick else 0.0 for j in range(len(levels))]


def _solve_program(c: np.ndarray, a: np.ndarray, row_lb: np.ndarray, row_ub: np.ndarray, col_lb: np.ndarray,
                   col_ub: np.ndarray, integrality: np.ndarray, solver: str,
                   time_limit_s: float | None) -> MipSolution:
    """Solve the program with GLPK (default, ~0.5 ms) or HiGHS through `scipy.optimize.milp` (~10–60 ms)."""
    if solver == "glpk":
        return solve_mip(c, a, row_lb, row_ub, col_lb, col_ub, integrality, MIP_REL_GAP, time_limit_s)
    if solver != "highs":
        raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    # No wall-clock limit by default: a time-limited solve would make simulations depend on machine load.
    opts = {"mip_rel_gap": MIP_REL_GAP}
    if time_limit_s is not None:
        opts["time_limit"] = time_limit_s
    cons, bnds = LinearConstraint(a, row_lb, row_ub), Bounds(col_lb, col_ub)
    # The LP relaxation first (≈ 1 ms). If its worker counts come out integral, it is also optimal for
    # the MILP (the relaxation's bound is attained), which is the common case: light load (everything at
    # K′ = 0) and overload (everything at the fastest level). Otherwise HiGHS's branch and bound.
    int_cols = integrality > 0
    res = milp(c, constraints=cons, integrality=np.zeros_like(integrality), bounds=bnds, options=dict(opts))
    if not (res.x is not None and res.status == 0
            and np.all(np.abs(res.x[int_cols] - np.rint(res.x[int_cols])) <= 1e-7)):
        res = milp(c, constraints=cons, integrality=integrality, bounds=bnds, options=opts)
    return MipSolution(res.x, int(res.status), str(res.message))


def solve_plan(demand: DemandEstimate, n_workers: int, profile: LatencyProfile, slo_s: float,
               util_target: float = 0.85, headroom: float = 1.0, prompt_aware: bool = True,
               previous: Plan | None = None, batch_caps: dict[int, int] | None = None,
               time_limit_s: float | None = None, policy: str = "", solver: str = "glpk") -> Plan:
    """Solve the controller's MILP for one period. Always returns a plan (see module docstring).

    `time_limit_s` (live controller: e.g. half the period) returns the solver's best plan so far when hit;
    `plan.status` then says so. Left None, the solve is exact and deterministic. `solver`: "glpk" or
    "highs" (`scipy.optimize.milp`); both reach the same optimum, GLPK ~20–50× sooner on this program.
    """
    t0 = time.perf_counter()
    levels = list(demand.levels)
    J = len(levels)
    caps = batch_caps or profile.batch_caps(slo_s)
    mu = np.array([caps[k] / profile.latency(k, caps[k]) for k in levels])  # req/s per worker, full batches
    d_cls = np.maximum(np.asarray(demand.rates, dtype=float), 0.0) * headroom
    q_cls = np.asarray(demand.quality, dtype=float)
    if prompt_aware:
        d, q = d_cls, q_cls
    else:  # PROTEUS: one prompt-agnostic class, mean quality per level
        tot = d_cls.sum()
        w = d_cls / tot if tot > 0 else np.full(J, 1.0 / J)
        d, q = np.array([tot]), (w[:, None] * q_cls).sum(axis=0, keepdims=True)
    C = len(d)
    nvar = J + C * J
    # Lexicographic objective in two steps. (1) The most demand the cluster can serve has a closed form:
    # every class may go to any level, so it is min(total demand, ρ · N · the best per-worker rate).
    total, cap_max = float(d.sum()), util_target * n_workers * float(mu.max())
    overload = total > cap_max * (1.0 - SERVED_SLACK)
    # (2) Maximise quality subject to serving that much: every class in full (equality rows) unless the
    # cluster is overloaded, then Σ x_ij ≥ the capacity (minus a hair; an exact equality next to the
    # capacity rows is degenerate enough to stall GLPK's simplex).
    c = np.zeros(nvar)
    c[J:] = -q.reshape(-1)
    A = np.zeros((2 + J + C, nvar))
    lb = np.full(2 + J + C, -np.inf)
    ub = np.zeros(2 + J + C)
    A[0, :J] = 1.0
    lb[0] = ub[0] = n_workers
    for j in range(J):
        A[1 + j, J + j: J + C * J: J] = 1.0  # Σ_i x_ij
        A[1 + j, j] = -util_target * mu[j]
    for i in range(C):
        A[1 + J + i, J + i * J: J + (i + 1) * J] = 1.0
        ub[1 + J + i] = d[i]
        if not overload:
            lb[1 + J + i] = d[i]
    A[1 + J + C, J:] = 1.0
    lb[1 + J + C] = cap_max * (1.0 - SERVED_SLACK) if overload else -np.inf
    ub[1 + J + C] = np.inf
    integrality = np.zeros(nvar)
    integrality[:J] = 1
    hi = np.full(nvar, np.inf)
    hi[:J] = n_workers
    sol = _solve_program(c, A, lb, ub, np.zeros(nvar), hi, integrality, solver, time_limit_s)
    if sol.x is None:  # no solution in time: every worker at the fastest level, all demand sent there
        jf = int(np.argmax(mu))
        n = np.zeros(J, dtype=int)
        n[jf] = n_workers
        x = np.zeros((C, J))
        tot = float(d.sum())
        if tot > 0:
            x[:, jf] = d * min(1.0, util_target * n_workers * mu[jf] / tot)
        status = f"fallback: {sol.message}"
    else:
        n = np.rint(sol.x[:J]).astype(int)
        x = sol.x[J:].reshape(C, J).copy()
        x[x < 1e-9] = 0.0  # solver round-off (e.g. 1e-14 req/s on a class with no demand)
        status = "optimal" if sol.status == 0 else f"status {sol.status}: {sol.message}"
    # Spread workers the program did not need: fill the most utilised level first.
    load = x.sum(axis=0)
    need = np.array([math.ceil(load[j] / (util_target * mu[j]) - 1e-9) if load[j] > 0 else 0 for j in range(J)])
    need = np.minimum(need, n)
    spare = n_workers - int(need.sum())
    n = need.copy()
    if load.sum() <= 0:
        n[0] += spare  # no demand at all: everything at the best-quality level
    else:
        for _ in range(spare):
            util = np.where(load > 0, load / (np.maximum(n, 1e-9) * mu), -1.0)
            util[(load > 0) & (n == 0)] = np.inf
            n[int(np.argmax(util))] += 1
    # Route fractions per K* class.
    has_workers = n > 0
    route: list[list[float]] = []
    for i in range(J):
        row = x[i] if prompt_aware else x[0]
        s = row.sum()
        if s > 1e-12:
            route.append((row / s).tolist())
        else:
            route.append(fallback_route_row(i, levels, q_cls[i], has_workers))
    served = float(x.sum())
    exp_q = float((q * x).sum() / served) if served > 0 else 1.0
    full_cap = mu * n
    util = np.where(full_cap > 0, load / np.maximum(full_cap, 1e-12), 0.0)
    flows = x if prompt_aware else np.array([x[0] * (d_cls[i] / max(d_cls.sum(), 1e-12)) for i in range(J)])
    worker_levels = assign_worker_levels(n.tolist(), levels, previous.worker_levels if previous else None)
    return Plan(levels=levels, worker_levels=worker_levels, route=route,
                batch_size={k: int(caps[k]) for k in levels}, workers_per_level=n.tolist(), flows=flows.tolist(),
                capacity=(util_target * full_cap).tolist(), utilisation=util.tolist(),
                expected_quality=exp_q, served_rate=served, demand_rate=float(d.sum()),
                solve_time_s=time.perf_counter() - t0, status=status, policy=policy,
                prompt_aware=prompt_aware, time=demand.time,
                version=(previous.version + 1) if previous else 1)
