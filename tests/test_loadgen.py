"""The live load generator: a short replay against the live test stack (real web server, Postgres, Redis and
Celery worker processes), plus fast checks of the workload and of turning rows into metrics."""

from __future__ import annotations

import json
import math
from datetime import UTC
from io import StringIO

import numpy as np
import pytest

from scheduler.fairness import FAIRNESS_KEYS
from scheduler.interface import SchedulerConfig
from scheduler.metrics import TABLE_COLUMNS
from scheduler.profiles import load_profile
from scheduler.traces import load_trace, scale_trace
from tests.helpers import serving_config


def _write_inputs(tmp_path, times, prompts):
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{t}\n" for t in times))
    pfile = tmp_path / "prompts.txt"
    pfile.write_text("".join(f"{p}\n" for p in prompts))
    return trace, pfile


# --- against the live stack ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the live server's thread and real worker processes read these rows
def test_short_loadgen_run_against_live_stack(live_server, user, gpu_workers, tmp_path):
    from django.core.management import call_command
    from knox.models import AuthToken

    from scheduler.simulate import main as simulate_main
    from webapp.ledger.models import TERMINAL_STATES, GenerationRequest, ServingConfig
    from webapp.serving.prompt_tokens import count_tokens

    long_prompt = " ".join(["a very detailed intricate painting"] * 30)  # > 77 CLIP tokens → HTTP 400
    warm = ["a red fox in the snow", "a castle made of glass"]  # --warm 2: cached, not replayed
    prompts = warm + [
        "a red fox in the snow at dawn",
        "a castle made of glass",
        long_prompt,
        "a lighthouse at dusk",
        "a bowl of ramen, studio light",
        "an astronaut riding a horse",
    ]
    trace, pfile = _write_inputs(tmp_path, [0.0, 0.5, 1.1, 1.6, 2.3, 3.0], prompts)
    count_tokens("warm up")  # the live server runs in this process: load its tokenizer before the clock starts
    serving_config(max_in_flight=1)  # would refuse most of the burst
    token = AuthToken.objects.create(user=user)[1]
    out = tmp_path / "live"
    stdout, stderr = StringIO(), StringIO()

    call_command(
        "loadgen",
        trace=[str(trace)],
        prompts=str(pfile),
        url=live_server.url,
        token=token,
        warm=2,
        out=str(out),
        policy_label="live-test",
        drain_timeout=90,
        poll=0.3,
        window=1.0,
        stdout=stdout,
        stderr=stderr,
    )

    # every accepted request ended, and the failed arrival was recorded, not dropped
    rows = list(GenerationRequest.objects.filter(owner=user))
    assert len(rows) == 5 and all(r.status in TERMINAL_STATES for r in rows)
    assert sorted(r.prompt for r in rows) == sorted(prompts[2:3] + prompts[3:4] + prompts[5:])  # prompts[warm:]
    assert "warm_cache" in stderr.getvalue()
    assert ServingConfig.current().max_in_flight == 1  # the cap was lifted for the run only
    assert "lifted for this run" in stderr.getvalue()
    doc = json.loads((out / "results.json").read_text())
    row = doc["policies"]["live-test"]
    assert row["requests"] == 6 and row["accepted"] == 5 and row["unfinished"] == 0
    assert row["http_errors"] == 1 and row["http_error_codes"] == {"400": 1}
    assert row["status_counts"].get("succeeded", 0) == 5
    assert row["served"] == 5 and row["dropped"] == 1
    assert (out / "timeseries.png").stat().st_size > 0 and (out / "kmix.png").stat().st_size > 0
    lines = (out / "requests.csv").read_text().splitlines()
    assert len(lines) == 7 and "HTTP 400" in lines[3]
    # an exact repeat of a warmed prompt is a cache hit served above K = 0
    repeat = next(r for r in rows if r.prompt == "a castle made of glass")
    assert repeat.k_star == 25 and repeat.similarity > 0.99
    printed = stdout.getvalue()
    assert "SLO viol." in printed and "live-test" in printed

    # the same layout as the simulator's results.json on the same inputs
    sim_out = tmp_path / "sim"
    assert (
        simulate_main(
            [
                "--trace",
                str(trace),
                "--prompts",
                str(pfile),
                "--workers",
                "2",
                "--warm",
                "2",
                "--policies",
                "prompt_aware",
                "--out",
                str(sim_out),
                "--no-plots",
                "--window",
                "1",
                "--embed-cache",
                str(tmp_path / "emb"),
            ]
        )
        == 0
    )
    sim = json.loads((sim_out / "results.json").read_text())
    assert set(doc) == set(sim) == {"config", "policies"}
    assert set(sim["config"]) - {"cache_capacity", "resumed_levels"} <= set(doc["config"])
    assert set(doc["config"]["scheduler"]) == set(sim["config"]["scheduler"])
    sim_row = sim["policies"]["prompt_aware"]
    assert set(sim_row) - {"sim_wall_s", "plan_solve_ms_mean", *FAIRNESS_KEYS} <= set(row)
    assert all(key in row for key, _, _ in TABLE_COLUMNS)
    assert set(row["k_prime_mix"]) == set(sim_row["k_prime_mix"])
    assert doc["config"]["requests"] == sim["config"]["requests"] == 6


