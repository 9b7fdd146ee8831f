"""The seeded sweep (issue 13 item 8): trace formats, what a seed changes, the statistics, the goal checks
and the CLI end to end on a tiny matrix (fake embeddings, no model)."""

import argparse
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

import scheduler.sweep as sweep
import scheduler.sweep_stats as sweep_stats
from scheduler.interface import SchedulerConfig
from scheduler.profiles import load_profile
from scheduler.simulator import simulate
from scheduler.traces import (
    RATE_CURVE_PEAK_RPS,
    TIMESTAMPED_COMPRESS,
    load_trace,
    load_trace_seeded,
    peak_rate,
    scale_trace,
    trace_format,
)
from tests.sim_helpers import fake_embed_file

PROFILE = load_profile("sdxl-a100")


# ---------------------------------------------------------------------------------------------- traces


def write_proteus(path, n=400, span_ms=60_000, seed=0):
    rng = np.random.default_rng(seed)
    path.write_text("".join(f"{int(x)},1,300\n" for x in np.sort(rng.uniform(0, span_ms, n))))
    return path


def tiny_workload_argv(tmp_path, monkeypatch, load: str, seeds: int, distinct: int) -> list[str]:
    """Sweep flags for one small workload on files made here (300 PROTEUS arrivals, 400 prompts of `distinct`
    subjects, fake embeddings): what the CLI tests of the sweep's sibling commands start from."""
    monkeypatch.setattr(sweep, "embed_prompt_file", fake_embed_file)
    write_proteus(tmp_path / "t.txt", n=300, seed=1)
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i % distinct}, take {i}\n" for i in range(400)))
    argv = ["--traces", f"tw={tmp_path}/t.txt", "--prompts", str(prompts), "--warm", "50", "--loads", load]
    return argv + ["--time-scales", "2", "--seeds", str(seeds), "--workers", "4"]


def write_rate_curve(path, bins=30):
    shape = 1.0 + np.sin(np.linspace(0, np.pi, bins))  # 1 → 2 → 1, like the Azure shape
    path.write_text(",hour,invocations\n" + "".join(f"{i},{i},{v}\n" for i, v in enumerate(shape)))
    return path, shape


def write_gentd(path):
    """Three days: a quiet day, a busy day (a morning burst), a quiet day; IMG_2_IMG rows mixed in."""
    rows = ["gmt_create,predict_type,predict_status,exec_time_seconds,groupId"]
    day = 86_400
    stamp = lambda s: np.datetime_as_string(np.datetime64("2024-11-15T00:00:00") + np.timedelta64(int(s), "s"))
    for s in range(0, day, 3600):  # day 1: one an hour
        rows.append(f"{stamp(s).replace('T', ' ')},TXT_2_IMG,SUCCEED,30.0,G0")
    for s in range(day + 8 * 3600, day + 10 * 3600, 60):  # day 2: one a minute for two hours
        rows.append(f"{stamp(s).replace('T', ' ')},TXT_2_IMG,FAILED,30.0,G1")
        rows.append(f"{stamp(s + 5).replace('T', ' ')},IMG_2_IMG,SUCCEED,30.0,G1")
    for s in range(2 * day, 3 * day, 7200):  # day 3: one every two hours
        rows.append(f"{stamp(s).replace('T', ' ')},TXT_2_IMG,SUCCEED,30.0,G2")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_three_trace_formats_parse(tmp_path):
    proteus = write_proteus(tmp_path / "p.txt", n=5)
    proteus.write_text("# comment\n1000,1,300\n250,1,300\n4000,1,300\n")
    rate, shape = write_rate_curve(tmp_path / "azure.csv")
    gentd = write_gentd(tmp_path / "gentd.csv")
    assert [trace_format(x) for x in (proteus, rate, gentd)] == ["events", "rate_curve", "timestamped"]

    # PROTEUS: milliseconds, sorted, from 0 (unchanged behaviour)
    assert load_trace(str(proteus)).tolist() == [0.0, 0.75, 3.75]

    # rate curve: a seeded Poisson draw, 1 s per bin, the peak bin at RATE_CURVE_PEAK_RPS
    a = load_trace(str(rate))
    expected = RATE_CURVE_PEAK_RPS * (shape / shape.max()).sum()
    assert abs(a.size - expected) < 5 * math.sqrt(expected)
    assert a[-1] < shape.size and np.all(np.diff(a) >= 0)
    assert abs(peak_rate(a) - RATE_CURVE_PEAK_RPS) < 0.1 * RATE_CURVE_PEAK_RPS
    assert np.array_equal(a, load_trace_seeded(str(rate), 0))
    assert np.array_equal(load_trace_seeded(str(rate), 3), load_trace_seeded(str(rate), 3))
    assert not np.array_equal(load_trace_seeded(str(rate), 3), a)

    # timestamped: TXT_2_IMG rows (any status; no IMG_2_IMG) of the busiest 24 h — from day 1 10:00, which
    # holds day 1's last 14 hourly rows and day 2's 120-minute burst — with time divided by 300
    g = load_trace(str(gentd))
    assert g.size == 14 + 120 and g[0] == 0 and np.all(np.diff(g) >= 0)
    assert np.allclose(np.diff(g[:14]), 3600 / TIMESTAMPED_COMPRESS)
    assert np.allclose(np.diff(g[-120:]), 60 / TIMESTAMPED_COMPRESS)

    # several files (formats mixed) merge
    both = load_trace([str(proteus), str(rate)])
    assert abs(both.size - 3 - expected) < 5 * math.sqrt(expected) and both[0] == 0


