"""Each policy behaves as defined; the dispatcher's route-and-batch and deadline redirect."""

import collections

import pytest

from scheduler.demand import DemandEstimate, default_class_quality
from scheduler.interface import ClusterView, RequestView, SchedulerConfig
from scheduler.planner import fixed_plan
from scheduler.policies import POLICY_NAMES, make_policy
from scheduler.profiles import load_profile
from scheduler.quality import QualityModel

PROFILE = load_profile("sdxl-a100")
LEVELS = list(PROFILE.levels)
ALL = tuple(lv for lv in LEVELS if lv > 0)
SLO = 2 * PROFILE.latency(0, 1)


def cfg(n=4, **kw):
    return SchedulerConfig(n_workers=n, profile=PROFILE, slo_s=SLO, **kw)


def req(s=0.97, k=25, now=0.0, avail=ALL, rid=0):
    return RequestView(rid, now, now + SLO, s, k, avail)


def test_registry():
    assert set(POLICY_NAMES) == {"prompt_aware", "clipper_ha", "clipper_ht", "nirvana", "proteus", "oracle"}
    with pytest.raises(ValueError):
        make_policy("nope", cfg())


def test_clipper_levels_and_aimd():
    ha, ht = make_policy("clipper_ha", cfg()), make_policy("clipper_ht", cfg())
    c = ClusterView.idle([0] * 4)
    assert ha.dispatch(req(), c, 0.0).k_prime == 0
    assert ht.dispatch(req(s=0.3, k=0), c, 0.0).k_prime == 25  # every request at the largest K
    assert ht.current.worker_levels == [25] * 4
    d = ha.dispatch(req(), c, 0.0)
    assert d.batch_size == 1
    ha.on_batch_done(d.worker_index, 0, 1, 6.1)  # full batch within the SLO: additive increase
    assert ha.aimd[d.worker_index] == 2
    ha.on_batch_done(d.worker_index, 0, 1, 6.1)  # a partial batch says nothing about the limit
    assert ha.aimd[d.worker_index] == 2
    ha.aimd[0] = 10
    ha.on_batch_done(0, 0, 10, 60.0)  # too slow: multiplicative decrease
    assert ha.aimd[0] == 9
    # routing: the worker that frees first
    busy = ClusterView([0] * 4, [2, 0, 1, 1], [1, 1, 1, 1], [20.0, 3.0, 10.0, 9.0], [12.2, 0.0, 6.1, 6.1])
    assert ha.dispatch(req(), busy, 0.0).worker_index == 1


def test_nirvana_serves_each_request_at_its_k_star_shortest_queue():
    nv = make_policy("nirvana", cfg())
    c = ClusterView([0] * 4, [3, 1, 0, 2], [1, 1, 1, 1], [5.0] * 4, [9.0, 3.0, 0.0, 6.0])
    for k in LEVELS:
        d = nv.dispatch(req(s=0.99, k=k), c, 0.0)
        assert d.k_prime == k and d.batch_size == 1 and d.worker_index == 2
    assert nv.dispatch(req(s=None, k=0, avail=()), c, 0.0).k_prime == 0


def plan_for(policy, rates):
    q = default_class_quality(LEVELS, QualityModel()).tolist()
    return policy.plan(10.0, DemandEstimate(LEVELS, rates, q, time=10.0))


def test_proteus_fractions_ignore_k_star():
    pr = make_policy("proteus", cfg(n=16), seed=1)
    plan = plan_for(pr, [1.2, 0.3, 0.3, 0.2, 0.4, 1.6])
    assert all(row == plan.route[0] for row in plan.route)
    c = ClusterView.idle(plan.worker_levels)
    hist = {k: collections.Counter() for k in (0, 25)}
    for i in range(3000):
        for k in (0, 25):
            hist[k][pr.dispatch(req(s=0.99 if k else 0.5, k=k, rid=i), c, 0.0).k_prime] += 1
    used = [k for k, f in zip(LEVELS, plan.route[0]) if f > 0]
    for k in (0, 25):
        assert set(hist[k]) <= set(used)
        for lv, f in zip(LEVELS, plan.route[0]):
            assert hist[k][lv] / 3000 == pytest.approx(f, abs=0.04)


def test_prompt_aware_low_load_spreads_with_batch_one():
    pa = make_policy("prompt_aware", cfg(n=4, queue_first=False))
    pa.set_plan(fixed_plan(LEVELS, 4, 25, pa.caps))
    c = ClusterView([25] * 4, [0, 0, 0, 0], [1, 1, 0, 1], [3.0, 3.0, 0.0, 3.0], [0.0] * 4)
    d = pa.dispatch(req(), c, 0.0)
    assert (d.worker_index, d.k_prime, d.batch_size, d.redirected) == (2, 25, 1, False)


