"""The hindsight bound: hand-computed optima, light load, and dominance over simulated policy runs."""

import json

import numpy as np
import pytest

from scheduler.cache_model import ApproxCache
from scheduler.hindsight import (
    HINDSIGHT_NAMES,
    HindsightBound,
    hindsight,
    level_similarity,
    neighbour_lags,
    on_time_quality,
    on_time_work,
    quality_envelope,
)
from scheduler.interface import SchedulerConfig
from scheduler.profiles import load_profile
from scheduler.quality import QualityModel
from scheduler.simulator import simulate
from tests.sim_helpers import clustered_stream, fake_embed_file_64

PROFILE = load_profile("sdxl-a100")
LEVELS = list(PROFILE.levels)
SLO = 2 * PROFILE.latency(0, 1)  # 12.2 s


def burst(seed=1):
    """0.3 → 3.2 req/s → 0.3 over 300 s (Poisson by thinning); 8 workers carry ~2.8/s at K = 25."""
    rng = np.random.default_rng(seed)
    t, out, top = 0.0, [], 4.0
    while t < 300:
        t += rng.exponential(1.0 / top)
        if rng.random() * top < 0.3 + 2.9 * np.exp(-(((t - 150) / 45) ** 2)):
            out.append(t)
    return np.array(out)


def equidistant(n, s0, d=32):
    """One warm prompt and n requests, each at similarity exactly s0 to it and s0² to one another."""
    e = np.eye(d, dtype=np.float64)
    rows = [e[0]] + [s0 * e[0] + np.sqrt(1 - s0**2) * e[i + 1] for i in range(n)]
    return np.array(rows, dtype=np.float32)


def test_on_time_work_by_hand():
    cfg = SchedulerConfig(n_workers=1, profile=PROFILE, slo_s=SLO)
    work, batch = on_time_work(cfg, "slo")
    # L(K′, b) = L(0, b)(0.06 + 0.94 (50 − K′)/50); L(0, ·) = 6.10, 10.65, 15.785 (b = 3), 20.92, 25.7475 (b = 5)
    assert work[0] == pytest.approx(10.65 / 2) and batch[0] == 2  # b = 3 takes 15.8 s > SLO
    assert work[-1] == pytest.approx(20.92 * 0.53 / 4) and batch[-1] == 4  # b = 5 takes 13.6 s > SLO
    work_caps, batch_caps = on_time_work(cfg, "caps")  # the SLO/2 caps: 1 below 25, 2 at 25
    assert work_caps[0] == pytest.approx(6.10) and work_caps[-1] == pytest.approx(10.65 * 0.53 / 2)
    assert list(batch_caps) == [1, 1, 1, 1, 1, 2]


def test_overload_minimum_violations_match_the_hand_computation():
    n, workers, s0 = 20, 2, 0.97
    arr = np.zeros(n)  # all at once: every window is [0, SLO], capacity 2 × 12.2 worker-seconds
    emb = equidistant(n, s0)
    cfg = SchedulerConfig(n_workers=workers, profile=PROFILE, slo_s=SLO)
    bound = HindsightBound(cfg, arr, emb, warm=1)
    r = bound.result()
    # the most on time: all at K′ = 25 in batches of 4, 2.7719 s each: 24.4 / 2.7719 = 8.80 requests
    best = workers * SLO / (20.92 * 0.53 / 4)
    assert r.bound["on_time"] == pytest.approx(best, rel=1e-6)
    assert r.bound["violation_ratio"] == pytest.approx(1 - best / n, rel=1e-6)
    assert r.bound["quality"] == pytest.approx(1 - 2 * (1 - s0), abs=1e-6)  # Q(0.97, 25) = 0.94
    assert bound.min_violation_ratio == pytest.approx(1 - best / n, rel=1e-6)
    # spending violations buys quality: 4 on time fit at K′ = 0 (4 × 5.325 s ≤ 24.4 s)
    r4 = bound.result(violation_budget=0.8)
    assert r4.bound["violation_ratio"] == pytest.approx(0.8) and r4.bound["quality"] == pytest.approx(1.0)
    # the frontier: more violations allowed → quality never lower
    qs = [bound.result(v).bound["quality"] for v in (0.56, 0.6, 0.65, 0.7, 0.8)]
    assert all(a <= b + 1e-9 for a, b in zip(qs, qs[1:])) and qs[0] < qs[-1]
    # under the controller's batch caps K′ = 25 runs in pairs: 24.4 / 2.82225 requests
    caps = hindsight(cfg, arr, emb, 1, batch_rule="caps")
    assert caps.bound["on_time"] == pytest.approx(workers * SLO / (10.65 * 0.53 / 2), rel=1e-6)
    # no run does better than the bound, e.g. every worker at K = 25
    sim = simulate("clipper_ht", cfg, arr, emb, 1).summary(LEVELS, 30.0)
    assert sim["slo_violation_ratio"] >= r.bound["violation_ratio"] - 1e-9


def test_light_load_serves_everything_at_full_quality():
    arr = np.arange(30) * 15.0
    emb = clustered_stream(10 + arr.size, seed=4)
    cfg = SchedulerConfig(n_workers=2, profile=PROFILE, slo_s=SLO)
    r = hindsight(cfg, arr, emb, 10)
    m = r.summary(LEVELS, 30.0)
    assert m["slo_violation_ratio"] == 0.0 and m["effective_quality"] == pytest.approx(1.0)
    assert m["on_time"] == arr.size and np.all(r.k_prime == 0)
    assert np.all(r.finish <= r.deadline) and np.all(r.start >= r.arrival - 1e-9)


