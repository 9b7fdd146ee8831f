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
Σ x_ij held at that maximum, maximise Σ q_ij x_ij (expected quality, i.e. minimise 𝒟_Q). When demand
exceeds capacity the program stays feasible and serves what it can; the route fractions then describe the
served share and the dispatcher's deadline redirect handles the rest.

Solvers: GLPK's branch and bound (`scheduler.mip_glpk`, default, ~0.5 ms) or HiGHS through
`scipy.optimize.milp` (`solver="highs"`, 10–60 ms: HiGHS's root-node machinery is sized for far larger
programs). Both solve to the same relative gap and reach the same optimum (tested); GLPK is what lets the
simulator run the controller every simulated 10 s and still replay tens of thousands of requests a second.

Workers the program does not need are spread over the used levels so utilisation is evened out (more
slack for bursts). Prompt-agnostic planning (PROTEUS) is the same program over a single class whose
quality per level is the demand-weighted mean over all classes.

`solve_plan` runs in named phases: per-worker rates → classes → program → solve (or fallback) → spread
spare workers → route fractions → plan. The `Plan` is plain data and JSON-serialisable
(`to_dict`/`from_dict`): the live system stores it. `Plan.status` is a `PlanStatus`; `Plan.adoptable` says
whether the live controller may serve on it.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .demand import DemandEstimate
from .mip_glpk import MipSolution, solve_mip
from .profiles import LatencyProfile

SOLVERS: tuple[str, ...] = ("glpk", "highs")
MIP_REL_GAP = 1e-5  # on the quality objective alone: ≈ 1e-5 relative error in expected quality
SERVED_SLACK = 1e-6  # relative slack on "serve the maximum" under overload (well above solver tolerances)


class PlanStatus(enum.StrEnum):
    """How a plan came about. The solver's own words, if any, are in `Plan.solver_message`."""

    OPTIMAL = "optimal"  # the solver proved optimality (within MIP_REL_GAP)
    TIME_LIMIT = "time_limit"  # stopped at its time limit (or another non-zero status) with a feasible
    # incumbent: a valid plan, perhaps not the best one
    FALLBACK = "fallback"  # no solution at all: the emergency plan, every worker at the fastest level
    FIXED = "fixed"  # a policy without a controller (Clipper, NIRVANA)
    MANUAL = "manual"  # an operator's layout

    @classmethod
    def parse(cls, text: str) -> tuple[PlanStatus, str]:
        """A stored status → (status, solver message); also reads the free text older versions stored
        ("optimal", "fixed", "manual", "fallback: <message>", "status <n>: <message>")."""
        if isinstance(text, cls):
            return text, ""
        head, _, message = str(text).partition(":")
        head, message = head.strip(), message.strip()
        if head.startswith("status "):  # a non-zero solver status that still returned a solution
            return cls.TIME_LIMIT, message
        return cls(head), message


