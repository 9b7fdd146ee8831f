"""proteus_models (issue 14): PROTEUS as published — a model variant per worker, load time on a switch."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.demand import DemandEstimate
from scheduler.model_variants import VARIANTS, ordered, parse_quality, variant_profile
from scheduler.policies import SIM_POLICY_NAMES, make_policy
from scheduler.simulator import simulate
from tests.sim_helpers import cfg, clustered_stream


def test_variant_profile_is_the_diffserve_figures_best_first():
    variants = ordered(VARIANTS)
    assert [v.name for v in variants][0] == "sdxl"
    prof = variant_profile(variants)
    assert prof.latency(0, 1) == pytest.approx(6.1)  # SDXL-base, batch 1 (DiffServe A100)
    assert prof.batch_sizes == (1, 2, 4, 8, 16)
    assert all(prof.latency(i, 1) < 6.1 for i in range(1, len(variants)))


def test_plan_uses_faster_variants_only_under_load():
    config = cfg(8)
    pol = make_policy("proteus_models", config)
    q = [pol.variant_quality_of] * len(pol.levels)
    light = pol.plan(10.0, DemandEstimate(pol.levels, [0.2] + [0.0] * 4, q))
    assert set(light.worker_levels) == {0}  # 8 SDXL workers carry 0.2 req/s
    heavy = pol.plan(20.0, DemandEstimate(pol.levels, [20.0] + [0.0] * 4, q))
    assert max(heavy.worker_levels) > 0 and heavy.served_rate == pytest.approx(20.0, rel=1e-3)


def test_parse_quality_names_the_variants():
    assert parse_quality("sdxl=1,sdxs=0.5") == {"sdxl": 1.0, "sdxs": 0.5}
    with pytest.raises(ValueError):
        parse_quality("sd3=1")


def _run(load: float, **kw):
    config = cfg(4, **kw)
    n, warm = 1500, 100
    emb = clustered_stream(warm + n, seed=3)
    rate = load * config.top_level_capacity()
    arrivals = np.cumsum(np.random.default_rng(0).exponential(1.0 / rate, n))
    return config, simulate("proteus_models", config, arrivals, emb, warm)


def test_simulated_switches_cost_the_load_time_and_quality_is_the_variants():
    config, run = _run(0.9)
    assert "proteus_models" in SIM_POLICY_NAMES
    qualities = {round(v.quality, 6) for v in VARIANTS}
    served = run.quality[np.isfinite(run.finish)]
    assert set(np.round(served, 6)) <= qualities and (served < 1.0).any()  # faster variants were used
    assert np.all(run.k_prime == 0)  # no cache: every request is a full generation of its variant
    switched = [p for a, p in zip(run.plans, run.plans[1:]) if a["workers_per_level"] != p["workers_per_level"]]
    assert switched
    # a worker serves nothing while it loads: no batch starts within the load time after a switch at t
    first = next(p for p in run.plans[1:] if p["workers_per_level"][0] < 4)
    began = np.isfinite(run.start)
    start, quality = run.start[began], run.quality[began]
    loading = (start > first["time"]) & (start < first["time"] + min(v.load_s for v in VARIANTS))
    assert not np.any(loading & (quality < 1.0))


def test_deterministic_and_quality_override():
    _, a = _run(0.9)
    _, b = _run(0.9)
    assert np.array_equal(a.finish, b.finish, equal_nan=True)
    _, c = _run(0.9, variant_quality={"sdxl_lightning": 0.5, "sd15": 0.5, "sd_turbo": 0.5, "sdxs": 0.5})
    assert set(np.round(c.quality[np.isfinite(c.finish)], 6)) <= {1.0, 0.5}
