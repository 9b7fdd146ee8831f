"""The hindsight bound (issue 13, item 6): how much on-time quality a workload had to offer, offline.

`hindsight(config, arrivals, embeddings, warm)` knows every arrival and every prompt in advance and
returns a `SimResult` (a `HindsightResult`) that the metrics tables treat like a policy run, so each table
shows the headroom above the online policies. It is an upper bound, not a schedule: no real scheduler
needs to reach it.

**Similarity, optimistic by construction.** For request i and level k > 0, s_i^k is the similarity of the
nearest prompt that could hold level k at i's arrival in *some* run: a warm prompt (warm entries hold
every level), or an earlier request j that could have finished by then, a_j + λ_k ≤ a_i, where λ_k is the
fastest run (any batch size) of any level that leaves level k in the cache — the levels below k with the
simulator's default `resumed_levels="above"` (a request adds the levels above its K′), every level with
"all" — as if each such request had been served that fast, and nothing evicted. In a run, the nearest
cached neighbour of i is a warm prompt or a request that finished by a_i (it entered the cache when its
batch ended), and if it holds level k it was served below k; so wherever a run serves i at k > 0 from
similarity s, s ≤ s_i^k. Q is non-decreasing in s (the default yardstick; a measured table is replaced by
its upper envelope over lower similarities), so the run's Q(s, k) ≤ Q(s_i^k, k). A request with no
such prompt at level k cannot use k; level 0 (Q = 1) is always open. (Still optimistic: a request
served at K′ ≥ k in a run adds no level k, a bound cannot know which were.)

**Formulation (an LP, HiGHS via scipy).** Time is cut into slots of δ = SLO / `slots_per_slo`; request i
may place work only in the slots that meet its window [a_i, a_i + SLO]. Variables: y[i, k] ∈ [0, 1], the
fraction of request i served on time at level k (levels with a neighbour only, and only those that can
finish within the SLO at all); X[g, τ] ≥ 0, the work (worker-seconds) of the requests of group g (same
window slots) done in slot τ. Per-request work at level k is the cheapest that can still be on time,

    w_k = min { L(k, b) / b : b ≥ 1, L(k, b) ≤ SLO }          (batch_rule "slo", the default)

(batch_rule "caps" uses b = the batch cap every controller policy plans with: a tighter bound, valid
only for runs that respect the caps; Clipper's AIMD does not.) Constraints:

    Σ_k y[i, k] ≤ 1                                   every request
    Σ_{i ∈ g} Σ_k w_k y[i, k] ≤ Σ_τ X[g, τ]           every group: its work fits in its slots
    Σ_g X[g, τ] ≤ N δ                                 every slot: N workers
    Σ_{i,k} y[i, k] = M                               the on-time count (stage 2)

Stage 1 finds M* = max Σ y (the most requests that can be on time; each at its cheapest level).
Stage 2 fixes Σ y = M = min(M*, (1 − v)·n) for a violation budget v (None: M = M*, the fewest
violations) and maximises Σ y[i, k] Q(s_i^k, k). The bound's violation ratio is 1 − M/n and its quality
Σ y Q / M. At a fixed on-time count, the mean over on-time requests is highest when exactly M are served
(dropping part of a request whose Q is at most the mean never lowers the mean), so maximising the sum
with the count fixed maximises the mean.

**Proof sketch (why it bounds every simulator run).** Take any run P with M_P on-time requests. Each
on-time request i ran at level k in a batch of b that occupied one worker for L(k, b) inside [a_i, d_i]
(a batch starts after its requests arrive), so L(k, b) ≤ SLO and i's share L(k, b)/b ≥ w_k; spread that
share evenly over the batch's run: it falls in i's window, hence in its slots, and per slot the shares of
all on-time requests are at most the N workers' busy time ≤ N δ. So y[i, k] = 1 for i on time in P (0
otherwise), with X the shares scaled down by w_k b / L(k, b) ≤ 1, is feasible: M* ≥ M_P (the bound's
fewest violations are at most any run's), and at v = P's violation ratio (M = M_P) the optimum is
≥ Σ_{i on time in P} Q(s_i^{k_i}, k_i) ≥ P's on-time quality sum, by the similarity argument above. Hence
the bound's quality at P's violation ratio ≥ P's **on-time quality** (mean Q over requests finished by
their deadline). DESIGN §7's effective quality also averages P's *late* completions; the bound never
serves late (a late request is a violation anyway and would only take capacity), so for a run with many
late completions of high Q the two can differ; for the controller policies (a few late) they agree to
the 4th decimal. What the relaxation gives away (so the bound is loose, never wrong): fractional
requests, fluid work (a request's share may spread over workers and over the slot before its arrival or
after its deadline, up to one slot each side), no batch granularity or queueing, and the optimistic cache.

**The SimResult.** `summary()` reports the LP's exact violation ratio and quality (`bound` holds them with
the LP's size and timings). The per-request arrays, for the other columns and the plots, round the
fractional solution: request i is on time iff Σ_k y[i, k] ≥ 1/2, at quality Σ_k y Q / Σ_k y and the level
with the largest share; its finish is the end of its group's last used slot, clipped to
[a_i + L(k, b), deadline]; the others are shown as dropped (never served); worker −1, batch b of w_k.

Performance: variables ≈ n × levels + groups × (slots_per_slo + 1), rows ≈ n + groups + slots; a level
below the upper concave hull of a request's (w_k, Q) points is left out (a mix of two hull levels does
at least as well with no more work), which keeps the optimum. The reference run's 2,928 requests take
about 0.5 s; 20,000 requests under heavy load 10–20 s (2 shared cores).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from .cache_model import ApproxCache
from .interface import SchedulerConfig
from .quality import QualityModel
from .simulator import SimResult

HINDSIGHT_NAME = "hindsight"
BATCH_RULES = ("slo", "caps")
# The names a runner (the simulator CLI, the sweep) accepts as a "policy", and the batch rule of each.
HINDSIGHT_NAMES: dict[str, str] = {"hindsight": "slo", "hindsight_caps": "caps"}
_ALIGN_TOL = 1e-9  # arrivals within this share of a slot of its start count as aligned (float rounding)
_MAX_BATCH_SCAN = 4096


@dataclass
class HindsightResult(SimResult):
    """A SimResult whose summary reports the bound's exact (fractional) violation ratio and quality."""

    bound: dict = field(default_factory=dict)

    def summary(self, levels: list[int], window_s: float) -> dict:
        metrics = super().summary(levels, window_s)
        metrics["slo_violation_ratio"] = self.bound["violation_ratio"]
        metrics["effective_quality"] = self.bound["quality"]
        metrics["bound"] = dict(self.bound)
        return metrics