def test_a_trace_spec_expands_globs_and_names_bare_paths(tmp_path):
    for name in ("b.txt", "a.txt"):
        write_proteus(tmp_path / name, n=3)
    spec = sweep.parse_trace_spec(f"tw={tmp_path}/*.txt")
    assert spec.name == "tw" and [p.rsplit("/", 1)[1] for p in spec.paths] == ["a.txt", "b.txt"]
    assert sweep.parse_trace_spec(str(tmp_path / "a.txt")).name == "a"
    with pytest.raises(ValueError, match="no file"):
        sweep.parse_trace_spec(f"x={tmp_path}/*.csv")


# ------------------------------------------------------------------------------------------- workloads


def units_for(specs, seeds, jitter=1.0, warm=50, n_prompts=2000, max_requests=None, loads=(1.0,), scales=(2.0,)):
    args = argparse.Namespace(warm=warm, max_requests=max_requests, jitter=jitter)
    cfg = SchedulerConfig(n_workers=4, profile=PROFILE, slo_s=2 * PROFILE.latency(0, 1))
    return sweep.build_units(args, specs, list(loads), list(scales), seeds, cfg.top_level_capacity(), n_prompts)


def test_a_seed_changes_the_workload_and_the_same_seed_repeats_it(tmp_path):
    event = sweep.TraceSpec("tw", (str(write_proteus(tmp_path / "p.txt")),))
    curve = sweep.TraceSpec("az", (str(write_rate_curve(tmp_path / "a.csv")[0]),))
    first, _ = units_for([event, curve], [0, 1, 2])
    again, _ = units_for([event, curve], [0, 1, 2])
    for a, b in zip(first, again):
        assert np.array_equal(a.arrivals, b.arrivals) and a.offset == b.offset
    for trace in ("tw", "az"):
        mine = [u for u in first if u.trace == trace]
        assert not np.array_equal(mine[0].arrivals[:50], mine[1].arrivals[:50])  # jittered differently
        assert len({u.offset for u in mine}) > 1  # a different prompt window
    # no jitter: the rate curve's Poisson draw still depends on the seed; an event trace replays the
    # simulator's rescaled arrivals exactly (only the prompts move)
    az = units_for([curve], [0, 1], jitter=0.0)[0]
    assert not np.array_equal(az[0].arrivals[:50], az[1].arrivals[:50])
    plain, _ = units_for([event], [0, 1], jitter=0.0)
    capacity = SchedulerConfig(n_workers=4, profile=PROFILE, slo_s=2 * PROFILE.latency(0, 1)).top_level_capacity()
    reference = scale_trace(load_trace(list(event.paths)), 2.0, 1.0, capacity)
    assert all(np.array_equal(u.arrivals, reference) for u in plain)


def test_a_long_workload_is_capped_around_its_peak(tmp_path):
    t = np.concatenate([np.linspace(0, 100, 200), np.linspace(100.1, 105, 300), np.linspace(105.1, 300, 200)])
    out = sweep.cap_window(t, 100)
    assert out.size == 100 and out[0] == 0
    assert np.allclose(np.diff(out), np.diff(t)[250:349])  # the middle of the dense stretch
    assert sweep.cap_window(t, 10_000) is t
    spec = sweep.TraceSpec("tw", (str(write_proteus(tmp_path / "p.txt")),))  # 125 requests at load 1 × 2
    units, notes = units_for([spec], [0], n_prompts=150, warm=50, max_requests=100)
    assert units[0].arrivals.size == 100 and units[0].uncapped == 125
    assert notes and "capped to 100" in notes[0]
    units, _ = units_for([spec], [0, 1, 2], max_requests=100)  # the prompts have spare lines: windows move
    assert all(u.arrivals.size == 100 for u in units) and len({u.offset for u in units}) > 1