@pytest.fixture(scope="module", params=[8, 4], ids=["8-workers", "4-workers-overload"])
def burst_runs(request):
    arr = burst()
    warm = 100
    emb = clustered_stream(warm + arr.size)
    cfg = SchedulerConfig(n_workers=request.param, profile=PROFILE, slo_s=SLO)
    cache = ApproxCache(emb, LEVELS, 100_000, query_start=warm)
    runs = {
        name: simulate(name, cfg, arr, emb, warm, cache=cache)
        for name in ("prompt_aware", "proteus", "oracle", "clipper_ht", "clipper_ha", "nirvana")
    }
    bounds = {rule: HindsightBound(cfg, arr, emb, warm, cache, batch_rule=rule) for rule in ("slo", "caps")}
    return arr, emb, warm, cfg, cache, runs, bounds


def test_bound_dominates_every_policy_at_its_violation_level(burst_runs):
    *_, runs, bounds = burst_runs
    for name, run in runs.items():
        m = run.summary(LEVELS, 30.0)
        rules = ("slo",) if name.startswith("clipper") else ("slo", "caps")  # AIMD may exceed the caps
        for rule in rules:
            b = bounds[rule].result(m["slo_violation_ratio"]).summary(LEVELS, 30.0)
            assert b["slo_violation_ratio"] <= m["slo_violation_ratio"] + 1e-9, (name, rule)
            assert b["effective_quality"] >= on_time_quality(run) - 1e-9, (name, rule)
            assert b["effective_quality"] >= m["effective_quality"] - 1e-9, (name, rule)
            assert bounds[rule].quality_at(m["slo_violation_ratio"]) == pytest.approx(b["effective_quality"])
        assert bounds["slo"].min_violation_ratio <= m["slo_violation_ratio"] + 1e-9
    assert bounds["caps"].result().bound["quality"] <= bounds["slo"].result().bound["quality"] + 1e-9


def test_every_served_request_had_at_most_the_bounds_quality(burst_runs):
    """The optimistic cache: whatever neighbour a run found, the bound's Q at that level is at least as high."""
    *_, runs, bounds = burst_runs
    b = bounds["slo"]
    for name, run in runs.items():
        col = np.searchsorted(LEVELS, run.k_prime)
        assert np.all(run.quality <= b.q[np.arange(run.n), col] + 1e-6), name
        hit = run.k_prime > 0
        assert np.all(run.similarity[hit] <= b.level_sim[hit, col[hit]] + 1e-6), name


def test_result_is_a_consistent_run(burst_runs):
    arr, emb, warm, cfg, cache, _, bounds = burst_runs
    r = bounds["slo"].result()
    served = np.isfinite(r.finish)
    assert np.all(served ^ r.dropped)
    assert np.all(r.finish[served] <= r.deadline[served] + 1e-9)
    assert np.all(r.start[served] >= r.arrival[served] - 1e-9)
    assert set(np.unique(r.k_prime)) <= set(LEVELS)
    m = r.summary(LEVELS, 30.0)
    assert m["bound"]["on_time"] == pytest.approx(arr.size * (1 - m["slo_violation_ratio"]))
    assert abs(m["on_time"] - m["bound"]["on_time"]) <= m["bound"]["fractional_requests"] + 1
    json.dumps(m)  # the table's row serialises
    # the neighbour lists of a given cache and a fresh matrix product agree
    lags = neighbour_lags(cfg)
    assert np.allclose(level_similarity(emb, warm, arr, lags), bounds["slo"].level_sim, atol=1e-5, equal_nan=True)


def test_measured_table_is_replaced_by_its_monotone_envelope():
    qm = QualityModel.from_table([0.0, 0.5, 0.8], LEVELS, [[1, 0.8] + [0.7] * 4, [1, 0.6] + [0.7] * 4, [1] * 6])
    s = np.array([[np.nan, 0.6, 0.6, 0.6, 0.6, 0.6], [np.nan] * 6])
    q = quality_envelope(qm, s, LEVELS)
    assert q[0, 1] == pytest.approx(0.8)  # the lower bucket's 0.8, not 0.6
    assert q[1, 0] == 1.0 and np.all(np.isnan(q[1, 1:]))


def test_cli_accepts_hindsight(tmp_path, monkeypatch, capsys):
    import scheduler.simulate as cli

    monkeypatch.setattr(cli, "embed_prompt_file", fake_embed_file_64)
    trace = tmp_path / "t.txt"
    trace.write_text("".join(f"{x:.3f}\n" for x in np.sort(np.random.default_rng(0).uniform(0, 100, 200))))
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(300)))
    out = tmp_path / "out"
    names = ",".join(["nirvana", *HINDSIGHT_NAMES])
    argv = ["--trace", str(trace), "--prompts", str(prompts), "--warm", "50", "--peak-load", "1.2"]
    rc = cli.main([*argv, "--workers", "4", "--out", str(out), "--no-plots", "--policies", names])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["policies"]) == {"nirvana", *HINDSIGHT_NAMES}
    h = doc["policies"]["hindsight"]
    assert h["bound"]["batch_rule"] == "slo" and doc["policies"]["hindsight_caps"]["bound"]["batch_rule"] == "caps"
    assert h["slo_violation_ratio"] <= doc["policies"]["nirvana"]["slo_violation_ratio"]
    assert "hindsight" in capsys.readouterr().out