def hindsight(
    config: SchedulerConfig,
    arrivals: np.ndarray,
    embeddings: np.ndarray,
    warm: int,
    cache: ApproxCache | None = None,
    seed: int = 0,
    violation_budget: float | None = None,
    slots_per_slo: int = 8,
    batch_rule: str = "slo",
    resumed_levels: str | None = None,
    progress=None,
) -> HindsightResult:
    """The hindsight bound as a policy-like run (see the module docstring).

    `violation_budget`: the violation ratio to spend (the bound serves (1 − v)·n on time, or as many as
    possible if fewer); None: the fewest violations possible. `cache`: an ApproxCache built on the same
    embeddings with query_start = warm, to reuse its neighbour lists (its state is not touched). `seed` is
    accepted for a uniform call signature; the bound is deterministic. `progress`: a tqdm-like bar,
    advanced by len(arrivals) when done.
    """
    del seed
    bound = HindsightBound(config, arrivals, embeddings, warm, cache, slots_per_slo, batch_rule, resumed_levels)
    result = bound.result(violation_budget)
    if progress is not None:
        progress.update(int(np.asarray(arrivals).size))
    return result


def on_time_quality(result: SimResult) -> float:
    """Mean Q over the requests finished by their deadline (what the bound dominates; see the docstring)."""
    if isinstance(result, HindsightResult):
        return float(result.bound["quality"])
    on_time = np.isfinite(result.finish) & (result.finish <= result.deadline + 1e-9)
    return float(result.quality[on_time].mean()) if on_time.any() else float("nan")


