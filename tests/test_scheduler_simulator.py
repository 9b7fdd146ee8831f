"""Simulator conservation and determinism, the cache model, and the CLI end to end (tiny fixtures)."""

import json

import numpy as np
import pytest

from scheduler.cache_model import ApproxCache
from scheduler.interface import SchedulerConfig
from scheduler.metrics import format_table, summarize
from scheduler.policies import POLICY_NAMES
from scheduler.profiles import load_profile
from scheduler.simulator import simulate
from tests.sim_helpers import cfg, clustered_stream, fake_embed_file

PROFILE = load_profile("sdxl-a100")
LEVELS = list(PROFILE.levels)
SLO = 2 * PROFILE.latency(0, 1)


def poisson(rate_fn, t_end, max_rate=4.0, seed=1):
    """Non-homogeneous Poisson arrivals by thinning."""
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    while t < t_end:
        t += rng.exponential(1.0 / max_rate)
        if rng.random() * max_rate < rate_fn(t):
            out.append(t)
    return np.array(out)


@pytest.fixture(scope="module")
def workload():
    # 0.3 → 3.2 req/s → 0.3 (the 8-worker cluster carries ~2.8/s at K = 25, ~1.3/s at K = 0)
    arr = poisson(lambda t: 0.3 + 2.9 * np.exp(-(((t - 200) / 60) ** 2)), 400)
    warm = 100
    emb = clustered_stream(warm + arr.size)
    return arr, emb, warm


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_conservation_every_arrival_ends_once(workload, name):
    arr, emb, warm = workload
    cfg = SchedulerConfig(n_workers=8, profile=PROFILE, slo_s=SLO)
    r = simulate(name, cfg, arr, emb, warm, seed=7)
    served = np.isfinite(r.finish)
    assert np.all(served ^ r.dropped)  # exactly one ending each
    assert np.all(r.finish[served] >= r.start[served] - 1e-9)
    assert np.all(r.start[served] >= r.arrival[served] - 1e-9)
    assert np.all(np.isnan(r.start[r.dropped]))  # a dropped request never ran
    assert np.all(r.batch[served] >= 1)
    assert set(np.unique(r.k_prime)) <= set(LEVELS)
    m = summarize(r.arrival, r.deadline, r.finish, r.quality, r.k_prime, r.redirected, LEVELS)
    assert m["on_time"] + m["late"] + m["dropped"] == m["requests"] == arr.size
    assert 0 <= m["slo_violation_ratio"] <= 1
    if name == "clipper_ha":
        assert np.all(r.k_prime == 0) and m["effective_quality"] == 1.0
    if name == "nirvana":
        assert np.array_equal(r.k_prime, r.k_star)