def test_a_workload_longer_than_the_prompt_file_replays_a_synthesised_continuation(tmp_path):
    spec = sweep.TraceSpec("tw", (str(write_proteus(tmp_path / "p.txt")),))  # 125 requests at load 1 × 2
    units, notes = units_for([spec], [0], n_prompts=150, warm=50)  # the file has prompts for 100 of them
    assert units[0].arrivals.size == 125 and not units[0].capped and units[0].offset == 0
    assert notes and "25 prompts synthesised" in notes[0]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i % 40}, variant {i}\n" for i in range(150)))
    emb = fake_embed_file(prompts)
    window, lists = sweep._prompt_window(emb, 0, 50, 125, seed=0)
    assert window.shape[0] == 175 and lists is not None  # the file, then 25 synthesised prompts
    np.testing.assert_array_equal(window[:150], emb)
    short, none = sweep._prompt_window(emb, 10, 50, 60, seed=0)
    assert none is None and np.array_equal(short, emb[10:120])  # fits: the file's own window, exact lists


def test_a_unit_runs_the_simulator_cli_helpers(tmp_path):
    """With no jitter and no spare prompts, a sweep cell is the simulator's own run of that workload."""
    spec = sweep.TraceSpec("tw", (str(write_proteus(tmp_path / "p.txt", n=300)),))
    cfg = SchedulerConfig(n_workers=4, profile=PROFILE, slo_s=2 * PROFILE.latency(0, 1))
    reference = scale_trace(load_trace(list(spec.paths)), 2.0, 1.0, cfg.top_level_capacity())
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(50 + reference.size)))
    emb = fake_embed_file(prompts)
    units, _ = units_for([spec], [4], jitter=0.0, n_prompts=emb.shape[0])
    shared = dict(
        config=cfg,
        embeddings=emb,
        warm=50,
        levels=list(cfg.levels),
        policies=["prompt_aware", "clipper_ht"],
        cache_capacity=100_000,
        resumed_levels="above",
        window=30.0,
        cache_scope="shared",
        tenants=10,
    )
    sweep._init_worker(shared, quiet=False)
    _, got = sweep._run_unit((0, units[0]))
    direct = simulate("prompt_aware", cfg, reference, emb, 50, seed=4).summary(list(cfg.levels), 30.0)
    for key in ("slo_violation_ratio", "effective_quality", "p99_latency_s", "hit_rate"):
        assert got["prompt_aware"][key] == direct[key]
    assert list(got) == ["prompt_aware", "clipper_ht"]


# ------------------------------------------------------------------------------------------ statistics


def test_mean_ci_and_paired_differences_on_hand_made_numbers():
    m = sweep_stats.mean_ci([1.0, 2.0, 3.0, 4.0])
    half = stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2
    assert m["mean"] == 2.5 and m["n"] == 4 and m["ci"] == pytest.approx(half) and half == pytest.approx(2.0542, 1e-4)
    assert math.isnan(sweep_stats.mean_ci([5.0])["ci"]) and sweep_stats.mean_ci([5.0, None, math.nan])["n"] == 1
    pa = {0: 0.90, 1: 0.92, 2: 0.91}
    pr = {0: 0.89, 1: 0.90, 2: 0.905}
    cells = [
        {"trace": "t", "load": 1.0, "time_scale": 2.0, "seed": s, "policy": p, "metrics": {"effective_quality": q[s]}}
        for p, q in (("prompt_aware", pa), ("proteus", pr))
        for s in (0, 1, 2)
    ]
    w = sweep_stats.aggregate(cells)["t load 1 x2"]
    assert w["policies"]["proteus"]["effective_quality"]["mean"] == pytest.approx(np.mean(list(pr.values())))
    d = w["paired"]["proteus"]["effective_quality"]
    diffs = [pr[s] - pa[s] for s in (0, 1, 2)]
    assert d["mean"] == pytest.approx(np.mean(diffs)) and d["ci"] == pytest.approx(sweep_stats.mean_ci(diffs)["ci"])
    # the pairing: the paired CI is narrower than the unpaired spread suggests
    assert d["ci"] < stats.t.ppf(0.975, 2) * (np.std(list(pa.values()), ddof=1) + np.std(list(pr.values()), ddof=1))
    flat = sweep_stats.flatten_metrics({"a": 1, "mix": {"0": 0.5}, "name": "x", "flag": True})
    assert flat == {"a": 1.0, "mix.0": 0.5}


