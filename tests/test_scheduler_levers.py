"""prompt_aware's levers (issue 13): similarity-ranked routing, upgrades on spare capacity, event-triggered
re-planning, and shedding requests that can no longer meet their deadline. Each is a setting that an
ablation switches off; these tests check what each one decides, not how much it wins (that is the sweep)."""

import math

import numpy as np
import pytest

from scheduler.dispatch import is_hopeless
from scheduler.interface import ClusterView, RequestView
from scheduler.planner import Plan
from scheduler.policies import SimilarityRanks, make_policy
from scheduler.simulator import simulate
from tests.sim_helpers import ALL, LEVELS, SLO, cfg


def plan(worker_levels, route_row, utilisation=None, served=1.0, demand=1.0, time=0.0):
    """A plan whose every K* class is routed by `route_row` (fractions over LEVELS)."""
    return Plan(
        levels=LEVELS,
        worker_levels=worker_levels,
        route=[list(route_row) for _ in LEVELS],
        batch_size=dict.fromkeys(LEVELS, 1),
        workers_per_level=[worker_levels.count(k) for k in LEVELS],
        utilisation=utilisation if utilisation is not None else [1.0] * len(LEVELS),
        served_rate=served,
        demand_rate=demand,
        time=time,
    )


def busy_cluster(n=4, backlog=30.0):
    return ClusterView([0] * n, [3] * n, [1] * n, [backlog] * n, [backlog] * n)


def test_similarity_rank_is_the_position_among_recent_requests_of_the_class():
    ranks = SimilarityRanks(n_classes=2, window=4)
    assert ranks.rank(0, 0.9) == 0.5  # nothing seen yet
    for s in (0.91, 0.92, 0.93):
        ranks.rank(0, s)
    assert ranks.rank(0, 0.95) == pytest.approx(1.0 - 1e-12)  # above every recent one
    assert ranks.rank(0, 0.80) == 0.0
    assert ranks.rank(1, 0.80) == 0.5  # classes are ranked apart
    assert len(ranks.sorted[0]) == 4  # the window forgets the oldest


def test_half_the_class_to_each_level_the_more_similar_half_to_the_higher_k():
    pa = make_policy("prompt_aware", cfg(light_load_upgrade=False, queue_first=False))
    pa.set_plan(plan([0, 0, 25, 25], [0.5, 0, 0, 0, 0, 0.5]))
    for s in np.linspace(0.951, 0.999, 50):  # fill the K*=25 class's window
        pa.route_level(RequestView(0, 0.0, SLO, float(s), 25, ALL))
    low = pa.route_level(RequestView(1, 0.0, SLO, 0.952, 25, ALL))
    high = pa.route_level(RequestView(2, 0.0, SLO, 0.998, 25, ALL))
    assert (low, high) == (0, 25)
    random_pa = make_policy("prompt_aware", cfg(similarity_ranked=False, light_load_upgrade=False))
    random_pa.set_plan(plan([0, 0, 25, 25], [0.5, 0, 0, 0, 0, 0.5]))
    picks = {random_pa.route_level(RequestView(i, 0.0, SLO, 0.998, 25, ALL)) for i in range(200)}
    assert picks == {0, 25}  # the ablation samples the fractions at random, whatever s is


def test_spare_capacity_upgrades_to_full_quality_when_the_deadline_allows():
    pa = make_policy("prompt_aware", cfg(queue_first=False))
    pa.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], utilisation=[0, 0, 0, 0, 0, 0.25]))
    pa._budget_t = -100.0  # a lull: spare worker-seconds have accrued
    d = pa.dispatch(RequestView(0, 0.0, SLO, 0.97, 25, ALL), ClusterView.idle([25] * 4), 0.0)
    assert d.k_prime == 0


def test_an_infinite_budget_banks_nothing_and_upgrades_while_the_plan_has_spare():
    """`--upgrade-budget inf`: no lull is needed (the bank starts empty at t = 0), but overload still stops it."""
    request = RequestView(0, 0.0, SLO, 0.97, 25, ALL)
    for budget, expected in ((2.0, 25), (math.inf, 0)):
        pa = make_policy("prompt_aware", cfg(upgrade_budget_slo=budget, queue_first=False))
        pa.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], utilisation=[0, 0, 0, 0, 0, 0.25]))
        assert pa.dispatch(request, ClusterView.idle([25] * 4), 0.0).k_prime == expected
        assert pa.dispatch(RequestView(1, 0.0, SLO, 0.97, 25, ALL), ClusterView.idle([25] * 4), 0.0).k_prime == expected
    overloaded = make_policy("prompt_aware", cfg(upgrade_budget_slo=math.inf, queue_first=False))
    overloaded.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], utilisation=[0] * 6, served=1.0, demand=2.0))
    assert overloaded.dispatch(request, ClusterView.idle([25] * 4), 0.0).k_prime == 25


