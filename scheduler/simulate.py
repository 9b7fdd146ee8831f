"""`python -m scheduler.simulate`: replay a trace through every policy and print the comparison.

Example (the reference run, see docs/results.md):

    python -m scheduler.simulate \\
        --trace ../shared/data/traces/proteus_twitter/zipf_exponential_300/*.txt \\
        --prompts ../shared/data/prompts/diffusiondb_2m_first_4k.txt --warm 1000 \\
        --peak-load 1.0 --time-scale 6.5 --workers 16 --profile sdxl-a100 --out results/reference

Prints a table (policy × SLO violation ratio, effective quality, max quality drop, peak and mean
throughput, p99 latency, hit rate, redirect rate, requests) and writes DIR/results.json plus
DIR/timeseries.png and DIR/kmix.png. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .embeddings import embed_prompt_file, read_prompts
from .interface import SchedulerConfig
from .metrics import format_table, summarize, time_series, write_results
from .planner import SOLVERS
from .policies import DEFAULT_POLICIES, POLICY_NAMES
from .profiles import DEFAULT_GAMMA, load_profile
from .traces import load_trace, peak_rate, scale_trace


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """The workload options, shared with the live load generator (`manage.py loadgen`) so both
    replay the same stream from the same flags."""
    p.add_argument("--trace", nargs="+", required=True, help="trace file(s): arrival_ms,qos,slo_ms or seconds")
    p.add_argument("--prompts", required=True, help="prompt file, one prompt per line, used in order")
    p.add_argument("--warm", type=int, default=0, help="prompts from the front used to warm the cache")
    p.add_argument("--peak-load", type=float, default=None,
                   help="scale the rate so the peak 10-s window = X × capacity with every worker at the top K")
    p.add_argument("--time-scale", type=float, default=1.0, help="stretch time by this factor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, default=30.0, help="metrics/plot window (s)")
    p.add_argument("--no-plots", action="store_true")


def add_cache_model_arguments(p: argparse.ArgumentParser) -> None:
    """How the simulated cache behaves (shared with `manage.py compare_sim`)."""
    p.add_argument("--resumed-levels", choices=["above", "all"], default="above",
                   help="levels a request served at K′ adds to the cache: those above K′ (physical) or all "
                        "(optimistic ablation)")
    p.add_argument("--cache-capacity", type=int, default=100_000, help="cache entries (LCBFU beyond)")
    p.add_argument("--embed-cache", default=".cache/embeddings", help="folder for cached embeddings")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scheduler.simulate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_workload_arguments(p)
    add_cache_model_arguments(p)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--profile", default="sdxl-a100", help="preset name or latency CSV")
    p.add_argument("--profile-model", default=None, help="model name inside a multi-model CSV")
    p.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help="non-skippable share of a run")
    p.add_argument("--levels", default="0,5,10,15,20,25", help="K levels")
    p.add_argument("--slo", type=float, default=None, help="SLO seconds (default 2 × L(0, 1))")
    p.add_argument("--policies", default=",".join(DEFAULT_POLICIES), help=f"comma list of {POLICY_NAMES}")
    p.add_argument("--out", default="results/sim", help="output folder")
    p.add_argument("--period", type=float, default=10.0, help="controller period (s)")
    p.add_argument("--util-target", type=float, default=0.85)
    p.add_argument("--headroom", type=float, default=1.0)
    p.add_argument("--ewma-alpha", type=float, default=0.5)
    p.add_argument("--load-threshold", type=float, default=1.0)
    p.add_argument("--no-redirect", action="store_true", help="ablation: turn off the deadline redirect")
    p.add_argument("--no-backlog", action="store_true", help="ablation: plan for arrivals only, not queues")
    p.add_argument("--solver", choices=SOLVERS, default="glpk",
                   help="the controller's MILP solver: glpk (default) or highs (scipy.optimize.milp); same optima")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from .cache_model import ApproxCache
    from .simulator import simulate

    policies = [x.strip() for x in args.policies.split(",") if x.strip()]
    bad = [x for x in policies if x not in POLICY_NAMES]
    if bad:
        print(f"unknown policies {bad}; choose from {', '.join(POLICY_NAMES)}", file=sys.stderr)
        return 2
    levels = tuple(int(x) for x in args.levels.split(","))
    profile = load_profile(args.profile, levels=levels, gamma=args.gamma, model=args.profile_model)
    slo = args.slo if args.slo is not None else 2.0 * profile.latency(0, 1)
    cfg = SchedulerConfig(n_workers=args.workers, profile=profile, slo_s=slo, period_s=args.period,
                          util_target=args.util_target, headroom=args.headroom, ewma_alpha=args.ewma_alpha,
                          load_threshold=args.load_threshold, deadline_redirect=not args.no_redirect,
                          backlog_aware=not args.no_backlog, solver=args.solver)
    caps, top = cfg.batch_caps(), levels[-1]
    capacity = cfg.top_level_capacity()
    raw = load_trace(args.trace)
    arrivals = scale_trace(raw, args.time_scale, args.peak_load, capacity)
    n = int(arrivals.size)
    n_prompts = len(read_prompts(args.prompts))
    if n == 0:
        print("the scaled trace has no arrivals", file=sys.stderr)
        return 2
    if args.warm + n > n_prompts:
        print(f"the trace needs {args.warm + n} prompts (--warm {args.warm} + {n} requests) but "
              f"{args.prompts} has only {n_prompts}; lower --time-scale/--peak-load or --warm, or use a "
              f"longer prompt file", file=sys.stderr)
        return 2
    print(f"trace: {n} requests over {arrivals[-1]:.0f} s (peak 10-s rate {peak_rate(arrivals):.2f}/s, "
          f"mean {n / max(arrivals[-1], 1e-9):.2f}/s; capacity at K={top}: {capacity:.2f}/s)", file=sys.stderr)
    print(f"profile {profile.name}: L(0,1)={profile.latency(0, 1):.2f}s, SLO {slo:.2f}s, batch caps {caps}",
          file=sys.stderr)
    t0 = time.perf_counter()
    emb = embed_prompt_file(args.prompts, args.embed_cache, progress=True)[: args.warm + n]
    with tqdm(total=2 * n, file=sys.stderr, unit="req", desc="neighbour index", leave=False) as ibar:
        cache = ApproxCache(emb, levels, args.cache_capacity, query_start=args.warm,
                            resumed_levels=args.resumed_levels, progress=ibar)
    print(f"embeddings + neighbour index: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    results: dict[str, dict] = {}
    series: dict[str, dict] = {}
    runs: dict = {}
    with tqdm(total=n * len(policies), file=sys.stderr, unit="req", desc="simulating") as bar:
        for name in policies:
            bar.set_postfix_str(name)
            r = simulate(name, cfg, arrivals, emb, args.warm, cache_capacity=args.cache_capacity,
                         seed=args.seed, progress=bar, cache=cache)
            m = summarize(r.arrival, r.deadline, r.finish, r.quality, r.k_prime, r.redirected, list(levels),
                          window_s=args.window, start=r.start)
            m["sim_wall_s"] = r.wall_s
            m["plan_solve_ms_mean"] = float(np.mean([p["solve_time_s"] for p in r.plans]) * 1e3)
            results[name] = m
            runs[name] = r
    # Common time axis so every policy's windows line up in the plots.
    t_end = max(max(float(np.nanmax(r.finish)) if np.isfinite(r.finish).any() else 0.0, float(r.arrival[-1]))
                for r in runs.values())
    for name, r in runs.items():
        series[name] = time_series(r.arrival, r.deadline, r.finish, r.quality, r.k_prime, list(levels),
                                   window_s=args.window, t_end=t_end)
    config = {
        "trace": [os.path.abspath(x) for x in args.trace], "prompts": os.path.abspath(args.prompts),
        "warm": args.warm, "peak_load": args.peak_load, "time_scale": args.time_scale, "requests": n,
        "duration_s": float(arrivals[-1]), "capacity_rps_top_level": capacity, "seed": args.seed,
        "cache_capacity": args.cache_capacity, "resumed_levels": args.resumed_levels, "window_s": args.window, "policies": policies,
        "scheduler": cfg.to_dict(),
    }
    os.makedirs(args.out, exist_ok=True)
    write_results(os.path.join(args.out, "results.json"), config, results)
    write_results(os.path.join(args.out, "series.json"), config, {}, series)
    if not args.no_plots:
        from .plots import plot_kmix, plot_timeseries

        title = (f"{args.workers} workers, {profile.name}, SLO {slo:.1f}s, peak load {args.peak_load}, "
                 f"time ×{args.time_scale}, {n} requests")
        plot_timeseries(series, os.path.join(args.out, "timeseries.png"), title)
        plot_kmix(series, os.path.join(args.out, "kmix.png"))
    print(f"{args.workers} workers · {profile.name} · SLO {slo:.2f}s · period {args.period}s · "
          f"util target {args.util_target} · EWMA α {args.ewma_alpha} · backlog-aware {cfg.backlog_aware} · "
          f"redirect {cfg.deadline_redirect} · batch caps {caps}")
    print(format_table(results))
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