def test_oracle_at_a_is_a_policy_name_of_the_sweep():
    assert sweep._policy_list("prompt_aware,oracle@1.5")[0] == ["prompt_aware", "oracle@1.5"]
    with pytest.raises(ValueError, match="oracle@A"):
        sweep._policy_list("prompt_aware,oracle@soon")


@pytest.mark.parametrize(
    "flag, value",
    [("--seeds", "0"), ("--warm", "-5"), ("--workers", "0"), ("--period", "0"), ("--slo", "nan"), ("--jobs", "0"),
     ("--jitter", "-1"), ("--max-requests", "0"), ("--util-target", "1.5")],
)  # fmt: skip
def test_a_value_that_would_crash_or_hang_the_sweep_is_a_usage_error(flag, value, capsys):
    """A period of 0 looped forever, no seed or no worker ended in a traceback: argparse refuses them."""
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--traces", "/nonexistent.txt", "--prompts", "/nonexistent.txt", flag, value])
    assert exc.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err


def test_loads_and_time_scales_must_be_above_zero(tmp_path, capsys):
    write_proteus(tmp_path / "t.txt", n=20, seed=1)
    for flag in ("--loads", "--time-scales"):
        assert sweep.main(["--traces", str(tmp_path / "t.txt"), "--prompts", "p", flag, "1,0"]) == 2
        assert "every value must be a number > 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ end to end


def test_cli_end_to_end_on_a_tiny_matrix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "embed_prompt_file", fake_embed_file)
    # a stand-in for the hindsight bound (another module's work): the oracle's run, through the same adapter
    stand_in = lambda config, arrivals, embeddings, warm, cache, seed: simulate(
        "oracle", config, arrivals, embeddings, warm, seed=seed, cache=cache
    )
    monkeypatch.setattr(sweep, "_hindsight_module", SimpleNamespace(hindsight=stand_in))
    monkeypatch.setattr(sweep, "HINDSIGHT_MISSING", "")
    monkeypatch.setattr(sweep, "SIMULATOR_BOUNDS", ())  # through the sweep's adapter, not simulate's
    write_proteus(tmp_path / "t1.txt", n=300, seed=1)
    write_proteus(tmp_path / "t2.txt", n=300, seed=2)
    write_rate_curve(tmp_path / "azure.csv")
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(450)))
    out = tmp_path / "out"
    argv = ["--traces", f"tw={tmp_path}/t*.txt", f"az={tmp_path}/azure.csv", "--prompts", str(prompts)]
    argv += ["--warm", "50", "--loads", "0.5,1.0", "--time-scales", "2,1", "--seeds", "2", "--workers", "4"]
    argv += ["--policies", "prompt_aware,clipper_ht,proteus,oracle,hindsight", "--jobs", "2", "--out", str(out)]
    assert sweep.main(argv + ["--max-requests", "100"]) == 0
    doc = json.loads((out / "sweep.json").read_text())
    assert len(doc["workloads"]) == 2 * 2 * 2 and len(doc["cells"]) == 8 * 2 * 5
    figure = (out / "sweep.png").read_bytes()  # one panel per workload
    assert figure.startswith(b"\x89PNG") and len(figure) > 20_000
    w = doc["workloads"]["tw load 1 x2"]
    assert set(w["policies"]) == {"prompt_aware", "clipper_ht", "proteus", "oracle", "hindsight"}
    assert set(w["paired"]) == {"clipper_ht", "proteus", "oracle", "hindsight"}
    assert {"mean", "ci", "sd", "n"} <= set(w["policies"]["proteus"]["p99_latency_s"])
    assert w["policies"]["proteus"]["slo_violation_ratio"]["n"] == 2
    assert doc["config"]["compressed_time_scales"] == [1.0] and len(doc["goals"]) == 4
    assert any(n.startswith("tw load 1 x2: capped to 100") for n in doc["config"]["notes"])
    assert doc["workloads"]["tw load 1 x2"]["requests"] == [100, 100]
    printed = capsys.readouterr().out
    for text in ("viol. %", "ΔQ vs PA", "az load 0.5 x1", "G1 not dominated", "G4 lag at compressed time scale 1"):
        assert text in printed
    assert sum(line[:4] in ("PASS", "FAIL", "n/a ") for line in printed.splitlines()) == 4
    # an unknown policy is refused; hindsight, when absent, is dropped with a note
    assert sweep.main(argv[:-4] + ["--policies", "prompt_aware,fifo", "--out", str(out)]) == 2
    monkeypatch.setattr(sweep, "HINDSIGHT_MISSING", "not built")
    monkeypatch.setattr(sweep, "SIMULATOR_BOUNDS", ())
    assert sweep._policy_list("prompt_aware,hindsight") == (["prompt_aware"], ["hindsight skipped: not built"])
