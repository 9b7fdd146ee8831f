"""argus_oda (issue 14 item 2): Argus's greedy distribution aligner as an ablation of the MILP's route."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.demand import DemandEstimate
from scheduler.oda import align_distribution
from scheduler.policies import SIM_POLICY_NAMES, make_policy
from scheduler.simulator import simulate
from tests.sim_helpers import cfg, clustered_stream


def test_excess_is_pushed_down_and_spare_pulls_the_nearest_classes_up():
    #            K* class:  0   5  10  15  20  25
    flows = align_distribution([5, 1, 0, 0, 0, 1], [2, 1, 1, 1, 1, 1])
    expected = np.zeros((6, 6))
    expected[5, 5] = 1  # class 25 fills level 25 on its own
    expected[1, 4] = 1  # level 20 has no class of its own: it pulls the nearest class below (K* = 5)
    expected[0, 3] = expected[0, 2] = expected[0, 1] = 1  # levels 15, 10 and 5 pull from class 0 …
    expected[0, 0] = 2  # … and level 0 serves what is left
    np.testing.assert_allclose(flows, expected)


def test_overload_serves_the_same_share_of_everyone_waiting():
    flows = align_distribution([0, 0, 0, 0, 0, 4], [0, 0, 0, 0, 1, 2])
    assert flows[5, 5] == pytest.approx(2)  # level 25 full
    assert flows[5, 4] == pytest.approx(1)  # the excess pushed to level 20, which is full too
    assert flows.sum() == pytest.approx(3)  # 1 req/s is left for the dispatcher's redirect


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="share one list"):
        align_distribution([1, 2], [1, 2, 3])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 10), min_size=6, max_size=6),
    st.lists(st.floats(0, 10), min_size=6, max_size=6),
)
def test_flows_respect_demand_and_capacity_and_serve_everything_that_fits(demand, capacity):
    flows = align_distribution(demand, capacity)
    assert (flows >= -1e-9).all()
    assert (flows.sum(axis=1) <= np.asarray(demand) + 1e-9).all()
    assert (flows.sum(axis=0) <= np.asarray(capacity) + 1e-9).all()
    assert flows.sum() == pytest.approx(min(sum(demand), sum(capacity)), abs=1e-6)


def test_policy_keeps_the_controllers_workers_and_replaces_only_the_route():
    assert "argus_oda" in SIM_POLICY_NAMES
    config = cfg(8)
    ours, oda = make_policy("prompt_aware", config), make_policy("argus_oda", config)
    q = [[1.0 - 0.01 * j * (j > i) for j in range(6)] for i in range(6)]  # a loss above each class's K*
    demand = DemandEstimate(ours.levels, [0.2, 0.1, 0.1, 0.1, 0.1, 0.6], q, time=10.0)
    mine, theirs = ours.plan(10.0, demand), oda.plan(10.0, demand)
    assert theirs.workers_per_level == mine.workers_per_level
    expected = align_distribution(np.asarray(demand.rates) * config.headroom, mine.capacity)
    np.testing.assert_allclose(theirs.flows, expected)
    assert oda.current is theirs and theirs.expected_quality <= mine.expected_quality + 1e-9  # the MILP's is optimal


def test_simulated_run_serves_every_request():
    config = cfg(4)
    n, warm = 1200, 100
    emb = clustered_stream(warm + n, seed=5)
    arrivals = np.cumsum(np.random.default_rng(1).exponential(1.0 / (0.8 * config.top_level_capacity()), n))
    run = simulate("argus_oda", config, arrivals, emb, warm)
    assert (np.isfinite(run.finish) | run.dropped).all()  # served or explicitly dropped, none lost
    assert (run.k_prime > 0).any()  # it reuses the cache like prompt_aware
