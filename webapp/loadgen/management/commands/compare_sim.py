"""`manage.py compare_sim`: one trace segment through the simulator and through the live stack, side by side.

    python manage.py compare_sim --trace ../shared/data/traces/proteus_twitter/zipf_exponential_300/*.txt \\
        --prompts ../shared/data/prompts/diffusiondb_2m_first_4k.txt --warm 1000 \\
        --peak-load 1.0 --time-scale 6.5 --max-seconds 300 --out results/fidelity

Both sides get the live configuration, read from the admin's ServingConfig (policy, SLO, K levels,
thresholds, load threshold, controller period, utilisation target), the live worker count (T2I_WORKERS),
profile (T2I_PROFILE) and time factor (T2I_TIME_FACTOR), and the same arrivals and prompts (built once).
The simulator runs in profile seconds; the live run's times are divided by the time factor, so the rows
compare directly. Prints both rows, then each metric's absolute and relative difference and whether it is
within the issue's tolerance (10 % relative; 1 percentage point for ratios under 10 %). Writes OUT/compare.json,
OUT/results.json (both rows, the simulator's layout), series.json, requests.csv and overlaid plots.
"""

from __future__ import annotations

import math
import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from scheduler.cache_model import ApproxCache
from scheduler.embeddings import embed_prompt_file
from scheduler.metrics import render_table, time_series
from scheduler.policies import POLICY_NAMES
from scheduler.simulate import add_cache_model_arguments
from scheduler.simulator import simulate
from webapp.loadgen import collect
from webapp.loadgen.cli import add_live_arguments, header_line, run_live
from webapp.loadgen.workload import WorkloadError, build_workload, live_setup, write_segment

# (metric, is a ratio): the ratios under 10 % are compared in absolute percentage points.
COMPARED = [
    ("slo_violation_ratio", True),
    ("effective_quality", False),
    ("throughput_peak", False),
    ("throughput_mean", False),
    ("p99_latency_s", False),
    ("hit_rate", True),
    ("redirect_rate", True),
]
REL_TOL = 0.10
ABS_TOL_SMALL_RATIO = 0.01


def compare_rows(sim: dict, live: dict) -> dict:
    """Per metric: sim, live, live − sim, (live − sim)/|sim|, the tolerance applied and whether it holds."""
    out = {}
    for key, ratio in COMPARED:
        s, lv = sim.get(key), live.get(key)
        if s is None or lv is None or not (math.isfinite(s) and math.isfinite(lv)):
            out[key] = {"sim": s, "live": lv, "diff": None, "rel_diff": None, "tolerance": None, "within": None}
            continue
        diff = lv - s
        rel = diff / abs(s) if s else (0.0 if diff == 0 else math.inf)
        if ratio and max(abs(s), abs(lv)) < 0.10:
            tol, ok = f"±{ABS_TOL_SMALL_RATIO * 100:g} pp", abs(diff) <= ABS_TOL_SMALL_RATIO + 1e-12
        else:
            tol, ok = f"±{REL_TOL * 100:g} %", abs(rel) <= REL_TOL + 1e-12
        out[key] = {
            "sim": s,
            "live": lv,
            "diff": diff,
            "rel_diff": rel if math.isfinite(rel) else None,
            "tolerance": tol,
            "within": ok,
        }
    return out


def format_comparison(diffs: dict) -> str:
    head = ["metric", "simulator", "live", "live − sim", "relative", "tolerance", "within"]
    rows = [head]
    for key, d in diffs.items():
        pct = key in dict(COMPARED) and dict(COMPARED)[key]
        fmt = (lambda v: f"{v:.2%}") if pct else (lambda v: f"{v:.4f}")
        rows.append(
            [
                key,
                "-" if d["sim"] is None else fmt(d["sim"]),
                "-" if d["live"] is None else fmt(d["live"]),
                "-" if d["diff"] is None else (f"{d['diff'] * 100:+.2f} pp" if pct else f"{d['diff']:+.4f}"),
                "-" if d["rel_diff"] is None else f"{d['rel_diff']:+.1%}",
                d["tolerance"] or "-",
                {True: "yes", False: "NO", None: "-"}[d["within"]],
            ]
        )
    return render_table(rows)


