"""Resource Controller MILP: properties (hypothesis) and degenerate cases."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.demand import DemandEstimate, default_class_quality
from scheduler.planner import Plan, assign_worker_levels
from scheduler.planner import solve_plan as _solve_plan
from scheduler.profiles import load_profile
from scheduler.quality import QualityModel

PROFILE = load_profile("sdxl-a100")
LEVELS = list(PROFILE.levels)
SLO = 2 * PROFILE.latency(0, 1)
QDEF = default_class_quality(LEVELS, QualityModel()).tolist()
MU = {k: PROFILE.batch_cap(k, SLO) / PROFILE.latency(k, PROFILE.batch_cap(k, SLO)) for k in LEVELS}


def solve_plan(*a, **k):
    """The planner with a generous time limit: tests check optimality, not speed (CI machines are shared)."""
    k.setdefault("time_limit_s", 60.0)
    return _solve_plan(*a, **k)


def check_plan(plan: Plan, demand: DemandEstimate, n: int, util: float, headroom: float = 1.0) -> None:
    assert len(plan.worker_levels) == n
    assert all(isinstance(w, int) for w in plan.workers_per_level)
    assert sum(plan.workers_per_level) == n
    assert [plan.worker_levels.count(k) for k in LEVELS] == plan.workers_per_level
    for row in plan.route:
        assert len(row) == len(LEVELS)
        assert min(row) >= 0
        assert sum(row) == pytest.approx(1.0, abs=1e-9)
    flows = np.array(plan.flows)
    load = flows.sum(axis=0)
    for j, k in enumerate(LEVELS):  # capacity respected at the utilisation target
        assert load[j] <= util * MU[k] * plan.workers_per_level[j] + 1e-6
    assert np.all(flows.sum(axis=1) <= np.array(demand.rates) * headroom + 1e-6)
    assert plan.served_rate <= sum(demand.rates) * headroom + 1e-6
    assert plan.status == "optimal"
    assert 0.0 <= plan.expected_quality <= 1.0 + 1e-9
    # JSON round trip (the live system stores plans in Postgres)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rates=st.lists(st.floats(0, 8, allow_nan=False), min_size=6, max_size=6),
       n=st.integers(1, 40), util=st.sampled_from([0.7, 0.85, 1.0]),
       prompt_aware=st.booleans(), seed=st.integers(0, 1000))
def test_plan_properties(rates, n, util, prompt_aware, seed):
    rng = np.random.default_rng(seed)
    q = np.clip(np.array(QDEF) - rng.uniform(0, 0.05, (6, 6)) * (np.array(LEVELS) > 0), 0.75, 1.0)
    demand = DemandEstimate(LEVELS, rates, q.tolist())
    plan = solve_plan(demand, n, PROFILE, SLO, util_target=util, prompt_aware=prompt_aware)
    check_plan(plan, demand, n, util)
    # serve as much as possible: never less than the best single level could carry
    best_single = min(sum(rates), max(util * MU[k] * n for k in LEVELS))
    assert plan.served_rate >= best_single - 1e-6


def test_no_demand():
    d = DemandEstimate(LEVELS, [0.0] * 6, QDEF)
    plan = solve_plan(d, 16, PROFILE, SLO)
    check_plan(plan, d, 16, 0.85)
    assert plan.served_rate == 0 and plan.workers_per_level[0] == 16


def test_one_worker():
    d = DemandEstimate(LEVELS, [0.01, 0, 0, 0, 0, 0.02], QDEF)
    plan = solve_plan(d, 1, PROFILE, SLO)
    check_plan(plan, d, 1, 0.85)
    assert plan.served_rate == pytest.approx(0.03)
    assert plan.workers_per_level[0] == 1  # light load: full quality


def test_demand_far_above_capacity():
    d = DemandEstimate(LEVELS, [50.0] * 6, QDEF)
    plan = solve_plan(d, 16, PROFILE, SLO, util_target=0.85)
    check_plan(plan, d, 16, 0.85)
    # every worker at the fastest level, serving as much as it can
    assert plan.workers_per_level[-1] == 16
    assert plan.served_rate == pytest.approx(0.85 * 16 * MU[25])


def test_headroom_and_prompt_awareness():
    rates = [0.6, 0.3, 0.3, 0.2, 0.3, 1.2]
    d = DemandEstimate(LEVELS, rates, QDEF)
    pa = solve_plan(d, 16, PROFILE, SLO)
    pr = solve_plan(d, 16, PROFILE, SLO, prompt_aware=False)
    assert pa.expected_quality >= pr.expected_quality - 1e-9  # per-class routing can only help
    assert all(r == pr.route[0] for r in pr.route)  # PROTEUS ignores K*
    h = solve_plan(d, 16, PROFILE, SLO, headroom=1.5)
    check_plan(h, d, 16, 0.85, headroom=1.5)


def test_worker_assignment_keeps_previous_levels():
    prev = [0, 0, 25, 25, 10]
    out = assign_worker_levels([1, 0, 1, 0, 0, 3], LEVELS, prev)
    assert out[0] == 0 and out[2] == 25 and out[3] == 25
    assert sorted(out) == [0, 10, 25, 25, 25]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rates=st.lists(st.floats(0, 8, allow_nan=False), min_size=6, max_size=6),
       n=st.sampled_from([1, 2, 5, 16, 64, 256]), scale=st.sampled_from([0.1, 0.5, 1.0, 3.0]),
       prompt_aware=st.booleans(), seed=st.integers(0, 1000))
def test_glpk_and_highs_reach_the_same_optimum(rates, n, scale, prompt_aware, seed):
    """The default solver (GLPK) and scipy.optimize.milp (HiGHS) agree on the objective: the same served
    rate and the same expected quality up to the MIP gap both are given."""
    rng = np.random.default_rng(seed)
    q = np.clip(np.array(QDEF) - rng.uniform(0, 0.05, (6, 6)) * (np.array(LEVELS) > 0), 0.75, 1.0)
    demand = DemandEstimate(LEVELS, [r * scale * n / 16 for r in rates], q.tolist())
    g = solve_plan(demand, n, PROFILE, SLO, prompt_aware=prompt_aware, solver="glpk")
    h = solve_plan(demand, n, PROFILE, SLO, prompt_aware=prompt_aware, solver="highs")
    check_plan(g, demand, n, 0.85)
    check_plan(h, demand, n, 0.85)
    assert g.served_rate == pytest.approx(h.served_rate, rel=1e-5, abs=1e-9)
    assert g.expected_quality * g.served_rate == pytest.approx(h.expected_quality * h.served_rate,
                                                               rel=3e-5, abs=1e-9)


def test_unknown_solver_is_a_clear_error():
    d = DemandEstimate(LEVELS, [0.1] * 6, QDEF)
    with pytest.raises(ValueError, match="unknown solver 'cplex'"):
        solve_plan(d, 4, PROFILE, SLO, solver="cplex")