def neighbour_lags(config: SchedulerConfig, resumed_levels: str = "above") -> np.ndarray:
    """Per level k: the least time from a request's arrival until its cache entry can hold level k — the
    fastest run of any level it could have been served at (below k with resumed levels "above", where a
    request adds the levels above its K′; any level with "all"). 0 for level 0 (no latent needed)."""
    if resumed_levels not in ("above", "all"):
        raise ValueError("resumed_levels must be 'above' or 'all'")
    profile = config.profile
    fastest = {kp: min(profile.latency(kp, b) for b in range(1, profile.max_batch + 1)) for kp in config.levels}
    lags = np.zeros(len(config.levels))
    for j, k in enumerate(config.levels):
        if k > 0:
            below = [v for kp, v in fastest.items() if resumed_levels == "all" or kp < k]
            lags[j] = min(below) if below else np.inf
    return lags


def level_similarity(
    embeddings: np.ndarray,
    warm: int,
    arrivals: np.ndarray,
    lags: np.ndarray,
    cache: ApproxCache | None = None,
    block: int = 512,
) -> np.ndarray:
    """(requests × levels): for request i and level k, the cosine similarity to the nearest prompt that can
    hold level k at i's arrival in *some* run — a warm prompt, or an earlier request j with
    a_j + lag_k ≤ a_i (NaN: none; column of a level with lag 0 unused). With `cache` (built on the same
    embeddings, query_start = warm) its precomputed candidate lists are read instead of a matrix product."""
    arrivals = np.asarray(arrivals, dtype=np.float64)
    n = int(arrivals.size)
    out = np.full((n, lags.size), np.nan)
    if n == 0:
        return out
    emb = np.ascontiguousarray(embeddings[: warm + n], dtype=np.float32)
    if cache is not None and (cache.query_start != warm or cache.n < warm + n):
        raise ValueError("cache must be built on the same embeddings with query_start = warm")
    cols = [j for j in range(lags.size) if lags[j] > 0 and np.isfinite(lags[j])]
    # ends[c][i]: how many requests (from index warm on) could have finished by a_i for level column c
    ends = {
        c: np.minimum(np.searchsorted(arrivals, arrivals - lags[c] + 1e-9, side="right"), np.arange(n)) for c in cols
    }
    if cache is not None:
        warm_best = cache.warm_sim[:n, 0].astype(np.float64)
        req_best = {c: _from_lists(cache, emb, warm, ends[c]) for c in cols}
    else:
        warm_best = np.full(n, -np.inf)
        req_best = {c: np.full(n, -np.inf) for c in cols}
        for a in range(0, n, block):
            b = min(n, a + block)
            q = emb[warm + a : warm + b]
            if warm:
                warm_best[a:b] = (q @ emb[:warm].T).max(axis=1)
            hi = max((int(ends[c][b - 1]) for c in cols), default=0)  # ends grow with i
            if hi == 0:
                continue
            sims = q @ emb[warm : warm + hi].T
            lo = min(int(ends[c][a]) for c in cols)  # columns below lo are eligible for every row and level
            head = sims[:, :lo].max(axis=1) if lo else np.full(b - a, -np.inf)
            col = np.arange(lo, hi)[None, :]
            for c in cols:
                tail = np.where(col < ends[c][a:b, None], sims[:, lo:], -np.inf)
                req_best[c][a:b] = np.maximum(head, tail.max(axis=1, initial=-np.inf))
    for c in cols:
        best = np.maximum(warm_best, req_best[c])
        out[:, c] = np.where(np.isfinite(best), best, np.nan)
    return out