def test_deterministic_for_a_seed(workload):
    arr, emb, warm = workload
    cfg = SchedulerConfig(n_workers=8, profile=PROFILE, slo_s=SLO)
    a = simulate("prompt_aware", cfg, arr, emb, warm, seed=3)
    b = simulate("prompt_aware", cfg, arr, emb, warm, seed=3)
    for f in ("finish", "k_prime", "worker", "quality", "redirected", "dropped"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f


def test_prompt_aware_beats_baselines_on_a_burst(workload):
    arr, emb, warm = workload
    cfg = SchedulerConfig(n_workers=8, profile=PROFILE, slo_s=SLO)
    res = {}
    for name in ("prompt_aware", "clipper_ha", "clipper_ht"):
        r = simulate(name, cfg, arr, emb, warm)
        res[name] = summarize(r.arrival, r.deadline, r.finish, r.quality, r.k_prime, r.redirected, LEVELS)
    assert res["prompt_aware"]["slo_violation_ratio"] < res["clipper_ha"]["slo_violation_ratio"]
    assert res["prompt_aware"]["effective_quality"] > res["clipper_ht"]["effective_quality"]
    assert "prompt_aware" in format_table(res)


def test_an_unplanned_batch_overhead_lengthens_every_batch_and_the_waits_behind_it():
    arr = np.arange(4) * 0.5  # four requests at once on one worker: each waits for the ones before it
    emb = clustered_stream(10 + arr.size, seed=5)
    cfg = SchedulerConfig(n_workers=1, profile=PROFILE, slo_s=SLO)
    ideal = simulate("clipper_ha", cfg, arr, emb, 10)
    slow = simulate("clipper_ha", cfg, arr, emb, 10, batch_overhead_s=0.25)
    assert np.array_equal(slow.k_prime, ideal.k_prime)  # the scheduler plans with the profile alone
    ran = np.isfinite(slow.finish)
    service = slow.finish[ran] - slow.start[ran]
    ideal_service = ideal.finish[ran] - ideal.start[ran]
    assert np.allclose(service, ideal_service + 0.25)  # each batch holds its worker 0.25 s longer
    assert np.all(slow.start[ran][1:] > ideal.start[ran][1:])  # and the next one starts that much later


def test_overload_drops_after_twice_the_slo():
    arr = np.linspace(0, 60, 200)  # 3.3 req/s on one worker
    emb = clustered_stream(10 + arr.size, seed=5)
    cfg = SchedulerConfig(n_workers=1, profile=PROFILE, slo_s=SLO)
    r = simulate("clipper_ha", cfg, arr, emb, 10)
    assert r.dropped.sum() > 100
    served = np.isfinite(r.finish)
    assert np.all(r.start[served] - r.arrival[served] <= 2 * SLO + 1e-9)


def test_cache_lookup_is_exact_nearest_and_lcbfu_evicts():
    emb = clustered_stream(300, seed=2)
    c = ApproxCache(emb, LEVELS, capacity=40, query_start=20, top_m=4)
    c.warm(20)
    rng = np.random.default_rng(0)
    for i in range(20, 300):
        j, s = c.lookup(i)
        sims = emb[:i] @ emb[i]
        sims[~c.in_cache[:i]] = -np.inf
        assert s == pytest.approx(float(sims.max()), abs=1e-5) and c.in_cache[j]  # ties: any of them
        if rng.random() < 0.3:
            c.hit(j, 25)
        c.insert(i, int(rng.choice([0, 10, 25])))
        assert c.size <= 40
    assert c.evictions > 0
    # levels: a request served at K′ adds only the levels above it
    c2 = ApproxCache(emb[:5], LEVELS, capacity=10, query_start=1)
    c2.insert(0, 10)
    assert c2.available(0) == (15, 20, 25)
    c2.insert(1, 25)
    assert not c2.in_cache[1]
    # LCBFU: the lowest hits × K leaves first, the oldest among equals
    c3 = ApproxCache(emb[:5], LEVELS, capacity=2, query_start=1)
    c3.insert(0, 0)
    c3.insert(1, 0)
    c3.hit(0, 5)
    c3.insert(2, 0)
    assert c3.in_cache[0] and not c3.in_cache[1] and c3.in_cache[2]


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    import scheduler.simulate as cli

    monkeypatch.setattr(cli, "embed_prompt_file", fake_embed_file)
    trace = tmp_path / "t.txt"
    rng = np.random.default_rng(0)
    trace.write_text("".join(f"{int(x)},1,300\n" for x in np.sort(rng.uniform(0, 60_000, 400))))
    trace2 = tmp_path / "s.txt"
    trace2.write_text("".join(f"{x:.3f}\n" for x in np.sort(rng.uniform(0, 60, 100))))
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(600)))
    out = tmp_path / "out"
    rc = cli.main(
        [
            "--trace",
            str(trace),
            str(trace2),
            "--prompts",
            str(prompts),
            "--warm",
            "50",
            "--peak-load",
            "0.8",
            "--time-scale",
            "3",
            "--workers",
            "4",
            "--out",
            str(out),
            "--policies",
            "prompt_aware,clipper_ha,proteus",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["policies"]) == {"prompt_aware", "clipper_ha", "proteus"}
    keys = {
        "slo_violation_ratio",
        "effective_quality",
        "max_quality_drop",
        "throughput_peak",
        "throughput_mean",
        "p99_latency_s",
        "hit_rate",
        "redirect_rate",
        "requests",
    }
    for m in doc["policies"].values():
        assert keys <= set(m)
    assert doc["config"]["warm"] == 50 and doc["config"]["scheduler"]["n_workers"] == 4
    assert (out / "timeseries.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "prompt_aware" in printed and "SLO viol." in printed
    # fewer prompts than requests: the rest of the stream is synthesised, and it says so
    rc = cli.main(["--trace", str(trace), "--prompts", str(prompts), "--warm", "590", "--out", str(out), "--no-plots"])
    assert rc == 0
    assert "synthesised" in capsys.readouterr().err
    # a warm set that takes the whole file: says so and stops
    rc = cli.main(["--trace", str(trace), "--prompts", str(prompts), "--warm", "600", "--out", str(out), "--no-plots"])
    assert rc == 2
    assert "--warm" in capsys.readouterr().err


def test_lookup_many_matches_lookup():
    """The oracle's batched forecast lookup gives what one lookup per request would, fallbacks included."""
    emb = clustered_stream(400, seed=3)
    c = ApproxCache(emb, LEVELS, capacity=60, query_start=30, top_m=3)
    c.warm(30)
    rng = np.random.default_rng(1)
    for i in range(30, 400, 7):
        js, ss = c.lookup_many(i, min(400, i + 25))
        for k, r in enumerate(range(i, min(400, i + 25))):
            j, s = c.lookup(r)
            assert js[k] == j and (np.isnan(ss[k]) if np.isnan(s) else ss[k] == s)
        for r in range(i, min(400, i + 7)):  # grow the cache, sometimes evicting warm entries
            if rng.random() < 0.7:
                c.insert(r, int(rng.choice([0, 10, 25])))
    assert c.fallbacks > 0


def test_the_oracles_lookahead_sets_how_far_ahead_its_plans_see():
    """The oracle plans at t for the true demand of [t + a − period, t + a): with a = one period (the default)
    the plan of t = 10 s already serves the burst of 15–19 s; with a = 0 it plans for the calm of 0–10 s, as a
    controller that measured the last period exactly would."""
    arrivals = np.sort(np.concatenate([np.arange(0.0, 30.0, 2.0), np.linspace(15.0, 19.0, 40)]))
    emb = clustered_stream(10 + arrivals.size, seed=5)

    def plan_at_10(**kw) -> list[int]:
        res = simulate("oracle", cfg(n=16, event_replan=False, **kw), arrivals, emb, warm=10)
        return next(p["workers_per_level"] for p in res.plans if p["time"] == 10.0)

    foresight, hindsight = plan_at_10(), plan_at_10(oracle_lookahead_s=0.0)
    assert sum(hindsight[1:]) == 0  # every worker at K = 0: the last period was calm
    assert sum(foresight[1:]) > 0  # workers at K > 0 for the burst to come
    assert plan_at_10(oracle_lookahead_s=25.0) == foresight  # at most one period ahead


def test_oracle_at_a_is_the_oracle_that_sees_a_seconds_ahead_under_its_own_name():
    """`oracle@A` runs the oracle with `oracle_lookahead_s` = A, so that one run holds several side by side."""
    arrivals = np.sort(np.concatenate([np.arange(0.0, 30.0, 2.0), np.linspace(15.0, 19.0, 40)]))
    emb = clustered_stream(10 + arrivals.size, seed=5)
    base = cfg(n=16, event_replan=False)
    variant = simulate("oracle@0", base, arrivals, emb, warm=10)
    direct = simulate("oracle", cfg(n=16, event_replan=False, oracle_lookahead_s=0.0), arrivals, emb, warm=10)
    default = simulate("oracle", base, arrivals, emb, warm=10)
    assert variant.policy == "oracle@0" and direct.policy == "oracle"
    variant_plans, direct_plans, default_plans = (
        [p["workers_per_level"] for p in r.plans] for r in (variant, direct, default)
    )
    assert variant_plans == direct_plans and np.array_equal(variant.k_prime, direct.k_prime)
    assert variant_plans != default_plans  # it is not the default oracle under another name
    assert base.oracle_lookahead_s is None  # the caller's config is left as it was
    with pytest.raises(ValueError, match="oracle@A"):
        simulate("oracle@soon", base, arrivals, emb, warm=10)
