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
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from .admission import ADMISSION_MODES, QUEUE
from .cache_model import CACHE_SCOPES, ApproxCache
from .demand import ESTIMATE_MODES
from .embeddings import embed_prompt_file, read_prompts
from .fairness import DEFAULT_TENANTS, FAIRNESS_COLUMNS, add_fairness_metrics, assign_owners, tenants_of
from .hindsight import HINDSIGHT_NAMES, hindsight
from .interface import SchedulerConfig
from .metrics import format_table, time_series, write_results
from .model_variants import parse_quality
from .neighbour_index import LINEAGE_TOP_M, candidate_lists
from .planner import SOLVERS
from .policies import DEFAULT_POLICIES, ORACLE_VARIANT_PREFIX, SIM_POLICY_NAMES, is_sim_policy
from .profiles import DEFAULT_GAMMA, load_profile
from .prompt_stream import extend_stream
from .quality import QualityModel, quality_from_spec
from .similarity_calibration import CALIBRATIONS, calibration
from .simulator import simulate
from .traces import load_trace, peak_rate, scale_trace


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """The workload options, shared with the live load generator (`manage.py loadgen`) so both
    replay the same stream from the same flags."""
    p.add_argument("--trace", nargs="+", required=True, help="trace file(s): arrival_ms,qos,slo_ms or seconds")
    p.add_argument(
        "--prompts",
        required=True,
        help="prompt file, one prompt per line, used in order (the simulator synthesises the extra prompts of a "
        "longer trace from the file's reuse structure: scheduler.prompt_stream)",
    )
    p.add_argument("--warm", type=_any_count, default=0, help="prompts from the front used to warm the cache")
    p.add_argument(
        "--peak-load",
        type=_positive,
        default=None,
        help="scale the rate so the peak 10-s window = X × capacity with every worker at the top K",
    )
    p.add_argument("--time-scale", type=_positive, default=1.0, help="stretch time by this factor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, default=30.0, help="metrics/plot window (s)")
    p.add_argument("--no-plots", action="store_true")


def add_cache_model_arguments(p: argparse.ArgumentParser) -> None:
    """How the simulated cache behaves (shared with `manage.py compare_sim`)."""
    p.add_argument(
        "--resumed-levels",
        choices=["above", "all"],
        default="above",
        help="levels a request served at K′ adds to the cache: those above K′ (physical) or all (optimistic ablation)",
    )
    p.add_argument("--cache-capacity", type=int, default=100_000, help="cache entries (LCBFU beyond)")
    p.add_argument("--embed-cache", default=".cache/embeddings", help="folder for cached embeddings")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scheduler.simulate",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_workload_arguments(p)
    add_cache_model_arguments(p)
    p.add_argument("--workers", type=_positive_count, default=16)
    p.add_argument("--profile", default="sdxl-a100", help="preset name or latency CSV")
    p.add_argument("--profile-model", default=None, help="model name inside a multi-model CSV")
    p.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help="non-skippable share of a run")
    p.add_argument("--levels", default="0,5,10,15,20,25", help="K levels")
    p.add_argument("--slo", type=_positive, default=None, help="SLO seconds (default 2 × L(0, 1))")
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_POLICIES),
        help=f"comma list of {SIM_POLICY_NAMES}, or oracle@A: the oracle seeing A s ahead (--oracle-lookahead)",
    )
    p.add_argument("--out", default="results/sim", help="output folder")
    p.add_argument("--period", type=_positive, default=10.0, help="controller period (s)")
    p.add_argument("--util-target", type=_fraction, default=0.85)
    p.add_argument("--headroom", type=float, default=1.0)
    p.add_argument("--ewma-alpha", type=float, default=0.5)
    p.add_argument("--load-threshold", type=float, default=1.0)
    p.add_argument("--no-redirect", action="store_true", help="ablation: turn off the deadline redirect")
    p.add_argument("--no-backlog", action="store_true", help="ablation: plan for arrivals only, not queues")
    # prompt_aware's levers (issue 13), each off for an ablation; the baselines' shedding for a sensitivity run
    p.add_argument("--no-similarity-rank", action="store_true", help="ablation: sample the K→K′ fractions at random")
    p.add_argument("--no-upgrade", action="store_true", help="ablation: never serve better than the plan's level")
    p.add_argument(
        "--no-queue-first",
        action="store_true",
        help="ablation: no queue-first light load (K′ = 0 on the soonest-free worker while it makes the deadline)",
    )
    p.add_argument(
        "--upgrade-budget",
        type=_non_negative,
        default=SchedulerConfig.upgrade_budget_slo,
        help="upgrades: spare worker-seconds banked, in SLOs' worth (inf: no bank; upgrade while the plan has spare)",
    )
    p.add_argument(
        "--upgrade-margin",
        type=_non_negative,
        default=SchedulerConfig.upgrade_margin,
        help="upgrades: must still finish this many SLOs before the deadline",
    )
    p.add_argument("--no-event-replan", action="store_true", help="ablation: re-plan only every --period")
    p.add_argument(
        "--pressure-replan",
        action="store_true",
        help="also re-plan early when a request's plan level cannot drain its queue by the deadline",
    )
    p.add_argument("--no-shed", action="store_true", help="ablation: keep requests that can no longer make it")
    p.add_argument(
        "--no-batch-cut",
        action="store_true",
        help="ablation: shed a batch's late member instead of cutting the batch (scheduler.dispatch.batch_to_run)",
    )
    p.add_argument("--shed-baselines", action="store_true", help="sensitivity: the baselines shed too")
    p.add_argument(
        "--oracle-lookahead",
        type=_non_negative,
        default=None,
        help="how far ahead the oracle sees (s; more than --period reads as one period): it plans for the true "
        "demand of the period-long window ending this long after the plan; default one period (the next period's "
        "demand), 0: the last period's exact demand (what a controller that measured it perfectly would have)",
    )
    p.add_argument(
        "--admission",
        choices=ADMISSION_MODES,
        default=QUEUE,
        help="admission control at arrival, for every policy (scheduler/admission.py); default queue: accept all",
    )
    p.add_argument(
        "--demand-estimate",
        choices=ESTIMATE_MODES,
        default=SchedulerConfig.demand_estimate,
        help="what every controller plans for: total (max(last window, EWMA) of the total rate, split by a "
        "slowly moving class mix; the default), max (that max per class), the last window, or the EWMA",
    )
    p.add_argument("--trend-beta", type=float, default=0.0, help="Holt's trend on the demand (0: off)")
    p.add_argument(
        "--cache-scope",
        choices=CACHE_SCOPES,
        default="shared",
        help="which cached prompts a request may resume from: everyone's, its tenant's (users → tenants by "
        "rank modulo --tenants; the warm prompts are everyone's), or none",
    )
    p.add_argument("--tenants", type=int, default=DEFAULT_TENANTS, help="tenants for --cache-scope tenant")
    p.add_argument(
        "--solver",
        choices=SOLVERS,
        default="glpk",
        help="the controller's MILP solver: glpk (default) or highs (scipy.optimize.milp); same optima",
    )
    p.add_argument(
        "--variant-quality",
        type=parse_quality,
        default=None,
        help="proteus_models: quality per model variant, e.g. sdxl=1,sdxl_lightning=0.9,sd15=0.85 (others: "
        "scheduler.model_variants defaults)",
    )
    p.add_argument(
        "--quality",
        type=_quality_option,
        default="default",
        help="the quality model Q(s, K′): 'default' (the yardstick of scheduler/quality.py) or 'measured:FILE', "
        "a table written by `python -m workers.demo.measure_quality` (docs/quality.md)",
    )
    p.add_argument(
        "--similarity-calibration",
        choices=CALIBRATIONS,
        default="none",
        help="map the embedder's similarities onto another K* mix before K* and Q are read: 'argus' = the Argus "
        "paper's logged lookups (scheduler/similarity_calibration.py); neighbours are unchanged",
    )
    return p