def test_no_upgrade_without_spare_capacity_or_slack():
    overloaded = make_policy("prompt_aware", cfg(queue_first=False))
    overloaded.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], utilisation=[0] * 6, served=1.0, demand=2.0))
    overloaded._budget_t = -100.0
    assert overloaded.dispatch(RequestView(0, 0.0, SLO, 0.97, 25, ALL), ClusterView.idle([25] * 4), 0.0).k_prime == 25
    queued = make_policy("prompt_aware", cfg(queue_first=False))
    queued.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], utilisation=[0, 0, 0, 0, 0, 0.25]))
    queued._budget_t = -100.0
    # every worker busy for ~SLO: K′ = 0 would end too close to the deadline
    assert queued.dispatch(RequestView(0, 0.0, SLO, 0.97, 25, ALL), busy_cluster(backlog=8.0), 0.0).k_prime == 25
    ablated = make_policy("prompt_aware", cfg(light_load_upgrade=False, queue_first=False))
    ablated.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], utilisation=[0, 0, 0, 0, 0, 0.25]))
    ablated._budget_t = -100.0
    assert ablated.dispatch(RequestView(0, 0.0, SLO, 0.97, 25, ALL), ClusterView.idle([25] * 4), 0.0).k_prime == 25


def test_event_trigger_fires_when_arrivals_depart_from_the_plan():
    pa = make_policy("prompt_aware", cfg(replan_threshold=0.3, replan_min_gap_s=2.0))
    pa.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], demand=1.0))
    pa._planned_at = 0.0
    c = ClusterView.idle([0] * 4)
    for i in range(3):  # 3 arrivals in 3 s: on plan
        pa.dispatch(RequestView(i, float(i), i + SLO, None, 0, ()), c, float(i))
    assert not pa.replan_due(3.0)
    for i in range(6):  # a burst: 9 arrivals in 3.5 s
        pa.dispatch(RequestView(10 + i, 3.5, 3.5 + SLO, None, 0, ()), c, 3.5)
    assert not pa.replan_due(1.5)  # too soon after the last solve
    assert pa.replan_due(3.5)
    assert not make_policy("prompt_aware", cfg(event_replan=False)).replan_due(3.5)


def test_queue_pressure_trigger_fires_when_the_plan_level_cannot_make_a_deadline():
    """Arrivals exactly on plan, but the plan's level has a queue longer than the SLO: with
    pressure_replan the trigger fires after the minimum gap; without it, it does not."""
    for pressure in (True, False):
        pa = make_policy("prompt_aware", cfg(replan_min_gap_s=2.0, pressure_replan=pressure, queue_first=False))
        pa.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], demand=1.0))
        pa._planned_at = 0.0
        for i in range(3):  # on plan: 3 arrivals in 3 s, every worker busy for 2 × SLO
            pa.dispatch(RequestView(i, float(i), i + SLO, 0.97, 25, ALL), busy_cluster(backlog=2 * SLO), float(i))
        assert not pa.replan_due(1.5)  # the minimum gap holds either way
        assert pa.replan_due(3.0) is pressure
        pa.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], demand=1.0, time=3.0))  # a new plan clears it ...
        for i in range(3, 6):  # ... and on-plan arrivals to idle workers raise nothing
            pa.dispatch(RequestView(i, float(i), i + SLO, 0.97, 25, ALL), ClusterView.idle([25] * 4), float(i))
        assert not pa.replan_due(6.0)


def test_hopeless_rule():
    assert is_hopeless(now=10.0, deadline=15.0, min_service_s=6.1)
    assert not is_hopeless(now=10.0, deadline=16.1, min_service_s=6.1)


def burst(n=120, at=1.0):
    """Everything at once: far more than 2 workers can serve within the SLO."""
    return np.full(n, at)


def test_the_simulator_sheds_what_cannot_make_its_deadline_and_the_rest_does():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10 + 120, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    config = cfg(n=2)
    shed = simulate("prompt_aware", config, burst(), emb, warm=10)
    kept = simulate("clipper_ha", config, burst(), emb, warm=10)
    late = np.isfinite(shed.finish) & (shed.finish > shed.deadline)
    assert shed.dropped.sum() > 0 and not late.any()  # shed, never served late
    assert (np.isfinite(kept.finish) & (kept.finish > kept.deadline)).any()  # without shedding: late work


