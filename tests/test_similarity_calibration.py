"""Similarity calibration (issue 14 item 3): a monotone map of similarities onto Argus's K* mix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scheduler import sweep
from scheduler.cache_model import ApproxCache
from scheduler.prompt_stream import nearest_predecessors
from scheduler.quality import QualityModel, quality_from_spec
from scheduler.similarity_calibration import ARGUS_K_STAR_MIX, calibration, k_star_mix, quantile_map
from tests.sim_helpers import clustered_stream
from tests.test_scheduler_sweep import tiny_workload_argv


def test_the_map_sends_the_observed_similarities_onto_the_target_mix():
    rng = np.random.default_rng(0)
    observed = np.clip(rng.normal(0.85, 0.1, 5000), -1, 1)  # much reuse, like our MiniLM stream
    fn = quantile_map(observed, ARGUS_K_STAR_MIX)
    np.testing.assert_allclose(k_star_mix(fn(observed)), ARGUS_K_STAR_MIX, atol=0.01)
    s = np.sort(observed)
    assert (np.diff(fn(s)) >= -1e-12).all()  # monotone: every lookup keeps its neighbour
    assert np.isnan(fn(np.array([np.nan]))).all()  # no neighbour stays no neighbour


def test_an_empty_target_bin_receives_nothing():
    observed = np.linspace(0.2, 0.99, 2000)
    mix = (0.5, 0.0, 0.0, 0.0, 0.0, 0.5)  # misses and K* = 25 only
    np.testing.assert_allclose(k_star_mix(quantile_map(observed, mix)(observed)), mix, atol=0.002)


def test_bad_mixes_are_errors():
    with pytest.raises(ValueError, match="one per K\\* bin"):
        quantile_map(np.linspace(0, 1, 10), [0.5, 0.5])
    with pytest.raises(ValueError, match="unknown similarity calibration"):
        calibration("clip", np.eye(3, dtype=np.float32))


def test_the_calibrated_cache_keeps_neighbours_and_reports_calibrated_similarities():
    emb = clustered_stream(600, seed=2)
    warm = 100
    plain = ApproxCache(emb, [0, 5, 10, 15, 20, 25], 10_000, query_start=warm)
    mapped = ApproxCache(emb, [0, 5, 10, 15, 20, 25], 10_000, query_start=warm)
    fn = calibration("argus", emb, warm)
    mapped.set_similarity_map(fn)
    for cache in (plain, mapped):
        cache.warm(warm)
    for i in range(warm, 600, 7):
        (j0, s0), (j1, s1) = plain.lookup(i), mapped.lookup(i)
        assert j0 == j1 and s1 == pytest.approx(float(fn(np.array(s0))))
    j_many, s_many = mapped.lookup_many(warm, 600)
    assert (j_many == plain.lookup_many(warm, 600)[0]).all()
    sims, _ = nearest_predecessors(emb)
    # The stream's own nearest-predecessor similarities, mapped, have Argus's mix.
    np.testing.assert_allclose(k_star_mix(fn(sims[warm - 1 :])), ARGUS_K_STAR_MIX, atol=0.01)
    assert np.isfinite(s_many).all()


def test_the_argus_yardstick_is_one_value_per_level_whatever_the_similarity():
    q = quality_from_spec("argus")
    for s in (0.3, 0.7, 0.99):
        assert q.q(s, 0) == 1.0 and q.q(s, 5) == pytest.approx(0.97046) and q.q(s, 25) == pytest.approx(0.9152)
    assert quality_from_spec("nirvana").q(0.9, 25) == QualityModel().q(0.9, 25)
    with pytest.raises(ValueError, match="argus"):
        quality_from_spec("clip")


def test_sweep_runs_with_the_argus_yardstick_and_calibration(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = tiny_workload_argv(tmp_path, monkeypatch, load="1.0", seeds=2, distinct=60)
    argv += ["--policies", "prompt_aware,proteus"]
    argv += ["--jobs", "1", "--max-requests", "150"]
    assert sweep.main(argv + ["--out", str(out / "plain")]) == 0
    harder = ["--quality", "argus", "--similarity-calibration", "argus"]
    assert sweep.main(argv + ["--out", str(out / "argus"), *harder]) == 0
    assert "quality model: argus · similarity calibration: argus" in capsys.readouterr().out
    plain, argus = (json.loads((out / d / "sweep.json").read_text()) for d in ("plain", "argus"))
    assert argus["config"]["similarity_calibration"] == "argus"
    assert argus["config"]["scheduler"]["quality"]["source"] == "argus"
    served = argus["workloads"]["tw load 1 x2"]["policies"]["prompt_aware"]["effective_quality"]["mean"]
    assert 0.9152 - 1e-9 <= served <= 1.0  # every served Q is one of Argus's per-level values
    assert served != plain["workloads"]["tw load 1 x2"]["policies"]["prompt_aware"]["effective_quality"]["mean"]