@pytest.mark.django_db(transaction=True)  # the live server's thread and real worker processes read these rows
def test_compare_sim_runs_both_sides_on_the_same_segment(live_server, user, gpu_workers, tmp_path):
    from django.core.management import call_command
    from knox.models import AuthToken

    trace, pfile = _write_inputs(
        tmp_path, [0.0, 0.4, 0.9, 1.5], ["a koi pond in autumn", "a koi pond in winter", "a paper boat", "a neon city"]
    )
    out = tmp_path / "fid"
    stdout = StringIO()
    call_command(
        "compare_sim",
        trace=[str(trace)],
        prompts=str(pfile),
        url=live_server.url,
        token=AuthToken.objects.create(user=user)[1],
        out=str(out),
        drain_timeout=90,
        poll=0.3,
        window=1.0,
        no_plots=True,
        embed_cache=str(tmp_path / "emb"),
        stdout=stdout,
        stderr=StringIO(),
    )
    doc = json.loads((out / "compare.json").read_text())
    assert doc["sim"]["requests"] == doc["live"]["requests"] == 4 and doc["live"]["unfinished"] == 0
    assert doc["time_factor"] == 1.0 and doc["policy"] == "prompt_aware"
    assert set(doc["differences"]) >= {
        "slo_violation_ratio",
        "effective_quality",
        "throughput_peak",
        "throughput_mean",
        "p99_latency_s",
        "hit_rate",
    }
    assert doc["plans"]["sim"] and isinstance(doc["plans"]["live"], list)
    res = json.loads((out / "results.json").read_text())
    assert list(res["policies"]) == ["prompt_aware (sim)", "prompt_aware (live)"]
    seg = [
        float(x)
        for x in (out / "trace_segment.txt").read_text().split()
        if not x.startswith("#") and x.replace(".", "", 1).isdigit()
    ]
    assert seg == pytest.approx([0.0, 0.4, 0.9, 1.5])
    printed = stdout.getvalue()
    assert "prompt_aware (sim)" in printed and "within" in printed and "time factor 1" in printed


# --- fast checks (no services) ------------------------------------------------------------------------------


def _cfg(workers=16, slo=None):
    prof = load_profile("sdxl-a100")
    return SchedulerConfig(n_workers=workers, profile=prof, slo_s=slo or 2 * prof.latency(0, 1))