def test_event_replanning_solves_between_periods():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(10 + 200, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    arrivals = np.sort(np.concatenate([np.linspace(0, 30, 20), np.linspace(31, 34, 180)]))
    on = simulate("prompt_aware", cfg(n=8), arrivals, emb, warm=10)
    off = simulate("prompt_aware", cfg(n=8, event_replan=False), arrivals, emb, warm=10)
    off_period = [p["time"] for p in on.plans if p["time"] % 10.0]
    assert off_period and not [p["time"] for p in off.plans if p["time"] % 10.0]


def test_upgrade_and_replan_flags_reach_the_config_and_bad_values_are_usage_errors(capsys):
    from scheduler import simulate as cli
    from scheduler import sweep

    args = sweep.build_parser().parse_args(
        ["--traces", "t.txt", "--prompts", "p.txt", "--upgrade-budget", "8", "--upgrade-margin", "0.1"]
        + ["--pressure-replan"]
    )
    config = cli._scheduler_config(args, cli.load_profile("sdxl-a100"))
    assert (config.upgrade_budget_slo, config.upgrade_margin, config.pressure_replan) == (8.0, 0.1, True)
    defaults = cli._scheduler_config(
        cli.build_parser().parse_args(["--trace", "t.txt", "--prompts", "p.txt"]),
        cli.load_profile("sdxl-a100"),
    )
    assert (defaults.upgrade_budget_slo, defaults.upgrade_margin, defaults.pressure_replan) == (2.0, 0.3, False)
    inf = cli._scheduler_config(
        cli.build_parser().parse_args(["--trace", "t.txt", "--prompts", "p.txt", "--upgrade-budget", "inf"]),
        cli.load_profile("sdxl-a100"),
    )
    assert math.isinf(inf.upgrade_budget_slo) and inf.batch_cut
    no_cut = cli._scheduler_config(
        cli.build_parser().parse_args(["--trace", "t.txt", "--prompts", "p.txt", "--no-batch-cut"]),
        cli.load_profile("sdxl-a100"),
    )
    assert not no_cut.batch_cut
    for bad in ("-1", "nan", "lots"):
        with pytest.raises(SystemExit) as exc:
            cli.build_parser().parse_args(["--trace", "t", "--prompts", "p", "--upgrade-budget", bad])
        assert exc.value.code == 2 and "--upgrade-budget" in capsys.readouterr().err


def test_the_batch_cut_runs_the_shorter_batch_only_when_the_rest_still_make_it():
    """dispatch.batch_to_run: L(b) = 3, 5, 7 s for b = 1, 2, 3."""
    from scheduler.dispatch import batch_to_run

    service = {1: 3.0, 2: 5.0, 3: 7.0}.__getitem__
    assert batch_to_run(0.0, [10.0, 10.0, 10.0], service) == 3  # nobody late in the full batch
    assert batch_to_run(0.0, [4.0, 20.0], service) == 1  # late in the pair, on time alone; the other at 3 + 3
    assert batch_to_run(0.0, [4.0, 5.5], service) == 2  # cutting would make the second late (6 > 5.5): no cut
    assert batch_to_run(0.0, [9.0, 6.0, 30.0], service) == 2  # the third makes the pair late: two run
    assert batch_to_run(0.0, [4.0], service) == 1
    # a request queued behind that the cut would make late (3 + 3 + 2 = 8 > 7.5): no cut
    assert batch_to_run(0.0, [4.0, 20.0], service, lambda: [(2.0, 7.5)]) == 2
    assert batch_to_run(0.0, [4.0, 20.0], service, lambda: [(2.0, 8.0), (1.0, 30.0)]) == 1


def test_the_batch_cut_stays_off_in_a_sustained_overload():
    from scheduler.dispatch import may_cut

    assert may_cut(None, 1.6)
    assert may_cut(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], served=1.0, demand=1.5), 1.6)
    assert not may_cut(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], served=1.0, demand=1.7), 1.6)