def test_prompt_aware_high_load_fills_longest_open_batch():
    pa = make_policy("prompt_aware", cfg(n=4, queue_first=False))
    pa.set_plan(fixed_plan(LEVELS, 4, 25, pa.caps))
    assert pa.caps[25] == 2
    # every worker busy; worker 1 has 1 queued (an open batch of 2), worker 3 a full one
    c = ClusterView([25] * 4, [0, 1, 0, 2], [2, 2, 2, 2], [1.0, 1.0, 1.0, 1.0], [0.0, 2.8, 0.0, 5.6])
    d = pa.dispatch(req(), c, 0.0)
    assert d.worker_index == 1 and d.batch_size == 2 and not d.redirected


def test_prompt_aware_deadline_redirect_least_quality_loss():
    pa = make_policy("prompt_aware", cfg(n=4, queue_first=False))
    plan = fixed_plan(LEVELS, 4, 0, pa.caps)
    plan.worker_levels = [0, 0, 20, 25]
    pa.set_plan(plan)
    # level-0 workers are swamped; 20 and 25 are idle. A K*=15 request (s = 0.88) sampled to level 0
    # cannot make its deadline there; 20 loses less quality than 25 → redirected to worker 2 at K′ = 20.
    c = ClusterView([0, 0, 20, 25], [3, 3, 0, 0], [1, 1, 0, 0], [6.0, 6.0, 0.0, 0.0], [18.3, 18.3, 0.0, 0.0])
    d = pa.dispatch(req(s=0.88, k=15), c, 0.0)
    assert d.redirected and d.worker_index == 2 and d.k_prime == 20
    # if it can make it at its sampled level, no redirect
    c2 = ClusterView([0, 0, 20, 25], [0, 0, 0, 0], [1, 0, 0, 0], [6.0, 0.0, 0.0, 0.0], [0.0] * 4)
    d2 = pa.dispatch(req(s=0.88, k=15), c2, 0.0)
    assert not d2.redirected and d2.worker_index == 1 and d2.k_prime == 0


def test_prompt_aware_routes_by_k_star_class():
    pa = make_policy("prompt_aware", cfg(n=16, queue_first=False), seed=3)
    plan = plan_for(pa, [0.6, 0.3, 0.3, 0.2, 0.4, 1.4])
    c = ClusterView.idle(plan.worker_levels)
    for k_idx, k in enumerate(LEVELS):
        seen = collections.Counter(pa.dispatch(req(s=0.99, k=k, rid=i), c, 0.0).k_prime for i in range(400))
        allowed = {lv for lv, f in zip(LEVELS, plan.route[k_idx]) if f > 0}
        assert set(seen) <= allowed


def test_no_neighbour_runs_at_zero():
    for name in POLICY_NAMES:
        p = make_policy(name, cfg())
        d = p.dispatch(RequestView(0, 0.0, SLO, None, 0, ()), ClusterView.idle(p.current.worker_levels), 0.0)
        assert d.k_prime == 0, name


def test_effective_level_respects_cached_levels():
    pa = make_policy("clipper_ht", cfg())
    d = pa.dispatch(req(s=0.99, k=25, avail=(15, 20, 25)), ClusterView.idle([25] * 4), 0.0)
    assert d.k_prime == 25
    from scheduler.dispatch import effective_level

    assert effective_level(10, (15, 20, 25)) == 15
    assert effective_level(25, (5, 10)) == 10
    assert effective_level(5, ()) == 0


def random_busy_cluster(rng, n, all_busy=False):
    """A cluster of n workers with a mix of idle, just-free, busy and queued workers (ties included);
    all_busy: nobody is free before now + 1 (no early exit at an idle worker)."""
    c = ClusterView.idle([0] * n)
    now = rng.uniform(0, 100)
    for w in range(n):
        c.queue_len[w] = rng.choice([0, 0, 1, 2, 3])
        c.busy_until[w] = (
            now + rng.choice([1.0, 2.0, rng.uniform(1, 5)])
            if all_busy
            else rng.choice([now - 1, now, now + rng.uniform(0, 5), now + 1.0])
        )
        c.queued_s[w] = rng.choice([0.0, 2.0, rng.uniform(0, 10)]) if c.queue_len[w] else 0.0
    return c, now


@pytest.mark.parametrize("rule", ["shortest_queue", "soonest_free"])
def test_vector_path_picks_what_the_loop_picks(monkeypatch, rule):
    """Scans over 64+ workers take a numpy path (NIRVANA's shortest queue, soonest-free); it must pick the
    same worker, ties included."""
    import random

    import scheduler.dispatch as dispatch

    rng = random.Random(0)
    for _ in range(300):
        n = rng.choice([64, 100, 256])
        c, now = random_busy_cluster(rng, n, all_busy=rng.random() < 0.5)
        workers = sorted(rng.sample(range(n), rng.randint(64, n)))

        def pick(c=c, now=now, workers=workers):
            if rule == "shortest_queue":
                return dispatch.shortest_queue(c, now)
            return dispatch.soonest_free(workers, c, now)

        vector = pick()
        monkeypatch.setattr(dispatch, "VECTOR_MIN_WORKERS", 10**9)
        assert pick() == vector
        monkeypatch.undo()
