"""Resource Controller MILP: properties (hypothesis) and degenerate cases."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scheduler.planner as planner_module
from scheduler.demand import DemandEstimate, default_class_quality
from scheduler.mip_glpk import MipSolution
from scheduler.planner import Plan, PlanStatus, assign_worker_levels, fixed_plan
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
    assert plan.status is PlanStatus.OPTIMAL and plan.adoptable
    assert 0.0 <= plan.expected_quality <= 1.0 + 1e-9
    # JSON round trip (the live system stores plans in Postgres)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rates=st.lists(st.floats(0, 8, allow_nan=False), min_size=6, max_size=6),
    n=st.integers(1, 40),
    util=st.sampled_from([0.7, 0.85, 1.0]),
    prompt_aware=st.booleans(),
    seed=st.integers(0, 1000),
)
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
@given(
    rates=st.lists(st.floats(0, 8, allow_nan=False), min_size=6, max_size=6),
    n=st.sampled_from([1, 2, 5, 16, 64, 256]),
    scale=st.sampled_from([0.1, 0.5, 1.0, 3.0]),
    prompt_aware=st.booleans(),
    seed=st.integers(0, 1000),
)
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
    assert g.expected_quality * g.served_rate == pytest.approx(h.expected_quality * h.served_rate, rel=3e-5, abs=1e-9)


def test_unknown_solver_is_a_clear_error():
    d = DemandEstimate(LEVELS, [0.1] * 6, QDEF)
    with pytest.raises(ValueError, match="unknown solver 'cplex'"):
        solve_plan(d, 4, PROFILE, SLO, solver="cplex")


def test_plan_status_values():
    assert {s.name: s.value for s in PlanStatus} == {
        "OPTIMAL": "optimal",
        "TIME_LIMIT": "time_limit",
        "FALLBACK": "fallback",
        "FIXED": "fixed",
        "MANUAL": "manual",
    }
    for status in PlanStatus:  # only a fallback plan is refused by the live controller
        plan = Plan([0], [0], [[1.0]], {0: 1}, status=status)
        assert plan.adoptable == (status is not PlanStatus.FALLBACK)


def _stored_row(status: str) -> dict:
    """A plan row as an older version stored it: free-text status, no solver_message."""
    d = fixed_plan(LEVELS, 4, 25, dict.fromkeys(LEVELS, 1)).to_dict()
    d["status"] = status
    del d["solver_message"]
    return json.loads(json.dumps(d))


@pytest.mark.parametrize(
    "stored, status, message",
    [
        ("optimal", PlanStatus.OPTIMAL, ""),
        ("fixed", PlanStatus.FIXED, ""),
        ("manual", PlanStatus.MANUAL, ""),
        ("fallback: no integer solution: time limit", PlanStatus.FALLBACK, "no integer solution: time limit"),
        ("status 1: time limit reached", PlanStatus.TIME_LIMIT, "time limit reached"),
        ("time_limit", PlanStatus.TIME_LIMIT, ""),
    ],
)
def test_from_dict_reads_old_status_strings(stored, status, message):
    plan = Plan.from_dict(_stored_row(stored))
    assert plan.status is status and plan.solver_message == message
    assert plan.adoptable == (status is not PlanStatus.FALLBACK)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and type(plan.to_dict()["status"]) is str


def test_plan_given_a_plain_string_status_holds_the_enum():
    """The live side builds manual plans with status="manual"."""
    plan = Plan(
        levels=[0, 25], worker_levels=[0, 25], route=[[1.0, 0.0], [0.0, 1.0]], batch_size={0: 1, 25: 2}, status="manual"
    )
    assert plan.status is PlanStatus.MANUAL and plan.solver_message == ""
    assert fixed_plan(LEVELS, 2, 0, dict.fromkeys(LEVELS, 1)).status is PlanStatus.FIXED


@pytest.mark.parametrize("prompt_aware", [True, False])
def test_solver_without_a_solution_gives_the_fallback_plan(monkeypatch, prompt_aware):
    monkeypatch.setattr(planner_module, "_solve_program", lambda *a, **k: MipSolution(None, 2, "no solution"))
    d = DemandEstimate(LEVELS, [0.6, 0.3, 0.3, 0.2, 0.3, 1.2], QDEF)
    plan = solve_plan(d, 16, PROFILE, SLO, prompt_aware=prompt_aware)
    fastest = max(LEVELS, key=lambda k: MU[k])
    assert plan.status is PlanStatus.FALLBACK and not plan.adoptable
    assert plan.solver_message == "no solution"
    assert plan.worker_levels == [fastest] * 16
    assert plan.workers_per_level == [16 if k == fastest else 0 for k in LEVELS]
    assert all(row == [1.0 if k == fastest else 0.0 for k in LEVELS] for row in plan.route)
    assert plan.served_rate == pytest.approx(sum(d.rates))  # 3.0 req/s fit in 16 workers at K′ = 25
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.status is PlanStatus.FALLBACK


def test_solver_stopped_with_an_incumbent_gives_a_time_limit_plan(monkeypatch):
    real = planner_module._solve_program

    def stopped(*a, **k):
        sol = real(*a, **k)
        return MipSolution(sol.x, 1, "time limit reached")

    monkeypatch.setattr(planner_module, "_solve_program", stopped)
    d = DemandEstimate(LEVELS, [0.6, 0.3, 0.3, 0.2, 0.3, 1.2], QDEF)
    plan = solve_plan(d, 16, PROFILE, SLO)
    assert plan.status is PlanStatus.TIME_LIMIT and plan.adoptable
    assert plan.solver_message == "time limit reached"
    monkeypatch.setattr(planner_module, "_solve_program", real)
    assert solve_plan(d, 16, PROFILE, SLO).workers_per_level == plan.workers_per_level


def test_optimal_solve_is_adoptable():
    d = DemandEstimate(LEVELS, [0.6, 0.3, 0.3, 0.2, 0.3, 1.2], QDEF)
    plan = solve_plan(d, 16, PROFILE, SLO)
    assert plan.status is PlanStatus.OPTIMAL and plan.adoptable and plan.solver_message