def test_the_simulator_cuts_a_batch_instead_of_shedding_its_late_member(monkeypatch):
    """One worker; two full generations (K′ = 0) hold it until 12.2 s; then r1 (due 16.2 s) and r2 (due 19.2 s)
    are queued at K′ = 25 with a batch limit of 2. The pair would take 5.3 s and end r1 late, so before the
    cut r1 was shed; alone r1 ends at 15.4 s and r2 after it at 18.6 s: both on time."""
    from scheduler import policies
    from scheduler.interface import Decision

    class Fixed(policies.PromptAware):
        """Routes by arrival order: the first two at K′ = 0, the rest at K′ = 25 in pairs."""

        name = "fixed"
        sheds_hopeless = True

        def dispatch(self, req, cluster, now):
            return Decision(0, 0, 1, False) if req.id < 2 else Decision(0, 25, 2, False)

    monkeypatch.setitem(policies._REGISTRY, "fixed", Fixed)
    emb = np.zeros((1 + 4, 8))
    emb[:, 0] = 1.0  # every request's neighbour is the warm prompt, cached at every level
    config = cfg(n=1, event_replan=False, batch_cut_overload=math.inf)  # one worker's plan is always short
    assert config.profile.latency(25, 2) > 16.2 - 12.2 >= config.profile.latency(25, 1)  # the premise
    arrivals = np.array([0.0, 0.05, 4.0, 7.0])
    run = simulate("fixed", config, arrivals, emb, warm=1)
    assert not run.dropped.any()
    assert (run.finish <= run.deadline).all()
    assert list(run.batch) == [1, 1, 1, 1]
    ablated = simulate("fixed", cfg(n=1, event_replan=False, batch_cut=False), arrivals, emb, warm=1)
    assert list(ablated.dropped) == [False, False, True, False]  # the rule before the cut: r1 shed
    # the cut refused (as in a sustained overload): the batch that runs is judged at its own size
    # (dispatch.on_time_batch): r1 runs alone, r2 stays queued and runs after it, as with the cut
    monkeypatch.setattr("scheduler.simulator.may_cut", lambda plan, factor: False)
    refused = simulate("fixed", config, arrivals, emb, warm=1)
    assert not refused.dropped.any() and (refused.finish <= refused.deadline).all()
    assert list(refused.batch) == [1, 1, 1, 1]


def test_a_batch_that_is_not_cut_runs_the_largest_batch_its_members_make_on_time():
    """dispatch.on_time_batch: L(b) = 3, 5, 7 s for b = 1, 2, 3; (indices that run, candidates scanned)."""
    from scheduler.dispatch import on_time_batch

    service = {1: 3.0, 2: 5.0, 3: 7.0}.__getitem__
    assert on_time_batch(0.0, [10.0, 10.0, 10.0], 3, service) == ([0, 1, 2], 3)  # the full batch makes it
    assert on_time_batch(0.0, [4.0, 20.0], 2, service) == ([0], 1)  # the pair ends the first late: it runs alone
    assert on_time_batch(0.0, [4.0, 6.0, 30.0], 3, service) == ([1, 2], 3)  # the first is late even in a pair
    assert on_time_batch(0.0, [10.0, 10.0, 10.0, 10.0], 2, service) == ([0, 1], 2)  # no more than `size`
    assert on_time_batch(0.0, [2.0, 2.5], 2, service) == ([], 2)  # nobody makes it even alone


# -- queue-first light load ---------------------------------------------------------------------------------


def test_queue_first_serves_at_full_quality_while_the_queues_make_the_deadline_then_hands_over_to_the_plan():
    pa = make_policy("prompt_aware", cfg(replan_min_gap_s=2.0))
    assert pa.in_queue_first  # the initial plan puts every worker at K′ = 0
    pa.set_plan(plan([25] * 4, [0, 0, 0, 0, 0, 1.0], demand=4.0, time=1.0))  # a plan that approximates ...
    assert pa.in_queue_first  # ... does not end it: only a request the queues cannot take does
    d = pa.dispatch(RequestView(0, 1.0, 1.0 + SLO, 0.97, 25, ALL), busy_cluster(backlog=SLO / 4), 1.0)
    assert (d.k_prime, d.queue_first, d.batch_size) == (0, True, pa.caps[0])
    assert not pa.replan_due(1.0) and not pa.take_requeue()
    # every worker holds more than SLO − L(0, 1): K′ = 0 would be late, so the plan routes it, and a re-plan is due
    late = pa.dispatch(RequestView(1, 1.5, 1.5 + SLO, 0.97, 25, ALL), busy_cluster(backlog=SLO * 0.6), 1.5)
    assert (late.k_prime, late.queue_first) == (25, False) and not pa.in_queue_first
    assert pa.replan_due(1.5)  # at once, whatever the minimum gap
    assert pa.take_requeue() and not pa.take_requeue() and not pa.replan_due(1.5)
    assert pa.requeue_level(RequestView(0, 1.0, 1.0 + SLO, 0.97, 25, ALL)) == 25  # the new plan's level for it
    assert pa.requeue_level(RequestView(2, 1.0, 1.0 + SLO, None, 0, ())) == 0  # no neighbour: stays at K′ = 0
    pa.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], demand=1.0, time=2.0))  # all-K′ = 0, but within the gap
    assert not pa.in_queue_first
    pa.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], demand=1.0, time=3.5))
    assert pa.in_queue_first
    pa.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], served=1.0, demand=2.0, time=9.0))
    assert pa.in_queue_first  # stays on; a plan short of capacity would not have started it:
    fresh = make_policy("prompt_aware", cfg(replan_min_gap_s=2.0))
    fresh.dispatch(RequestView(0, 1.0, 1.0 + SLO, 0.97, 25, ALL), busy_cluster(backlog=SLO), 1.0)  # ends it
    fresh.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], served=1.0, demand=2.0, time=9.0))
    assert not fresh.in_queue_first
    assert not make_policy("prompt_aware", cfg(queue_first=False)).in_queue_first