class Command(BaseCommand):
    help = (
        "Run one trace segment through the simulator and through the live (emulated) stack with the "
        "same policy and configuration, and print both rows side by side with relative differences."
    )

    def add_arguments(self, parser):
        add_live_arguments(parser, out_default="results/fidelity")
        add_cache_model_arguments(parser)
        parser.add_argument(
            "--keep-long-prompts",
            dest="clip_prompts",
            action="store_false",
            help="send prompts over the CLIP token limit as they are (the server answers 400, a "
            "violation the simulator does not have); by default they are shortened",
        )
        parser.set_defaults(clip_prompts=True)
        parser.add_argument(
            "--batch-overhead",
            type=float,
            default=0.0,
            metavar="S",
            help="simulate S profile seconds per batch beyond L(K′, b) that the scheduler does not plan for, as a "
            "live worker spends them on claiming, saving and ledger writes (BatchRecord.overhead_seconds); "
            "default 0: the ideal system",
        )

    def handle(self, *args, **opts):
        err = self.stderr._out if hasattr(self.stderr, "_out") else sys.stderr
        if opts["no_db"]:
            raise CommandError("compare_sim reads the live configuration from the database; drop --no-db")
        setup = live_setup(
            slo=opts["slo"], factor=opts["time_factor"], profile=opts["profile"], workers=opts["workers"], use_db=True
        )
        if not setup.from_db:
            raise CommandError("cannot read ServingConfig from the database: " + "; ".join(setup.notes))
        if setup.policy not in POLICY_NAMES:
            raise CommandError(f"live policy {setup.policy!r} is not a simulator policy {POLICY_NAMES}")
        cfg, f = setup.config, setup.time_factor
        try:
            wl = build_workload(
                opts["trace"],
                opts["prompts"],
                opts["warm"],
                opts["time_scale"],
                opts["peak_load"],
                cfg,
                f,
                opts["max_requests"],
                opts["max_seconds"],
                opts["start"],
            )
        except (WorkloadError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        levels = cfg.levels

        # --- the simulator, in process, on the same arrivals and prompt stream -------------------------------
        t = time.perf_counter()
        emb = embed_prompt_file(opts["prompts"], opts["embed_cache"])[: wl.warm + wl.n]
        cache = ApproxCache(
            emb, levels, opts["cache_capacity"], query_start=wl.warm, resumed_levels=opts["resumed_levels"]
        )
        with tqdm(total=wl.n, file=err, unit="req", desc="simulating") as bar:
            r = simulate(
                setup.policy,
                cfg,
                wl.arrivals,
                emb,
                wl.warm,
                cache_capacity=opts["cache_capacity"],
                seed=opts["seed"],
                progress=bar,
                cache=cache,
                batch_overhead_s=opts["batch_overhead"],
            )
        sim_m = r.summary(list(levels), opts["window"])
        sim_series = time_series(
            r.arrival, r.deadline, r.finish, r.quality, r.k_prime, list(levels), window_s=opts["window"]
        )
        print(f"simulator: {wl.n} requests in {time.perf_counter() - t:.1f} s", file=err, flush=True)

        # --- the live stack, through the REST API --------------------------------------------------------------
        live = run_live(opts, stream=err, setup=setup, workload=wl)
        sim_label = f"{setup.policy} (sim)"
        results = {sim_label: sim_m, live.label: live.metrics}
        series = {sim_label: sim_series, live.label: live.series}
        diffs = compare_rows(sim_m, live.metrics)

        config = dict(
            live.config,
            policies=list(results),
            cache_capacity=opts["cache_capacity"],
            resumed_levels=opts["resumed_levels"],
            sim_batch_overhead_s=opts["batch_overhead"],
        )
        title = (
            f"simulator vs live: {setup.policy}, {cfg.n_workers} workers, {cfg.profile.name}, SLO "
            f"{cfg.slo_s:.1f}s, time factor {f:g}, {wl.n} requests"
        )
        written = collect.write_outputs(opts["out"], config, results, series, title, plots=not opts["no_plots"])
        collect.write_requests_csv(os.path.join(opts["out"], "requests.csv"), live.result, live.arrays)
        write_segment(os.path.join(opts["out"], "trace_segment.txt"), wl.arrivals)
        doc = {
            "config": config,
            "time_factor": f,
            "policy": setup.policy,
            "sim": sim_m,
            "live": live.metrics,
            "differences": diffs,
            "tolerance": {"relative": REL_TOL, "small_ratio_abs": ABS_TOL_SMALL_RATIO},
            "all_within": all(d["within"] for d in diffs.values() if d["within"] is not None),
            "plans": {"sim": r.plans, "live": live.plans or []},
        }
        path = os.path.join(opts["out"], "compare.json")
        collect.write_json(path, doc)

        self.stdout.write(header_line(cfg, setup))
        self.stdout.write(
            f"policy {setup.policy} · same arrivals ({wl.n}) and prompts on both sides · live times "
            f"divided by the time factor {f:g}"
        )
        self.stdout.write(collect.format_table(results))
        self.stdout.write("")
        self.stdout.write(format_comparison(diffs))
        m = live.metrics
        self.stdout.write(
            f"live: accepted {m['accepted']}/{m['requests']} · HTTP errors {m['http_errors']} · "
            f"unfinished {m['unfinished']} · wall {m['live_wall_s']:.0f} s"
        )
        self.stdout.write(f"wrote {path} and {written[0]}")
