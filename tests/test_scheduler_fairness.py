"""scheduler.fairness: the seeded heavy-tailed owner assignment and the per-user metrics (pure Python)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from scheduler.fairness import (
    FAIRNESS_COLUMNS,
    add_fairness_metrics,
    assign_owners,
    fairness_summary,
    jain_index,
    user_metrics,
    zipf_weights,
)


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1.0, 1.0, 1.0, 1.0], 1.0),  # everyone equal
        ([0.7] * 9, 1.0),
        ([5.0, 0.0, 0.0, 0.0], 0.25),  # one takes all: 1/n
        ([1.0, 0.0], 0.5),
        ([1.0, 2.0, 3.0], 36 / (3 * 14)),  # (Σx)² / (n Σx²)
        ([0.0, 0.0], 1.0),  # nobody got anything: nobody treated differently
        ([], 1.0),
        ([1.0, float("nan"), 1.0], 1.0),  # NaN (no data for that user) ignored
    ],
)
def test_jain_index_on_hand_made_numbers(values, expected):
    assert jain_index(values) == pytest.approx(expected)


def test_jain_index_refuses_negative_values():
    with pytest.raises(ValueError):
        jain_index([1.0, -1.0])


def test_owner_assignment_is_seeded():
    a, b = assign_owners(5000, seed=7), assign_owners(5000, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, assign_owners(5000, seed=8))
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 100


def test_owner_assignment_is_heavy_tailed():
    owners = assign_owners(50_000, n_users=100, seed=3)
    counts = np.sort(np.bincount(owners, minlength=100))[::-1]
    share = counts / counts.sum()
    expected = zipf_weights(100, 1.1)
    assert share[0] == pytest.approx(expected[0], abs=0.02)  # ~23 %: the heaviest user
    assert share[:10].sum() > 0.55  # the top tenth of the users send most requests
    assert share[50:].sum() < 0.15  # the bottom half few
    assert counts[0] > 50 * counts[-1]
    # Uniform weights (zipf_s = 0) are not heavy-tailed: the control.
    flat = np.bincount(assign_owners(50_000, zipf_s=0.0, seed=3), minlength=100)
    assert flat.max() < 2 * flat.min()


def test_sessions_repeat_the_previous_owner():
    solo = assign_owners(20_000, repeat=0.0, seed=5)
    runs = assign_owners(20_000, repeat=0.8, seed=5)
    same = lambda o: float(np.mean(o[1:] == o[:-1]))  # noqa: E731
    assert same(runs) > 0.75 > same(solo)
    assert assign_owners(0).size == 0 and assign_owners(1).size == 1
    with pytest.raises(ValueError):
        assign_owners(10, repeat=1.0)


def test_user_metrics_from_a_runs_arrays():
    # user 0: three on time (latencies 1, 2, 3); user 1: one late (latency 10), one dropped.
    arrival = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    deadline = arrival + 5.0
    finish = np.array([1.0, 3.0, 5.0, 13.0, np.nan])
    owners = np.array([0, 0, 0, 1, 1])
    per = user_metrics(arrival, deadline, finish, owners)
    assert list(per["user"]) == [0, 1] and list(per["requests"]) == [3, 2] and list(per["served"]) == [3, 1]
    assert list(per["on_time_ratio"]) == [1.0, 0.0] and list(per["violation_ratio"]) == [0.0, 1.0]
    assert list(per["mean_latency_s"]) == [2.0, 10.0]
    assert per["p99_latency_s"][0] == pytest.approx(np.percentile([1, 2, 3], 99)) and per["p99_latency_s"][1] == 10
    summary = fairness_summary(arrival, deadline, finish, owners, min_requests=1)
    assert summary["jain_on_time"] == pytest.approx(0.5)  # one user has it all
    assert summary["jain_mean_latency"] == pytest.approx(144 / (2 * 104))
    assert summary["user_violation_max"] == 1.0 and summary["user_violation_spread"] == 1.0
    assert summary["user_p99_latency_max_s"] == 10.0 and summary["top_user_share"] == pytest.approx(0.6)
    # min_requests leaves the two-request user out of the spread.
    strict = fairness_summary(arrival, deadline, finish, owners, min_requests=3)
    assert strict["users_counted"] == 1 and strict["jain_on_time"] == 1.0 and strict["user_violation_max"] == 0.0


def test_a_user_with_nothing_served_has_no_latency():
    per = user_metrics([0.0, 1.0], [1.0, 2.0], [np.nan, 1.5], [4, 9])
    assert math.isnan(per["p99_latency_s"][0]) and math.isnan(per["mean_latency_s"][0])
    with pytest.raises(ValueError):
        user_metrics([0.0], [1.0], [1.0], [1, 2])


def test_add_fairness_metrics_to_a_runs_metrics_dict():
    """Post hoc, from anything with arrival/deadline/finish arrays (a SimResult): FIFO serving of a
    heavy user's burst makes a light user's requests late."""
    rng = np.random.default_rng(0)
    n = 400
    arrival = np.sort(rng.uniform(0, 100, n))
    owners = assign_owners(n, n_users=10, seed=2)
    finish = arrival + np.where(owners == 0, 1.0, 3.0)
    run = SimpleNamespace(arrival=arrival, deadline=arrival + 2.0, finish=finish)
    metrics = {"slo_violation_ratio": 0.5}
    out = add_fairness_metrics(metrics, run, owners)
    assert out is metrics and metrics["slo_violation_ratio"] == 0.5
    for key, _, fmt in FAIRNESS_COLUMNS:
        fmt.format(metrics[key])
    assert metrics["user_violation_max"] == 1.0 and metrics["user_violation_spread"] == 1.0
    assert 0.0 < metrics["jain_on_time"] < 0.5
    assert metrics["user_p99_latency_max_s"] == pytest.approx(3.0)


def test_fairness_keys_name_exactly_what_the_summary_adds():
    import numpy as np

    from scheduler.fairness import FAIRNESS_KEYS, add_fairness_metrics, assign_owners

    class Run:
        arrival = np.arange(50.0)
        deadline = arrival + 10.0
        finish = arrival + 5.0

    assert set(add_fairness_metrics({}, Run(), assign_owners(50, seed=0))) == set(FAIRNESS_KEYS)
