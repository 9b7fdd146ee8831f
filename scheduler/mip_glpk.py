"""Solve a small mixed-integer program with GLPK's branch and bound (through `swiglpk`).

The controller's program (see `scheduler.planner`) has ~6 integer and ~36 continuous variables. HiGHS
(`scipy.optimize.milp`) spends 10–60 ms on it, nearly all in root-node machinery sized for programs a
thousand times larger (sub-MIP heuristics, probing, cut rounds), whereas GLPK's plain branch and bound
proves the same optimum in about 0.4 ms. The simulator runs the controller every simulated 10 s, so this is
what lets it replay traces at tens of thousands of requests per second. `tests/test_scheduler_planner.py`
checks that both solvers reach the same objective.

Same calling convention as `scipy.optimize.milp` with dense arrays: minimise c·x subject to
row_lb ≤ A x ≤ row_ub and col_lb ≤ x ≤ col_ub, with x[j] integer where integrality[j] is true.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import swiglpk as glp

glp.glp_term_out(glp.GLP_OFF)  # GLPK prints to stdout by default, even with msg_lev off for some calls


@dataclass
class MipSolution:
    x: np.ndarray | None  # None when no integer-feasible solution was found
    status: int  # 0 optimal (within rel_gap), 1 stopped by the time limit, 2 infeasible, 3 failed
    message: str


def _bounds_type(lo: float, hi: float) -> int:
    if math.isinf(lo) and math.isinf(hi):
        return glp.GLP_FR
    if math.isinf(hi):
        return glp.GLP_LO
    if math.isinf(lo):
        return glp.GLP_UP
    return glp.GLP_FX if lo == hi else glp.GLP_DB


_matrix_memo: dict[bytes, tuple] = {}


def _matrix_arrays(a: np.ndarray) -> tuple:
    """GLPK's 1-based triplet arrays for A. Filling them element by element through SWIG dominates the
    solve, and a controller passes the same matrix every period (only bounds change), so they are kept."""
    key = a.shape[0].to_bytes(4, "little") + a.tobytes()
    hit = _matrix_memo.get(key)
    if hit is None:
        rows, cols = np.nonzero(a)
        nz = len(rows)
        ia, ja, ar = glp.intArray(nz + 1), glp.intArray(nz + 1), glp.doubleArray(nz + 1)
        for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist()), start=1):
            ia[k], ja[k], ar[k] = i + 1, j + 1, float(a[i, j])
        if len(_matrix_memo) >= 32:
            _matrix_memo.clear()
        hit = _matrix_memo[key] = (nz, ia, ja, ar)
    return hit


def solve_mip(
    c: np.ndarray,
    a: np.ndarray,
    row_lb: np.ndarray,
    row_ub: np.ndarray,
    col_lb: np.ndarray,
    col_ub: np.ndarray,
    integrality: np.ndarray,
    rel_gap: float = 0.0,
    time_limit_s: float | None = None,
) -> MipSolution:
    """Minimise c·x over the program above. `rel_gap` and `time_limit_s` as in `scipy.optimize.milp`."""
    t0 = time.perf_counter()
    m, n = a.shape
    lp = glp.glp_create_prob()
    try:
        glp.glp_set_obj_dir(lp, glp.GLP_MIN)
        glp.glp_add_rows(lp, m)
        glp.glp_add_cols(lp, n)
        for i in range(m):
            lo, hi = float(row_lb[i]), float(row_ub[i])
            glp.glp_set_row_bnds(
                lp, i + 1, _bounds_type(lo, hi), lo if math.isfinite(lo) else 0.0, hi if math.isfinite(hi) else 0.0
            )
        for j in range(n):
            lo, hi = float(col_lb[j]), float(col_ub[j])
            glp.glp_set_col_bnds(
                lp, j + 1, _bounds_type(lo, hi), lo if math.isfinite(lo) else 0.0, hi if math.isfinite(hi) else 0.0
            )
            glp.glp_set_obj_coef(lp, j + 1, float(c[j]))
            if integrality[j]:
                glp.glp_set_col_kind(lp, j + 1, glp.GLP_IV)
        glp.glp_load_matrix(lp, *_matrix_arrays(a))
        # The root LP with the dual simplex first: GLPK's MIP presolver solves it with the primal simplex,
        # which can stall on this program's degenerate vertices ("numerical instability", cycling).
        smcp = glp.glp_smcp()
        glp.glp_init_smcp(smcp)
        smcp.meth = glp.GLP_DUALP
        smcp.msg_lev = glp.GLP_MSG_OFF
        if time_limit_s is not None:
            smcp.tm_lim = max(1, int(time_limit_s * 1000))
        ret = glp.glp_simplex(lp, smcp)
        if ret != 0 or glp.glp_get_status(lp) != glp.GLP_OPT:
            status = glp.glp_get_status(lp)
            if status in (glp.GLP_NOFEAS, glp.GLP_INFEAS) and ret == 0:
                return MipSolution(None, 2, "infeasible")
            return MipSolution(None, 3, f"root LP failed (glp_simplex {ret}, status {status})")
        parm = glp.glp_iocp()
        glp.glp_init_iocp(parm)
        parm.msg_lev = glp.GLP_MSG_OFF
        parm.mip_gap = rel_gap
        if time_limit_s is not None:  # what the root LP left of the limit
            parm.tm_lim = max(1, int((time_limit_s - (time.perf_counter() - t0)) * 1000))
        ret = glp.glp_intopt(lp, parm)
        status = glp.glp_mip_status(lp)
        if status in (glp.GLP_OPT, glp.GLP_FEAS):
            x = np.array([glp.glp_mip_col_val(lp, j + 1) for j in range(n)])
            if ret in (0, glp.GLP_EMIPGAP):  # proven optimal, or within rel_gap of the bound
                return MipSolution(x, 0, "optimal")
            return MipSolution(x, 1, f"stopped early (glp_intopt {ret}); best solution found")
        if status == glp.GLP_NOFEAS or ret in (glp.GLP_ENOPFS,):
            return MipSolution(None, 2, "infeasible")
        return MipSolution(None, 3 if ret != glp.GLP_ETMLIM else 1, f"no solution (glp_intopt {ret})")
    finally:
        glp.glp_delete_prob(lp)