def _from_lists(cache: ApproxCache, emb: np.ndarray, warm: int, ends: np.ndarray) -> np.ndarray:
    """Best similarity among requests [warm, warm + ends[i]) from the cache's top-m lists (best first): the
    first eligible entry is the best eligible one; a full list with none eligible is scanned exactly."""
    n = ends.size
    idx, sim = cache.req_idx[:n], cache.req_sim[:n]
    ok = idx < (warm + ends)[:, None]
    p = ok.argmax(axis=1)
    rows = np.arange(n)
    found = ok[rows, p]
    best = np.where(found, sim[rows, p].astype(np.float64), -np.inf)
    for i in np.flatnonzero(~found & (ends > 0) & np.isfinite(sim[:, -1])):
        best[i] = float((emb[warm : warm + ends[i]] @ emb[warm + i]).max())
    return best


def on_time_work(config: SchedulerConfig, batch_rule: str = "slo") -> tuple[np.ndarray, np.ndarray]:
    """Per level: the least work (worker-seconds) per request that can still finish within the SLO, and the
    batch size giving it (inf / 0 where even a batch of 1 is slower than the SLO)."""
    if batch_rule not in BATCH_RULES:
        raise ValueError(f"batch_rule must be one of {BATCH_RULES}")
    profile, slo = config.profile, config.slo_s
    caps = config.batch_caps()
    work = np.full(len(config.levels), np.inf)
    batch = np.zeros(len(config.levels), dtype=np.int64)
    for j, k in enumerate(config.levels):
        sizes = [caps[k]] if batch_rule == "caps" else range(1, _MAX_BATCH_SCAN + 1)
        for b in sizes:
            lat = profile.latency(k, b)
            if lat > slo + 1e-12:
                if batch_rule == "slo" and b > profile.max_batch:
                    break  # linear beyond the table: only slower from here
                continue
            if lat / b < work[j]:
                work[j], batch[j] = lat / b, b
    return work, batch


def quality_envelope(qm: QualityModel, s: np.ndarray, levels: list[int]) -> np.ndarray:
    """Q per request (rows) and level (columns) from per-level similarities `s` (same shape; NaN: no
    neighbour can hold that level, so it cannot be used); level 0 is always 1. A measured table is replaced
    by its upper envelope over lower similarities, max_{s' ≤ s} Q(s', k), so that a higher similarity never
    lowers Q (the bound needs that); the default model already is monotone."""
    s = np.asarray(s, dtype=np.float64)
    q = np.full(s.shape, np.nan)
    env = None
    if qm.table_values is None:
        if any(qm.g_of(k) < 0 for k in levels):
            raise ValueError("the hindsight bound needs Q non-decreasing in s (g(K′) ≥ 0)")
    else:
        rows = np.array([[np.interp(k, qm.table_levels, r) for k in levels] for r in qm.table_values])
        env = np.maximum.accumulate(rows, axis=0)
    for j, k in enumerate(levels):
        col = s[:, j]
        if k == 0:
            q[:, j] = 1.0
        elif env is None:
            q[:, j] = np.maximum(qm.floor, 1.0 - qm.g_of(k) * (1.0 - col))  # NaN stays NaN
        else:
            idx = np.searchsorted(qm.table_edges, np.nan_to_num(col, nan=-np.inf), side="right") - 1
            q[:, j] = np.where(np.isfinite(col), env[np.clip(idx, 0, len(qm.table_edges) - 1), j], np.nan)
    return q