@dataclass
class Plan:
    """A controller decision. Classes (K*) and levels (K′) are both indexed by `levels`."""

    levels: list[int]
    worker_levels: list[int]  # level of each worker, len = cluster size
    route: list[list[float]]  # route[i][j]: share of class levels[i] sent to levels[j]
    batch_size: dict[int, int]  # batch size per level (the cap; dispatch may use 1)
    workers_per_level: list[int] = field(default_factory=list)
    flows: list[list[float]] = field(default_factory=list)  # flows[i][j]: planned req/s of class i at level j
    capacity: list[float] = field(default_factory=list)  # req/s per level at the utilisation target
    utilisation: list[float] = field(default_factory=list)  # planned load / full capacity per level
    expected_quality: float = 1.0
    served_rate: float = 0.0
    demand_rate: float = 0.0
    solve_time_s: float = 0.0
    status: PlanStatus = PlanStatus.FIXED
    policy: str = ""
    prompt_aware: bool = True
    time: float = 0.0
    version: int = 0
    solver_message: str = ""  # the solver's text (e.g. why it stopped); "" without a solver

    def __post_init__(self) -> None:
        if not isinstance(self.status, PlanStatus):  # a plain string, e.g. status="manual"
            self.status, message = PlanStatus.parse(self.status)
            self.solver_message = self.solver_message or message

    @property
    def adoptable(self) -> bool:
        """Whether the live controller may serve on this plan: False only for a FALLBACK plan.

        Decision: a fallback plan is never adopted by the live controller — it keeps the previous plan
        and records the solve as failed — because the fallback puts every worker at the fastest level
        (Clipper-HT's quality) on the strength of a solver failure rather than of demand. (The simulator
        has no previous plan to keep and no failed solves in practice; it uses what the policy returns.)
        """
        return self.status is not PlanStatus.FALLBACK

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        d["batch_size"] = {str(k): int(v) for k, v in self.batch_size.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """Inverse of `to_dict`; also reads rows stored by older versions (free-text status, no
        solver_message)."""
        d = dict(d)
        d["batch_size"] = {int(k): int(v) for k, v in d["batch_size"].items()}
        d["levels"] = [int(x) for x in d["levels"]]
        d["worker_levels"] = [int(x) for x in d["worker_levels"]]
        if "status" in d:
            d["status"], message = PlanStatus.parse(d["status"])
            d["solver_message"] = d.get("solver_message") or message
        return cls(**d)


def fixed_plan(levels: list[int], n_workers: int, level: int, batch_size: dict[int, int], policy: str = "") -> Plan:
    """Every worker at one level; every class routed there (Clipper-style)."""
    j = levels.index(level)
    route = [[1.0 if jj == j else 0.0 for jj in range(len(levels))] for _ in levels]
    workers_per_level = [n_workers if jj == j else 0 for jj in range(len(levels))]
    return Plan(
        levels=list(levels),
        worker_levels=[level] * n_workers,
        route=route,
        batch_size=dict(batch_size),
        workers_per_level=workers_per_level,
        policy=policy,
        status=PlanStatus.FIXED,
    )


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


@dataclass
class _Program:
    """The controller's MILP in `scipy.optimize.milp` form: min c·x, row_lb ≤ A x ≤ row_ub, col_lb ≤ x ≤ col_ub.
    Columns: n_j (J integer worker counts), then x_ij (C × J routed rates, row-major by class)."""

    c: np.ndarray
    A: np.ndarray
    row_lb: np.ndarray
    row_ub: np.ndarray
    col_lb: np.ndarray
    col_ub: np.ndarray
    integrality: np.ndarray


def _solve_program(program: _Program, solver: str, time_limit_s: float | None) -> MipSolution:
    """Solve the program with GLPK (default, ~0.5 ms) or HiGHS through `scipy.optimize.milp` (~10–60 ms)."""
    c, a, row_lb, row_ub = program.c, program.A, program.row_lb, program.row_ub
    col_lb, col_ub, integrality = program.col_lb, program.col_ub, program.integrality
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
    if not (
        res.x is not None and res.status == 0 and np.all(np.abs(res.x[int_cols] - np.rint(res.x[int_cols])) <= 1e-7)
    ):
        res = milp(c, constraints=cons, integrality=integrality, bounds=bnds, options=opts)
    return MipSolution(res.x, int(res.status), str(res.message))


@dataclass
class _Solved:
    """Workers per level and class-to-level rates taken from the solver (or the fallback), with status."""

    workers_per_level: np.ndarray  # n_j, integers
    flows: np.ndarray  # x_ij, (classes × levels) req/s
    status: PlanStatus
    solver_message: str


def solve_plan(
    demand: DemandEstimate,
    n_workers: int,
    profile: LatencyProfile,
    slo_s: float,
    util_target: float = 0.85,
    headroom: float = 1.0,
    prompt_aware: bool = True,
    previous: Plan | None = None,
    batch_caps: dict[int, int] | None = None,
    time_limit_s: float | None = None,
    policy: str = "",
    solver: str = "glpk",
) -> Plan:
    """Solve the controller's MILP for one period. Always returns a plan (see module docstring).

    `time_limit_s` (live controller: e.g. half the period) returns the solver's best plan so far when hit
    (`PlanStatus.TIME_LIMIT`), or the fallback plan when it has none (`PlanStatus.FALLBACK`, not
    `adoptable`). Left None, the solve is exact and deterministic. `solver`: "glpk" or "highs"
    (`scipy.optimize.milp`); both reach the same optimum, GLPK ~20–50× sooner on this program.
    """
    started = time.perf_counter()
    levels = list(demand.levels)
    caps = batch_caps or profile.batch_caps(slo_s)
    mu = _per_worker_rates(levels, profile, caps)
    class_demand, class_quality = _class_demand_and_quality(demand, headroom)
    d, q = _classes(class_demand, class_quality, prompt_aware)
    program = _build_program(d, q, mu, n_workers, util_target)
    solution = _solve_program(program, solver, time_limit_s)
    solved = _solution_or_fallback(solution, d, mu, n_workers, util_target)
    level_load = solved.flows.sum(axis=0)
    workers_per_level = _spread_spare_workers(solved.workers_per_level, level_load, mu, n_workers, util_target)
    route = _route_fractions(solved.flows, workers_per_level > 0, levels, class_quality, prompt_aware)
    return _assemble_plan(
        solved,
        workers_per_level,
        level_load,
        route,
        levels=levels,
        caps=caps,
        mu=mu,
        d=d,
        q=q,
        class_demand=class_demand,
        util_target=util_target,
        prompt_aware=prompt_aware,
        previous=previous,
        policy=policy,
        now=demand.time,
        started=started,
    )


def _per_worker_rates(levels: list[int], profile: LatencyProfile, caps: dict[int, int]) -> np.ndarray:
    """μ_j: req/s one worker serves at level j with full batches of the cap."""
    return np.array([caps[k] / profile.latency(k, caps[k]) for k in levels])


def _class_demand_and_quality(demand: DemandEstimate, headroom: float) -> tuple[np.ndarray, np.ndarray]:
    """Headroom-scaled demand per K* class (negatives clipped) and the class × level quality matrix."""
    class_demand = np.maximum(np.asarray(demand.rates, dtype=float), 0.0) * headroom
    class_quality = np.asarray(demand.quality, dtype=float)
    return class_demand, class_quality


def _classes(class_demand: np.ndarray, class_quality: np.ndarray, prompt_aware: bool) -> tuple[np.ndarray, np.ndarray]:
    """The program's classes (d_i, q_ij): the K* classes, or PROTEUS's single prompt-agnostic class."""
    if prompt_aware:
        return class_demand, class_quality
    # PROTEUS: one class, its quality per level the demand-weighted mean over the K* classes
    total = class_demand.sum()
    n_classes = class_demand.size
    weights = class_demand / total if total > 0 else np.full(n_classes, 1.0 / n_classes)
    return np.array([total]), (weights[:, None] * class_quality).sum(axis=0, keepdims=True)


def _build_program(d: np.ndarray, q: np.ndarray, mu: np.ndarray, n_workers: int, util_target: float) -> _Program:
    """The MILP of the module docstring, with the "serve the most" step in closed form."""
    J, C = mu.size, d.size
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
    A[0, :J] = 1.0  # Σ_j n_j = N
    lb[0] = ub[0] = n_workers
    for j in range(J):  # capacity: Σ_i x_ij − ρ μ_j n_j ≤ 0
        A[1 + j, J + j : J + C * J : J] = 1.0
        A[1 + j, j] = -util_target * mu[j]
    for i in range(C):  # demand: Σ_j x_ij ≤ d_i (= d_i unless overloaded)
        A[1 + J + i, J + i * J : J + (i + 1) * J] = 1.0
        ub[1 + J + i] = d[i]
        if not overload:
            lb[1 + J + i] = d[i]
    A[1 + J + C, J:] = 1.0  # served: Σ x_ij ≥ the capacity when overloaded
    lb[1 + J + C] = cap_max * (1.0 - SERVED_SLACK) if overload else -np.inf
    ub[1 + J + C] = np.inf
    integrality = np.zeros(nvar)
    integrality[:J] = 1
    hi = np.full(nvar, np.inf)
    hi[:J] = n_workers
    return _Program(c, A, lb, ub, np.zeros(nvar), hi, integrality)


def _solution_or_fallback(
    solution: MipSolution, d: np.ndarray, mu: np.ndarray, n_workers: int, util_target: float
) -> _Solved:
    """Workers and flows from the solver, or the fallback (every worker at the fastest level) if it has none."""
    J, C = mu.size, d.size
    if solution.x is None:  # no solution in time: every worker at the fastest level, all demand sent there
        fastest = int(np.argmax(mu))
        counts = np.zeros(J, dtype=int)
        counts[fastest] = n_workers
        flows = np.zeros((C, J))
        total = float(d.sum())
        if total > 0:
            flows[:, fastest] = d * min(1.0, util_target * n_workers * mu[fastest] / total)
        return _Solved(counts, flows, PlanStatus.FALLBACK, solution.message)
    counts = np.rint(solution.x[:J]).astype(int)
    flows = solution.x[J:].reshape(C, J).copy()
    flows[flows < 1e-9] = 0.0  # solver round-off (e.g. 1e-14 req/s on a class with no demand)
    status = PlanStatus.OPTIMAL if solution.status == 0 else PlanStatus.TIME_LIMIT
    return _Solved(counts, flows, status, solution.message)


def _spread_spare_workers(
    counts: np.ndarray, level_load: np.ndarray, mu: np.ndarray, n_workers: int, util_target: float
) -> np.ndarray:
    """Keep the workers each level needs; give the rest one by one to the most utilised used level."""
    J = mu.size
    need = np.array(
        [math.ceil(level_load[j] / (util_target * mu[j]) - 1e-9) if level_load[j] > 0 else 0 for j in range(J)]
    )
    need = np.minimum(need, counts)
    spare = n_workers - int(need.sum())
    counts = need.copy()
    if level_load.sum() <= 0:
        counts[0] += spare  # no demand at all: everything at the best-quality level
    else:
        for _ in range(spare):
            util = np.where(level_load > 0, level_load / (np.maximum(counts, 1e-9) * mu), -1.0)
            util[(level_load > 0) & (counts == 0)] = np.inf
            counts[int(np.argmax(util))] += 1
    return counts


def _route_fractions(
    flows: np.ndarray, has_workers: np.ndarray, levels: list[int], class_quality: np.ndarray, prompt_aware: bool
) -> list[list[float]]:
    """Route fractions per K* class: its flows normalised, or `fallback_route_row` when it has none."""
    route: list[list[float]] = []
    for i in range(len(levels)):
        row = flows[i] if prompt_aware else flows[0]
        total = row.sum()
        if total > 1e-12:
            route.append((row / total).tolist())
        else:
            route.append(fallback_route_row(i, levels, class_quality[i], has_workers))
    return route


def _assemble_plan(
    solved: _Solved,
    workers_per_level: np.ndarray,
    level_load: np.ndarray,
    route: list[list[float]],
    *,
    levels: list[int],
    caps: dict[int, int],
    mu: np.ndarray,
    d: np.ndarray,
    q: np.ndarray,
    class_demand: np.ndarray,
    util_target: float,
    prompt_aware: bool,
    previous: Plan | None,
    policy: str,
    now: float,
    started: float,
) -> Plan:
    """The `Plan`: per-worker levels (fewest changes from `previous`), rates, utilisation and quality."""
    flows = solved.flows
    served = float(flows.sum())
    expected_quality = float((q * flows).sum() / served) if served > 0 else 1.0
    full_capacity = mu * workers_per_level
    utilisation = np.where(full_capacity > 0, level_load / np.maximum(full_capacity, 1e-12), 0.0)
    if not prompt_aware:  # the single class's flows, shared out over the K* classes by their demand
        flows = np.array([flows[0] * (class_demand[i] / max(class_demand.sum(), 1e-12)) for i in range(len(levels))])
    worker_levels = assign_worker_levels(
        workers_per_level.tolist(), levels, previous.worker_levels if previous else None
    )
    return Plan(
        levels=levels,
        worker_levels=worker_levels,
        route=route,
        batch_size={k: int(caps[k]) for k in levels},
        workers_per_level=workers_per_level.tolist(),
        flows=flows.tolist(),
        capacity=(util_target * full_capacity).tolist(),
        utilisation=utilisation.tolist(),
        expected_quality=expected_quality,
        served_rate=served,
        demand_rate=float(d.sum()),
        solve_time_s=time.perf_counter() - started,
        status=solved.status,
        solver_message=solved.solver_message,
        policy=policy,
        prompt_aware=prompt_aware,
        time=now,
        version=(previous.version + 1) if previous else 1,
    )