def test_queue_first_ended_in_another_process_ends_here_without_a_second_re_route():
    """Live, each web process holds its own policy object: when another one ends the mode at t, this one ends it
    too (if it started before t), asks for no re-plan or re-route of its own, and counts the restart gap from t;
    an end older than the mode's start (an earlier mode's) leaves it on."""
    pa = make_policy("prompt_aware", cfg(replan_min_gap_s=2.0))
    assert pa.in_queue_first and pa.end_queue_first(1.0)  # the mode its initial plan started
    pa.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], demand=1.0, time=5.0))
    assert pa.in_queue_first
    assert not pa.end_queue_first(4.0) and pa.in_queue_first  # ended before this mode started
    assert pa.end_queue_first(6.0) and not pa.in_queue_first
    assert pa.queue_first_ended_at == 6.0
    assert not pa.take_requeue() and not pa.replan_due(6.5)
    assert not pa.end_queue_first(7.0)  # already off
    pa.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], demand=1.0, time=8.5))  # within the gap from 7.0
    assert not pa.in_queue_first
    pa.set_plan(plan([0] * 4, [1.0, 0, 0, 0, 0, 0], demand=1.0, time=9.0))
    assert pa.in_queue_first


def near_duplicates(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """Unit vectors all close to one prompt: every request finds a similar neighbour (high K*)."""
    rng = np.random.default_rng(seed)
    x = np.ones(d) + 0.02 * rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_simulator_absorbs_a_burst_the_queues_can_take_at_full_quality():
    """1 req/s on 8 workers (all-K′ = 0 capacity 1.3 req/s) and 8 more in 3 s: clipper_ha's queues absorb the
    burst on time, so queue-first serves every request at K′ = 0 as clipper_ha does; without it the plan
    approximates for the burst's rate."""
    arrivals = np.sort(np.concatenate([np.arange(0.0, 60.0, 1.0), np.linspace(30.0, 33.0, 8)]))
    emb = near_duplicates(10 + arrivals.size)
    on = simulate("prompt_aware", cfg(n=8), arrivals, emb, warm=10)
    off = simulate("prompt_aware", cfg(n=8, queue_first=False), arrivals, emb, warm=10)
    ha = simulate("clipper_ha", cfg(n=8), arrivals, emb, warm=10)
    assert (ha.finish <= ha.deadline).all() and (on.finish <= on.deadline).all()
    assert (on.k_prime == 0).all() and (on.quality == 1.0).all()
    assert (off.k_prime > 0).any() and off.quality.mean() < 1.0


def test_the_simulator_re_routes_what_queue_first_queued_when_a_burst_ends_it():
    """A burst far beyond 2 workers: the first requests go queue-first at K′ = 0; the one the queues cannot
    take ends the mode, the re-plan puts the workers at a higher level, and the queue-first requests still
    waiting are re-routed to it; the two that had started stay at K′ = 0."""
    arrivals = np.full(40, 1.0)
    emb = near_duplicates(10 + arrivals.size)
    res = simulate("prompt_aware", cfg(n=2), arrivals, emb, warm=10)
    assert (res.k_prime[:2] == 0).all() and (res.start[:2] == 1.0).all()
    assert (res.k_prime[2:4] > 0).all()  # queue-first queued them at K′ = 0, the re-plan re-routed them
    assert any(p["time"] == 1.0 for p in res.plans[1:])  # the re-plan the end of the mode asked for
    served = np.isfinite(res.finish)
    assert (res.finish[served] <= res.deadline[served]).all()  # shed, never served late