def _on_upper_hull(q: np.ndarray, work: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Per request, the usable levels on the upper concave hull of (work, Q): any other level is beaten by a
    mix of two hull levels with no more work and no lower Q, so dropping its variable keeps the LP's optimum
    (and fewer variables solve faster). Ties in work and Q keep the first level."""
    keep = usable.copy()
    order = [j for j in np.argsort(work, kind="stable") if np.isfinite(work[j])]
    for pos, j in enumerate(order):
        before, after = order[:pos], order[pos + 1 :]
        for i in before:  # a cheaper (or as cheap) level with at least the same Q dominates j
            keep[:, j] &= ~(usable[:, i] & (q[:, i] >= q[:, j]))
        for i in before:
            if work[i] >= work[j]:
                continue
            for k in after:
                if work[k] <= work[j]:
                    continue
                lam = (work[j] - work[i]) / (work[k] - work[i])
                below = q[:, j] < q[:, i] + lam * (q[:, k] - q[:, i]) - 1e-12
                keep[:, j] &= ~(usable[:, i] & usable[:, k] & below)
    return keep


class HindsightBound:
    """The bound's LP for one workload: built and solved for the fewest violations once; `result(v)` then
    solves the quality stage for any violation budget v (the sweep can trace the whole frontier)."""

    def __init__(
        self,
        config: SchedulerConfig,
        arrivals: np.ndarray,
        embeddings: np.ndarray,
        warm: int,
        cache: ApproxCache | None = None,
        slots_per_slo: int = 8,
        batch_rule: str = "slo",
        resumed_levels: str | None = None,
    ) -> None:
        started = time.perf_counter()
        self.config = config
        self.levels = list(config.levels)
        self.arrivals = np.asarray(arrivals, dtype=np.float64)
        n = self.n = int(self.arrivals.size)
        if n and np.any(np.diff(self.arrivals) < 0):
            raise ValueError("arrivals must be sorted")
        if embeddings.shape[0] < warm + n:
            raise ValueError(f"need {warm + n} prompts (warm {warm} + {n} requests), have {embeddings.shape[0]}")
        if slots_per_slo < 1:
            raise ValueError("slots_per_slo must be ≥ 1")
        self.slots_per_slo, self.batch_rule = int(slots_per_slo), batch_rule
        if resumed_levels is None:
            resumed_levels = cache.resumed_levels if cache is not None else "above"
        self.resumed_levels = resumed_levels
        self.lags = neighbour_lags(config, resumed_levels)
        self.level_sim = level_similarity(embeddings, warm, self.arrivals, self.lags, cache)
        self.q = quality_envelope(config.quality, self.level_sim, self.levels)
        self.work, self.batch = on_time_work(config, batch_rule)
        # the most generous of the per-level similarities (the shortest lag), for the SimResult
        self.similarity = np.fmax.reduce(self.level_sim, axis=1) if n else np.zeros(0)
        self.similarity_s = time.perf_counter() - started
        self._build()
        self._solve_count()
        self.build_s = time.perf_counter() - started

    # -- the program --------------------------------------------------------------------------------
    def _build(self) -> None:
        """Slots, groups, the y variables (usable (request, level) pairs) and the X variables."""
        n, m, slo = self.n, self.slots_per_slo, self.config.slo_s
        self.slot_s = delta = slo / m
        pos = self.arrivals / delta
        first = np.floor(pos).astype(np.int64)
        aligned = (pos - first) < _ALIGN_TOL
        last = first + m - aligned.astype(np.int64)  # window [a, a + mδ] meets m slots if aligned, else m + 1
        self.t0_slot = int(first.min()) if n else 0
        first -= self.t0_slot
        last -= self.t0_slot
        self.n_slots = int(last.max()) + 1 if n else 0
        keys = first * 2 + aligned.astype(np.int64)
        uniq, self.group = np.unique(keys, return_inverse=True)
        self.n_groups = int(uniq.size)
        g_first = uniq // 2
        g_len = m + 1 - (uniq % 2)
        # X variables: one per (group, slot it meets)
        self.x_group = np.repeat(np.arange(self.n_groups), g_len)
        self.x_slot = np.repeat(g_first, g_len) + (
            np.arange(self.x_group.size) - np.repeat(np.cumsum(g_len) - g_len, g_len)
        )
        usable = np.isfinite(self.q) & np.isfinite(self.work)[None, :]
        usable &= _on_upper_hull(self.q, self.work, usable)
        self.y_req, self.y_lvl = np.nonzero(usable)
        self.y_q = self.q[self.y_req, self.y_lvl]
        self.y_work = self.work[self.y_lvl]
        self.cheapest = np.where(usable, self.work[None, :], np.inf).min(axis=1) if n else np.zeros(0)
        self.capacity = self.config.n_workers * delta

    def _x_block(self, row_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The X columns of the group rows (−1) and slot rows (+1), from `row_offset`: rows, cols (from 0),
        values, and the right-hand sides of those rows (0 per group, N δ per slot)."""
        nx = self.x_group.size
        rows = np.concatenate([row_offset + self.x_group, row_offset + self.n_groups + self.x_slot])
        cols = np.concatenate([np.arange(nx), np.arange(nx)])
        vals = np.concatenate([-np.ones(nx), np.ones(nx)])
        b = np.concatenate([np.zeros(self.n_groups), np.full(self.n_slots, self.capacity)])
        return rows, cols, vals, b

    def _solve_count(self) -> None:
        """Stage 1: the most requests on time, each at its cheapest usable level (u_i ∈ [0, 1])."""
        n = self.n
        started = time.perf_counter()
        if n == 0:
            self.max_on_time, self.count_solve_s = 0.0, 0.0
            return
        ok = np.isfinite(self.cheapest)
        req = np.flatnonzero(ok)
        xr, xc, xv, xb = self._x_block(0)
        rows = np.concatenate([self.group[req], xr])
        cols = np.concatenate([np.arange(req.size), req.size + xc])
        vals = np.concatenate([self.cheapest[req], xv])
        nvar = req.size + self.x_group.size
        a = sparse.csr_matrix((vals, (rows, cols)), shape=(self.n_groups + self.n_slots, nvar))
        c = np.concatenate([-np.ones(req.size), np.zeros(self.x_group.size)])
        bounds = np.column_stack(
            [np.zeros(nvar), np.concatenate([np.ones(req.size), np.full(nvar - req.size, np.inf)])]
        )
        res = linprog(c, A_ub=a, b_ub=xb, bounds=bounds, method="highs")
        if res.status != 0:
            raise RuntimeError(f"hindsight stage 1: {res.message}")
        self.max_on_time = float(-res.fun)
        self.count_solve_s = time.perf_counter() - started

    @property
    def min_violation_ratio(self) -> float:
        """The fewest violations any run can have (under the relaxation), as a ratio."""
        return max(0.0, 1.0 - self.max_on_time / self.n) if self.n else 0.0

    def quality_at(self, violation_ratio: float | None = None) -> float:
        """The bound's quality (mean Q over on-time requests) at a violation ratio (None: the fewest) — the
        headroom yardstick for a run with that violation ratio."""
        sol = self.solve(violation_ratio)
        return sol["quality_sum"] / sol["on_time"] if sol["on_time"] > 0 else float("nan")

    def solve(self, violation_budget: float | None = None) -> dict:
        """Stage 2 for a violation budget: y (per usable pair), X, the on-time count M and Σ y Q."""
        n = self.n
        started = time.perf_counter()
        target = self.max_on_time
        if violation_budget is not None:
            target = min(target, max(0.0, (1.0 - float(violation_budget)) * n))
        ny, nx = self.y_req.size, self.x_group.size
        if n == 0 or target <= 0 or ny == 0:
            return {"y": np.zeros(ny), "x": np.zeros(nx), "on_time": 0.0, "quality_sum": 0.0, "solve_s": 0.0}
        xr, xc, xv, xb = self._x_block(n)
        tol = 1e-7 * max(1.0, target)
        count_row = n + self.n_groups + self.n_slots
        rows = np.concatenate(
            [self.y_req, n + self.group[self.y_req], xr, np.full(ny, count_row), np.full(ny, count_row + 1)]
        )
        cols = np.concatenate([np.arange(ny), np.arange(ny), ny + xc, np.arange(ny), np.arange(ny)])
        vals = np.concatenate([np.ones(ny), self.y_work, xv, np.ones(ny), -np.ones(ny)])
        a = sparse.csr_matrix((vals, (rows, cols)), shape=(count_row + 2, ny + nx))
        b = np.concatenate([np.ones(n), xb, [target, -(target - tol)]])
        c = np.concatenate([-self.y_q, np.zeros(nx)])
        bounds = np.column_stack([np.zeros(ny + nx), np.concatenate([np.ones(ny), np.full(nx, np.inf)])])
        res = linprog(c, A_ub=a, b_ub=b, bounds=bounds, method="highs")
        if res.status != 0:
            raise RuntimeError(f"hindsight stage 2: {res.message}")
        y = np.clip(res.x[:ny], 0.0, 1.0)
        return {
            "y": y,
            "x": res.x[ny:],
            "on_time": float(y.sum()),
            "quality_sum": float(y @ self.y_q),
            "solve_s": time.perf_counter() - started,
        }

    # -- as a SimResult -----------------------------------------------------------------------------
    def result(self, violation_budget: float | None = None) -> HindsightResult:
        """The bound for a violation budget (None: the fewest violations) as a HindsightResult."""
        started = time.perf_counter()
        sol = self.solve(violation_budget)
        n, levels, cfg = self.n, self.levels, self.config
        y = sol["y"]
        served_frac = np.bincount(self.y_req, weights=y, minlength=n)
        q_sum = np.bincount(self.y_req, weights=y * self.y_q, minlength=n)
        share = np.zeros((n, len(levels)))
        share[self.y_req, self.y_lvl] = y
        on_time = served_frac >= 0.5
        level_idx = share.argmax(axis=1)
        k_prime = np.array(levels, dtype=np.int64)[level_idx]
        batch = self.batch[level_idx]
        quality = np.where(on_time, q_sum / np.maximum(served_frac, 1e-12), np.nan)
        # finish: end of the group's last slot with work, clipped to [arrival + L(k, b), deadline]
        group_end = np.full(self.n_groups, -np.inf)
        used = sol["x"] > 1e-9
        np.maximum.at(group_end, self.x_group[used], (self.t0_slot + self.x_slot[used] + 1) * self.slot_s)
        service = np.array([cfg.profile.latency(k, max(1, int(b))) for k, b in zip(k_prime, batch)])
        deadline = self.arrivals + cfg.slo_s
        finish = np.clip(group_end[self.group] if n else np.zeros(0), self.arrivals + service, deadline)
        finish = np.where(on_time, finish, np.nan)
        start = np.where(on_time, finish - service, np.nan)
        m = sol["on_time"]
        quality_mean = sol["quality_sum"] / m if m > 0 else float("nan")
        solve_s = self.count_solve_s + sol["solve_s"]
        bound = {
            "violation_ratio": max(0.0, 1.0 - m / n) if n else 0.0,
            "quality": quality_mean,
            "on_time": m,
            "min_violation_ratio": self.min_violation_ratio,
            "violation_budget": violation_budget,
            "fractional_requests": int(((served_frac > 1e-6) & (served_frac < 1 - 1e-6)).sum()),
            "batch_rule": self.batch_rule,
            "slot_s": self.slot_s,
            "slots_per_slo": self.slots_per_slo,
            "work_s": {str(k): (float(w) if math.isfinite(w) else None) for k, w in zip(levels, self.work)},
            "batch": {str(k): int(b) for k, b in zip(levels, self.batch)},
            "lp_vars": int(self.y_req.size + self.x_group.size),
            "lp_rows": int(n + self.n_groups + self.n_slots + 2),
            "solve_s": solve_s,
        }
        # K*: the largest level whose own similarity predicts at least that level (as the predictor would)
        k_star = np.zeros(n, dtype=np.int64)
        for j, k in enumerate(levels):
            if k > 0:
                k_star[cfg.predictor.predict_array(self.level_sim[:, j]) >= k] = k
        return HindsightResult(
            policy=HINDSIGHT_NAME if self.batch_rule == "slo" else f"{HINDSIGHT_NAME}_{self.batch_rule}",
            arrival=self.arrivals,
            deadline=deadline,
            start=start,
            finish=finish,
            dropped=~on_time,
            k_star=k_star,
            k_prime=k_prime,
            quality=quality,
            similarity=self.similarity,
            worker=np.full(n, -1, dtype=np.int64),
            redirected=np.zeros(n, dtype=bool),
            batch=np.where(on_time, batch, 0).astype(np.int64),
            plans=[{"time": 0.0, "workers_per_level": [], "expected_quality": quality_mean, "solve_time_s": solve_s}],
            wall_s=self.build_s + (time.perf_counter() - started),
            bound=bound,
        )