def _quality_option(text: str) -> QualityModel:
    """argparse type of --quality: a bad spec or file is a usage error with the reason, not a traceback."""
    try:
        return quality_from_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _non_negative(text: str) -> float:
    """argparse type of a quantity that cannot be negative (a budget, a margin)."""
    value = float(text)
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number ≥ 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    """argparse type of a quantity that must be above 0 and finite (a period, an SLO, a load, a time scale)."""
    value = float(text)
    if not 0.0 < value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    """argparse type of a share in (0, 1] (the utilisation target)."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def _count(minimum: int):
    """argparse type of a whole number ≥ `minimum` (workers, seeds: 1; prompts that warm the cache: 0)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number ≥ {minimum}, got {text!r}")
        return value

    parse.__name__ = f"whole number ≥ {minimum}"  # what argparse names in "invalid … value"
    return parse


# One object each, so that every parser built from these functions (loadgen, compare_sim) has the same type.
_any_count, _positive_count = _count(0), _count(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    policies = _policy_names(args.policies)
    if policies is None:
        return 2
    levels = tuple(int(x) for x in args.levels.split(","))
    profile = load_profile(args.profile, levels=levels, gamma=args.gamma, model=args.profile_model)
    cfg = _scheduler_config(args, profile)
    arrivals = _scaled_arrivals(args, cfg)
    if arrivals is None:
        return 2
    _print_workload(arrivals, profile, cfg, levels[-1])
    embeddings, cache = _embeddings_and_cache(args, levels, arrivals.size)
    runs, results = _run_policies(policies, cfg, arrivals, embeddings, cache, args, levels)
    series = _time_series(runs, levels, args.window)
    _write_outputs(args, policies, cfg, arrivals, results, series, profile)
    _print_table(args, profile, cfg, results)
    return 0


def _policy_names(text: str) -> list[str] | None:
    """The comma list of policies, or None (after saying why) if one is unknown."""
    policies = [x.strip() for x in text.split(",") if x.strip()]
    try:
        bad = [x for x in policies if not is_sim_policy(x) and x not in HINDSIGHT_NAMES]
    except ValueError as exc:  # oracle@ with no number after it
        print(f"unknown policy {exc}", file=sys.stderr)
        return None
    if bad:
        choices = ", ".join([*SIM_POLICY_NAMES, *HINDSIGHT_NAMES, f"{ORACLE_VARIANT_PREFIX}A"])
        print(f"unknown policies {bad}; choose from {choices}", file=sys.stderr)
        return None
    return policies


def _scheduler_config(args: argparse.Namespace, profile) -> SchedulerConfig:
    """The settings every policy shares, from the command line (SLO default: 2 × L(0, 1))."""
    slo = args.slo if args.slo is not None else 2.0 * profile.latency(0, 1)
    return SchedulerConfig(
        n_workers=args.workers,
        profile=profile,
        slo_s=slo,
        period_s=args.period,
        util_target=args.util_target,
        headroom=args.headroom,
        ewma_alpha=args.ewma_alpha,
        load_threshold=args.load_threshold,
        deadline_redirect=not args.no_redirect,
        backlog_aware=not args.no_backlog,
        similarity_ranked=not args.no_similarity_rank,
        queue_first=not args.no_queue_first,
        light_load_upgrade=not args.no_upgrade,
        upgrade_budget_slo=args.upgrade_budget,
        upgrade_margin=args.upgrade_margin,
        event_replan=not args.no_event_replan,
        pressure_replan=args.pressure_replan,
        shed_hopeless=not args.no_shed,
        batch_cut=not args.no_batch_cut,
        shed_baselines=args.shed_baselines,
        oracle_lookahead_s=args.oracle_lookahead,
        admission=args.admission,
        demand_estimate=args.demand_estimate,
        trend_beta=args.trend_beta,
        solver=args.solver,
        variant_quality=getattr(args, "variant_quality", None),
        quality=getattr(args, "quality", None) or QualityModel(),
    )


def _scaled_arrivals(args: argparse.Namespace, cfg: SchedulerConfig) -> np.ndarray | None:
    """The trace, scaled in time and rate; None (after saying why) if empty or longer than the prompt file."""
    arrivals = scale_trace(load_trace(args.trace), args.time_scale, args.peak_load, cfg.top_level_capacity())
    n = int(arrivals.size)
    n_prompts = len(read_prompts(args.prompts))
    if n == 0:
        print("the scaled trace has no arrivals", file=sys.stderr)
        return None
    if args.warm >= n_prompts:
        print(f"--warm {args.warm} leaves no prompt of {args.prompts} ({n_prompts} lines)", file=sys.stderr)
        return None
    if args.warm + n > n_prompts:  # longer than the file: the rest of the stream is synthesised
        print(
            f"the trace needs {args.warm + n} prompts (--warm {args.warm} + {n} requests), {args.prompts} has "
            f"{n_prompts}: the other {args.warm + n - n_prompts} are synthesised from the file's reuse structure "
            f"(scheduler.prompt_stream, seed {args.seed}; lineage neighbour lists, scheduler.neighbour_index)",
            file=sys.stderr,
        )
    return arrivals


def _print_workload(arrivals: np.ndarray, profile, cfg: SchedulerConfig, top: int) -> None:
    """Describe the trace (against the capacity at the top level) and the profile on stderr."""
    n, capacity = int(arrivals.size), cfg.top_level_capacity()
    print(
        f"trace: {n} requests over {arrivals[-1]:.0f} s (peak 10-s rate {peak_rate(arrivals):.2f}/s, "
        f"mean {n / max(arrivals[-1], 1e-9):.2f}/s; capacity at K={top}: {capacity:.2f}/s)",
        file=sys.stderr,
    )
    print(
        f"profile {profile.name}: L(0,1)={profile.latency(0, 1):.2f}s, SLO {cfg.slo_s:.2f}s, "
        f"batch caps {cfg.batch_caps()}",
        file=sys.stderr,
    )


def _embeddings_and_cache(args: argparse.Namespace, levels: tuple[int, ...], n_requests: int):
    """The prompt embeddings (cached on disk) and the simulated cache with its neighbour index."""
    started = time.perf_counter()
    file_embeddings = embed_prompt_file(args.prompts, args.embed_cache, progress=True)
    stream = extend_stream(file_embeddings, args.warm + n_requests, args.seed)
    embeddings = stream.embeddings
    with tqdm(total=2 * n_requests, file=sys.stderr, unit="req", desc="neighbour index", leave=False) as ibar:
        top_m = LINEAGE_TOP_M if stream.synthetic else 96
        cache = ApproxCache(
            embeddings,
            levels,
            args.cache_capacity,
            query_start=args.warm,
            resumed_levels=args.resumed_levels,
            lists=candidate_lists(stream, args.warm, top_m, progress=ibar),
        )
    cache.set_similarity_map(calibration(args.similarity_calibration, embeddings, args.warm))
    print(f"embeddings + neighbour index: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return embeddings, cache


def _run_policies(
    policies: list[str],
    cfg: SchedulerConfig,
    arrivals: np.ndarray,
    embeddings: np.ndarray,
    cache,
    args: argparse.Namespace,
    levels: tuple[int, ...],
) -> tuple[dict, dict[str, dict]]:
    """Simulate each policy on the same stream; its run and its summary metrics, by name."""
    results: dict[str, dict] = {}
    runs: dict = {}
    owners = assign_owners(arrivals.size, seed=args.seed)  # who sent each request: per-user fairness
    cache.set_scope(args.cache_scope, tenants_of(owners, args.tenants) if args.cache_scope == "tenant" else None)
    with tqdm(total=arrivals.size * len(policies), file=sys.stderr, unit="req", desc="simulating") as bar:
        for name in policies:
            bar.set_postfix_str(name)
            if name in HINDSIGHT_NAMES:  # the offline bound (scheduler.hindsight), a row like a policy's
                runs[name] = run = hindsight(
                    cfg, arrivals, embeddings, args.warm, cache=cache, batch_rule=HINDSIGHT_NAMES[name], progress=bar
                )
                results[name] = run.summary(list(levels), args.window)
                continue
            run = simulate(
                name,
                cfg,
                arrivals,
                embeddings,
                args.warm,
                cache_capacity=args.cache_capacity,
                seed=args.seed,
                progress=bar,
                cache=cache,
            )
            results[name] = add_fairness_metrics(run.summary(list(levels), args.window), run, owners)
            runs[name] = run
    return runs, results


def _time_series(runs: dict, levels: tuple[int, ...], window_s: float) -> dict[str, dict]:
    """Windowed series per policy on a common time axis, so every policy's windows line up in the plots."""
    t_end = max(
        max(float(np.nanmax(r.finish)) if np.isfinite(r.finish).any() else 0.0, float(r.arrival[-1]))
        for r in runs.values()
    )
    return {
        name: time_series(
            r.arrival, r.deadline, r.finish, r.quality, r.k_prime, list(levels), window_s=window_s, t_end=t_end
        )
        for name, r in runs.items()
    }


def _write_outputs(
    args: argparse.Namespace,
    policies: list[str],
    cfg: SchedulerConfig,
    arrivals: np.ndarray,
    results: dict[str, dict],
    series: dict[str, dict],
    profile,
) -> None:
    """results.json, series.json and (unless --no-plots) the plots, under --out."""
    n = int(arrivals.size)
    config = {
        "trace": [os.path.abspath(x) for x in args.trace],
        "prompts": os.path.abspath(args.prompts),
        "warm": args.warm,
        "peak_load": args.peak_load,
        "time_scale": args.time_scale,
        "requests": n,
        "duration_s": float(arrivals[-1]),
        "capacity_rps_top_level": cfg.top_level_capacity(),
        "seed": args.seed,
        "cache_capacity": args.cache_capacity,
        "resumed_levels": args.resumed_levels,
        "window_s": args.window,
        "policies": policies,
        "scheduler": cfg.to_dict(),
    }
    os.makedirs(args.out, exist_ok=True)
    write_results(os.path.join(args.out, "results.json"), config, results)
    write_results(os.path.join(args.out, "series.json"), config, {}, series)
    if not args.no_plots:
        from .plots import plot_kmix, plot_timeseries

        title = (
            f"{args.workers} workers, {profile.name}, SLO {cfg.slo_s:.1f}s, peak load {args.peak_load}, "
            f"time ×{args.time_scale}, {n} requests"
        )
        plot_timeseries(series, os.path.join(args.out, "timeseries.png"), title)
        plot_kmix(series, os.path.join(args.out, "kmix.png"))


def _print_table(args: argparse.Namespace, profile, cfg: SchedulerConfig, results: dict[str, dict]) -> None:
    """The settings line and the comparison table on stdout."""
    print(
        f"{args.workers} workers · {profile.name} · SLO {cfg.slo_s:.2f}s · period {args.period}s · "
        f"util target {args.util_target} · EWMA α {args.ewma_alpha} · backlog-aware {cfg.backlog_aware} · "
        f"redirect {cfg.deadline_redirect} · batch caps {cfg.batch_caps()}"
    )
    print(format_table(results))
    online = {name: m for name, m in results.items() if "jain_on_time" in m}
    print("per-user fairness (a seeded Zipf assignment of requests to 100 users; scheduler.fairness):")
    print(format_table(online, FAIRNESS_COLUMNS))
    print(f"wrote {os.path.join(args.out, 'results.json')}")


if __name__ == "__main__":
    sys.exit(main())