def test_workload_matches_the_simulators_arrivals_and_time_factor_only_compresses(tmp_path):
    from webapp.loadgen.workload import build_workload

    times = np.cumsum(np.random.default_rng(1).exponential(0.4, 400))
    trace, pfile = _write_inputs(tmp_path, times.round(4), [f"prompt {i}" for i in range(3000)])
    cfg = _cfg()
    cap = cfg.top_level_capacity()
    caps = cfg.batch_caps()
    assert cap == pytest.approx(16 * caps[25] / cfg.profile.latency(25, caps[25]))
    expect = scale_trace(load_trace([str(trace)]), 2.0, 0.8, cap)
    for factor in (1.0, 0.1):
        wl = build_workload([str(trace)], str(pfile), 50, 2.0, 0.8, cfg, factor)
        np.testing.assert_array_equal(wl.arrivals, expect)  # profile time: identical to the simulator
        assert wl.prompts[0] == "prompt 50" and len(wl.prompts) == wl.n
    wl = build_workload([str(trace)], str(pfile), 0, 2.0, 0.8, cfg, 0.1, max_seconds=5.0)
    assert wl.n == int((expect * 0.1 < 5.0).sum()) and wl.truncated_by
    wl = build_workload([str(trace)], str(pfile), 0, 2.0, 0.8, cfg, 1.0, max_requests=7)
    assert wl.n == 7


def test_workload_refuses_too_few_prompts(tmp_path):
    from webapp.loadgen.workload import WorkloadError, build_workload

    trace, pfile = _write_inputs(tmp_path, [0, 1, 2, 3], ["a", "b", "c"])
    with pytest.raises(WorkloadError, match="needs 5 prompts"):
        build_workload([str(trace)], str(pfile), 1, 1.0, None, _cfg())


def test_rows_become_simulator_arrays_in_profile_seconds():
    from datetime import datetime

    from webapp.loadgen.collect import live_metrics, to_arrays
    from webapp.loadgen.replay import Arrival, ReplayResult

    t0 = 1_800_000_000.0
    iso = lambda s: datetime.fromtimestamp(t0 + s, UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
    arrivals = [
        Arrival(0, 0.0, "a", 0, sent=0.0, status_code=202, request_id="r0"),
        Arrival(1, 0.1, "b", 1, sent=0.1, status_code=202, request_id="r1"),
        Arrival(2, 0.2, "c", 2, sent=0.2, status_code=400, error="HTTP 400: too long"),
        Arrival(3, 0.3, "d", 3, sent=0.3, status_code=202, request_id="r3"),
    ]
    rows = {  # time factor 0.1: 1 profile second = 0.1 wall seconds; SLO 1.2 wall = 12 profile
        "r0": dict(
            id="r0",
            status="succeeded",
            created_at=iso(0.0),
            started_at=iso(0.05),
            finished_at=iso(0.7),
            deadline=iso(1.2),
            k_served=0,
            k_star=0,
            worker=0,
            batch_size=1,
            redirected=False,
            similarity=None,
            quality=None,
        ),
        "r1": dict(
            id="r1",
            status="succeeded",
            created_at=iso(0.1),
            started_at=iso(0.2),
            finished_at=iso(1.5),
            deadline=iso(1.3),
            k_served=20,
            k_star=20,
            worker=1,
            batch_size=2,
            redirected=True,
            similarity=0.93,
            quality=0.93,
        ),
        "r3": dict(
            id="r3",
            status="expired",
            created_at=iso(0.3),
            started_at=None,
            finished_at=iso(2.7),
            deadline=iso(1.5),
            k_served=None,
            k_star=0,
            worker=1,
            batch_size=None,
            redirected=False,
            similarity=None,
            quality=None,
        ),
    }
    res = ReplayResult(arrivals=arrivals, t0_wall=t0, rows=rows)
    a = to_arrays(res, _cfg(2), 0.1, None)
    assert a["clock_offset_s"] == 0.0 and a["slo_s"] == pytest.approx(12.0)
    np.testing.assert_allclose(a["arrival"], [0.0, 1.0, 2.0, 3.0], atol=1e-4)
    np.testing.assert_allclose(a["deadline"], [12.0, 13.0, 14.0, 15.0], atol=1e-4)
    assert a["finish"][0] == pytest.approx(7.0, abs=1e-4) and a["finish"][1] == pytest.approx(15.0, abs=1e-4)
    assert math.isnan(a["finish"][2]) and math.isnan(a["finish"][3])  # failed arrival, expired row
    assert list(a["k_prime"]) == [0, 20, 0, 0] and list(a["redirected"]) == [False, True, False, False]
    assert a["quality"][0] == 1.0 and a["quality_imputed"] == 1
    m, series = live_metrics(res, a, [0, 5, 10, 15, 20, 25], window_s=30.0)
    assert m["requests"] == 4 and m["on_time"] == 1 and m["late"] == 1 and m["dropped"] == 2
    assert m["slo_violation_ratio"] == pytest.approx(0.75) and m["hit_rate"] == pytest.approx(0.5)
    assert m["redirect_rate"] == pytest.approx(0.25) and m["http_errors"] == 1
    assert m["http_error_codes"] == {"400": 1} and m["status_counts"]["http_error"] == 1
    assert set(series) >= {"t", "load", "throughput", "violation_ratio", "quality", "k_prime_rate"}


def test_loadgen_shares_the_simulators_workload_arguments():
    from scheduler.simulate import build_parser
    from webapp.loadgen.management.commands.loadgen import Command

    parser = Command().create_parser("manage.py", "loadgen")
    sim = {a.dest: a for a in build_parser()._actions}
    ours = {a.dest: a for a in parser._actions}
    for dest in ("trace", "prompts", "warm", "peak_load", "time_scale", "window"):
        assert ours[dest].option_strings == sim[dest].option_strings
        assert ours[dest].default == sim[dest].default and ours[dest].type == sim[dest].type
    for dest in ("url", "token", "max_requests", "max_seconds", "out", "policy_label", "slo"):
        assert dest in ours


def test_compare_sim_applies_the_issues_tolerances():
    from webapp.loadgen.management.commands.compare_sim import compare_rows, format_comparison

    sim = {
        "slo_violation_ratio": 0.02,
        "effective_quality": 0.92,
        "throughput_peak": 4.0,
        "throughput_mean": 3.0,
        "p99_latency_s": 10.0,
        "hit_rate": 0.80,
        "redirect_rate": 0.0,
    }
    live = {
        "slo_violation_ratio": 0.035,
        "effective_quality": 0.90,
        "throughput_peak": 3.5,
        "throughput_mean": 2.9,
        "p99_latency_s": None,
        "hit_rate": 0.75,
        "redirect_rate": 0.005,
    }
    d = compare_rows(sim, live)
    assert d["slo_violation_ratio"]["within"] is False  # 1.5 pp > 1 pp (ratios under 10 %)
    assert d["redirect_rate"]["within"] is True  # 0.5 pp
    assert d["effective_quality"]["within"] is True  # -2.2 %
    assert d["throughput_peak"]["within"] is False  # -12.5 %
    assert d["hit_rate"]["within"] is True and d["p99_latency_s"]["within"] is None
    text = format_comparison(d)
    assert "slo_violation_ratio" in text and "NO" in text and "+1.50 pp" in text


def test_the_warm_up_line_says_why_its_requests_failed():
    from webapp.loadgen.cli import warm_up_trouble
    from webapp.loadgen.replay import Arrival, ReplayResult

    def arrival(i, code=None, rid=None, error=None):
        return Arrival(index=i, due=0.1 * i, prompt="p", seed=i, status_code=code, request_id=rid, error=error)

    ok = ReplayResult(arrivals=[arrival(0, 201, "a")], t0_wall=0.0)
    assert warm_up_trouble(ok) == ""
    overloaded = "HTTP 503: The service is overloaded"
    res = ReplayResult(
        arrivals=[
            arrival(0, 201, "a"),
            arrival(1, 503, error=overloaded),
            arrival(2, 503),
            arrival(3, error="not sent: the client fell behind"),
            arrival(4, 0, error="no response: timed out"),
        ],
        t0_wall=0.0,
        unfinished={"a": "running"},
    )
    expected = f" (4 refused (2 × HTTP 503, 1 × no response, 1 × not sent; first: {overloaded}); 1 unfinished)"
    assert warm_up_trouble(res) == expected
