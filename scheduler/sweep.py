"""`python -m scheduler.sweep`: the seeded sweep of issue 13 (item 8) — every policy on a matrix of workloads
and seeds, mean and 95 % CI per metric, paired differences to prompt_aware, and a PASS/FAIL per goal.

Example (the run in docs/results.md; quote the specs so the sweep, not the shell, expands the globs):

    python -m scheduler.sweep \\
        --traces 'twitter=../shared/data/traces/proteus_twitter/zipf_exponential_300/*.txt' \\
                 azure=../shared/data/traces/diffserve_azure_functions_shape/transformed_invocations.csv \\
                 alibaba=../shared/data/traces/alibaba_gentd26_t2i/lora_request_trace.csv \\
        --prompts ../shared/data/prompts/diffusiondb_2m_first_4k.txt --warm 1000 \\
        --loads 0.3,0.6,1.0,1.5,2.0 --time-scales 6.5,2 --seeds 10 --workers 16 --profile sdxl-a100 \\
        --out results/sweep

The matrix. A *trace spec* is one workload family: `NAME=PATH[,PATH...]` (each PATH may be a glob; the
files are merged as `python -m scheduler.simulate --trace` merges them) or a bare `PATH` (named after the
file). Any file `scheduler.traces` reads is accepted, told apart by content: PROTEUS `arrival_ms,qos,slo_ms`,
one column of seconds, a rate curve (`,hour,invocations`: a Poisson draw over the shape) and timestamped
requests (GenTD26 `gmt_create`: TXT_2_IMG rows of the busiest 24 h, time / 300); see that module. A
*workload* is (trace, peak load X, time scale F); a *unit* is a workload and a seed; a *cell* is a unit and
a policy. Every cell runs `scheduler.simulator.simulate` through the simulator CLI's own helpers
(`_scheduler_config`, `_run_policies`); the neighbour index of a unit is built once and shared by its
policies. Units run in parallel (`--jobs`, processes), one progress bar counts cells.

What a seed s changes (the same s gives the same workload to every policy: the comparison is paired):
1. rate-curve traces: the Poisson draw (`traces.load_trace_seeded(paths, s)`); other traces are fixed;
2. the arrival times: after the simulator's rescaling (time × F, then systematic thinning/replication so
   the busiest 10-s window carries X × the all-top-level capacity), every arrival moves by an independent
   Uniform(−J, +J), J = `--jitter` × the mean gap of that arrival stream (default 1 gap; 0: none), then
   the stream is sorted and starts at 0 again. The peak then lands within a few % of X (printed);
3. the prompts: a contiguous window of the prompt file at a seeded offset o (uniform over every offset
   that fits; the same uniform draw for every workload of the seed): prompts [o, o + warm) warm the
   cache, the next ones are the requests, in order;
4. the policies' own random choices (`simulate(..., seed=s)`).
Seeds are `--first-seed` … `--first-seed + --seeds − 1`.

Prompts beyond the file. A workload with more arrivals than the file has prompts after its warm set
replays the file from its first line and then a synthesised continuation (`scheduler.prompt_stream`,
seeded by the seed: the file's own nearest-predecessor similarities and reuse lags), with the lineage
neighbour lists of `scheduler.neighbour_index`, as `python -m scheduler.simulate` does; the notes say
which workloads. `--max-requests N` still caps a workload to N *consecutive* arrivals centred on the
busiest 10-s window (clipped to the trace's ends; shifted to start at 0), and says so in the table and
in sweep.json.

Statistics: per workload, policy and metric (every number of `SimResult.summary`, `k_prime_mix` flattened)
the mean over seeds and the 95 % CI half-width (Student t, n − 1 d.o.f.); and the paired per-seed
differences policy − prompt_aware with their mean and CI. DIR/sweep.json holds the configuration, every
cell's raw metrics, the aggregates and the goal checks.

Goals (issue 13; the oracle and hindsight are bounds, not baselines):
* G1 not dominated, every workload: for each baseline B (clipper_ha, clipper_ht, nirvana, proteus), if
  viol(B) ≤ viol(PA) + 0.5 pp then Q(PA) ≥ Q(B); and viol(PA) ≤ the lowest viol of the five live
  policies + 1 pp (seed means);
* G2 margin over PROTEUS at load `--g2-load` (1.0), every trace and time scale: Q(PA) − Q(PROTEUS) ≥ +0.01,
  viol(PA) ≤ viol(PROTEUS) + 0.1 pp and the paired 95 % CI of the Q difference above 0. When hindsight ran
  and its headroom Q(hindsight) − Q(PROTEUS) is below 0.01 (+0.01 is not available), the criterion is
  instead: capture ≥ 60 % of that headroom at the same violation condition (the line says which);
* G3 close to clairvoyance, every workload: Q(PA) ≥ 0.99 × Q(oracle) and viol(PA) ≤ viol(oracle) + 0.1 pp;
* G4 lag, every workload at a compressed time scale (`--compressed`; default the smallest of
  `--time-scales` when several are given: load changes fastest against the controller's period there):
  viol(PA) ≤ 2 × viol(oracle) + 1 pp.
An `oracle@A` in `--policies` (the oracle seeing A s ahead instead of one period) adds, after G4, a G3 line
against that oracle: how much of the oracle's edge is foresight. It informs; the issue's G3 is the line above.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from . import simulate as _simulate_cli
from .cache_model import ApproxCache
from .embeddings import embed_prompt_file
from .interface import SchedulerConfig
from .metrics import _clean, _json_default
from .neighbour_index import LINEAGE_TOP_M, candidate_lists
from .plots import plot_sweep
from .policies import DEFAULT_POLICIES, ORACLE_VARIANT_PREFIX, SIM_POLICY_NAMES, is_sim_policy
from .profiles import LatencyProfile, load_profile
from .prompt_stream import extend_stream
from .similarity_calibration import calibration
from .simulate import _any_count, _non_negative, _positive, _positive_count, _run_policies, _scheduler_config
from .sweep_goals import HINDSIGHT, check_goals, format_goals, oracle_label
from .sweep_stats import QUALITY, REFERENCE, VIOL, aggregate, flatten_metrics, mean_ci, workload_key
from .traces import load_trace_seeded, peak_rate, scale_trace

try:  # the hindsight bound is built alongside (issue 13 item 6); the sweep runs without it
    from . import hindsight as _hindsight_module

    HINDSIGHT_MISSING = "" if hasattr(_hindsight_module, "hindsight") else "scheduler.hindsight has no hindsight()"
except Exception as exc:  # any failure to import it (a half-built module too) only removes that column
    _hindsight_module = None
    HINDSIGHT_MISSING = f"scheduler.hindsight not importable ({type(exc).__name__}: {exc})"

# Bounds the simulator CLI's `_run_policies` runs itself (when it knows them); else "hindsight" goes through
# `_hindsight_module.hindsight(config, arrivals, embeddings, warm, cache, seed)` here.
SIMULATOR_BOUNDS: tuple[str, ...] = tuple(getattr(_simulate_cli, "HINDSIGHT_NAMES", ()))
# Flags of `python -m scheduler.simulate` the sweep does not take: it sets these per cell itself.
_NOT_INHERITED = {"--trace", "--peak-load", "--time-scale", "--seed", "--no-plots"}
PEAK_WINDOW_S = 10.0  # the window of the peak-load definition (traces.peak_rate)
_JITTER_STREAM, _OFFSET_STREAM = 1_000_001, 1_000_002  # seed-sequence tails, apart from the trace draws'


@dataclass(frozen=True)
class TraceSpec:
    """One workload family: a name and its files (merged)."""

    name: str
    paths: tuple[str, ...]


@dataclass
class Unit:
    """A workload and a seed: the arrivals and the prompt window every policy of it replays."""

    trace: str
    load: float
    time_scale: float
    seed: int
    arrivals: np.ndarray
    offset: int  # first prompt line of the window (warm set, then the requests)
    uncapped: int  # arrivals before the cap
    peak_load: float  # realised: busiest 10-s window / capacity

    @property
    def capped(self) -> bool:
        return self.arrivals.size < self.uncapped


# ---------------------------------------------------------------------------------------------- the CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scheduler.sweep",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--traces",
        "--trace",
        nargs="+",
        action="extend",
        required=True,
        metavar="SPEC",
        help="workload families: NAME=PATH[,PATH...] (globs expanded here; quote them) or a bare PATH; repeatable",
    )
    p.add_argument("--prompts", required=True, help="prompt file, one prompt per line")
    p.add_argument(
        "--warm", type=_any_count, default=1000, help="prompts before each request window that warm the cache"
    )
    p.add_argument("--loads", default="0.3,0.6,1.0,1.5,2.0", help="peak loads X (× all-top-level capacity)")
    p.add_argument("--time-scales", default="6.5,2", help="time stretch factors F")
    p.add_argument("--seeds", type=_positive_count, default=10, help="seeds per workload")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--jitter", type=_non_negative, default=1.0, help="arrival jitter, ± this many mean gaps (0: none)")
    p.add_argument(
        "--max-requests",
        type=_positive_count,
        default=None,
        help="cap per workload (consecutive arrivals around the peak); none: every arrival, prompts beyond the "
        "file synthesised",
    )
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_POLICIES + ((HINDSIGHT,) if _bounds() else ())),
        help=f"comma list of {', '.join(SIM_POLICY_NAMES + _bounds())} (bounds: when scheduler.hindsight is "
        "importable), or oracle@A: the oracle seeing A s ahead, with its own informational G3 line",
    )
    p.add_argument("--out", default="results/sweep", help="output folder (sweep.json)")
    p.add_argument("--jobs", type=_positive_count, default=os.cpu_count() or 1, help="parallel processes")
    p.add_argument("--window", type=float, default=30.0, help="metrics window (s)")
    p.add_argument("--g2-load", type=float, default=1.0, help="the load of goal 2")
    p.add_argument(
        "--compressed",
        default=None,
        help="time scales that count as compressed for goal 4; none: the smallest, when several are given",
    )
    _inherit_simulator_flags(p)
    return p


def _inherit_simulator_flags(p: argparse.ArgumentParser) -> None:
    """Every other flag of `python -m scheduler.simulate` (cluster, profile, controller settings and
    ablations, cache model), with its name, default and help: `_scheduler_config` reads them, and a lever
    added there is a sweep flag at once."""
    taken = {s for a in p._actions for s in a.option_strings} | _NOT_INHERITED
    for action in _simulate_cli.build_parser()._actions:
        if action.option_strings and not taken & set(action.option_strings):
            p._add_action(action)


def _bounds() -> tuple[str, ...]:
    """The bound pseudo-policies this checkout can run."""
    if SIMULATOR_BOUNDS:
        return SIMULATOR_BOUNDS
    return () if HINDSIGHT_MISSING else (HINDSIGHT,)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the docstring's paragraphs as written."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        specs = [parse_trace_spec(s) for s in args.traces]
        loads, scales = _floats(args.loads), _floats(args.time_scales)
        policies, notes = _policy_list(args.policies)
        compressed = _floats(args.compressed) if args.compressed else ([min(scales)] if len(scales) > 1 else [])
    except ValueError as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return 2
    if len({s.name for s in specs}) < len(specs):
        print("sweep: two trace specs have the same name", file=sys.stderr)
        return 2
    started = time.perf_counter()
    m = setup_matrix(args, specs, loads, scales, policies)
    cfg, profile, units, shared, seeds = m.config, m.profile, m.units, m.shared, m.seeds
    notes += m.notes
    results = run_units(units, shared, max(1, args.jobs))
    for bound in (p for p in policies if not is_sim_policy(p)):
        failed = [r.pop(bound)["error"] for r in results if "error" in r.get(bound, {})]
        if failed:
            notes.append(f"{bound} failed on {len(failed)} of {len(units)} units, dropped there: {failed[0]}")
    cells = make_cells(units, results)
    workloads = aggregate(cells)
    describe_workloads(workloads, units)
    goals = check_goals(workloads, g2_load=args.g2_load, compressed=compressed, oracle=oracle_label(cfg))
    wall_s = time.perf_counter() - started
    config = _config_doc(args, specs, policies, seeds, compressed, cfg, notes, wall_s, len(m.shared["embeddings"]))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sweep.json")
    with open(path, "w", encoding="utf-8") as fh:
        doc = {"config": config, "cells": cells, "workloads": workloads, "goals": goals}
        json.dump(_clean(doc), fh, indent=1, allow_nan=False, default=_json_default)
    _print_report(args, cfg, profile, policies, seeds, notes, workloads, goals, wall_s, len(cells), path)
    figure = os.path.join(args.out, "sweep.png")
    plot_sweep(workloads, figure)
    print(f"wrote {figure} (violations vs quality per workload: up and to the left is better)")
    return 0


def _floats(text: str) -> list[float]:
    """A comma list of peak loads or time scales: numbers, every one above 0 (simulate's `_positive`)."""
    try:
        values = [_positive(x) for x in text.split(",") if x.strip()]
    except argparse.ArgumentTypeError:
        raise ValueError(f"{text!r}: every value must be a number > 0") from None
    if not values:
        raise ValueError(f"no numbers in {text!r}")
    return values


def parse_trace_spec(text: str) -> TraceSpec:
    """`NAME=PATH[,PATH...]` (globs expanded, sorted) or a bare `PATH` (named after its file)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or any(c in name for c in "/\\*?["):
        name, rest = "", text
    paths: list[str] = []
    for pattern in (x for x in rest.split(",") if x):
        matched = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        matched = [m for m in matched if os.path.isfile(m)]
        if not matched:
            raise ValueError(f"trace spec {text!r}: no file matches {pattern!r}")
        paths += matched
    if not paths:
        raise ValueError(f"trace spec {text!r} names no file")
    if not name:
        name = os.path.splitext(os.path.basename(paths[0]))[0]
    return TraceSpec(name, tuple(paths))


def _policy_list(text: str) -> tuple[list[str], list[str]]:
    """The policies to run (hindsight dropped with a note when it is not available)."""
    policies = [x.strip() for x in text.split(",") if x.strip()]
    known = set(SIMULATOR_BOUNDS) | {HINDSIGHT}
    bad = [x for x in policies if not is_sim_policy(x) and x not in known]  # ValueError for a bad oracle@A
    if bad:
        choices = ", ".join((*SIM_POLICY_NAMES, *_bounds(), f"{ORACLE_VARIANT_PREFIX}A"))
        raise ValueError(f"unknown policies {bad}; choose from {choices}")
    notes = []
    for name in [x for x in policies if not is_sim_policy(x) and x not in _bounds()]:
        policies.remove(name)
        notes.append(f"{name} skipped: {HINDSIGHT_MISSING or 'not available'}")
    if REFERENCE not in policies:
        notes.append(f"{REFERENCE} not run: no paired differences, goals n/a")
    return policies, notes


# ------------------------------------------------------------------------------------------ the workloads


def jitter_arrivals(arrivals: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Every arrival moved by Uniform(−J, +J), J = jitter × the stream's mean gap; sorted, from 0."""
    t = np.asarray(arrivals, dtype=np.float64)
    if jitter <= 0 or t.size < 2:
        return t.copy()
    half = jitter * (t[-1] - t[0]) / (t.size - 1)
    moved = np.sort(t + rng.uniform(-half, half, t.size))
    return moved - moved[0]


def cap_window(arrivals: np.ndarray, n_max: int, window_s: float = PEAK_WINDOW_S) -> np.ndarray:
    """At most n_max consecutive arrivals, centred on the busiest `window_s` window (clipped to the ends),
    shifted to start at 0; the stream itself when it is short enough."""
    n = arrivals.size
    if n <= n_max:
        return arrivals
    ends = np.searchsorted(arrivals, arrivals + window_s, side="left")
    first = int(np.argmax(ends - np.arange(n)))  # the busiest window is arrivals[first:ends[first]]
    centre = (first + int(ends[first])) // 2
    lo = min(max(0, centre - n_max // 2), n - n_max)
    out = arrivals[lo : lo + n_max]
    return out - out[0]


def prompt_offset(n_prompts: int, warm: int, n_requests: int, u: float) -> int:
    """The window's first line for a uniform draw u ∈ [0, 1): every offset that fits is equally likely."""
    spare = max(0, n_prompts - warm - n_requests)
    return min(spare, int(u * (spare + 1)))


@dataclass
class Matrix:
    """What every unit of a run shares, and the units: built once by `setup_matrix`."""

    config: SchedulerConfig
    profile: LatencyProfile
    seeds: list[int]
    units: list[Unit]
    notes: list[str]  # capped and synthesised workloads
    shared: dict  # the inputs `simulate_unit` reads (handed to each worker process once)


def setup_matrix(
    args: argparse.Namespace, specs: list[TraceSpec], loads: list[float], scales: list[float], policies: list[str]
) -> Matrix:
    """The profile, scheduler configuration, prompt embeddings and units of the matrix the flags describe."""
    levels = tuple(int(x) for x in args.levels.split(","))
    profile = load_profile(args.profile, levels=levels, gamma=args.gamma, model=args.profile_model)
    cfg = _scheduler_config(args, profile)
    embeddings = embed_prompt_file(args.prompts, args.embed_cache, progress=True)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    units, notes = build_units(args, specs, loads, scales, seeds, cfg.top_level_capacity(), len(embeddings))
    shared = {
        "config": cfg,
        "embeddings": embeddings,
        "warm": args.warm,
        "levels": list(levels),
        "policies": policies,
        "cache_capacity": args.cache_capacity,
        "resumed_levels": args.resumed_levels,
        "window": args.window,
        "cache_scope": args.cache_scope,
        "tenants": args.tenants,
        "similarity_calibration": args.similarity_calibration,
    }
    return Matrix(cfg, profile, seeds, units, notes, shared)


def build_units(
    args: argparse.Namespace,
    specs: list[TraceSpec],
    loads: list[float],
    scales: list[float],
    seeds: list[int],
    capacity: float,
    n_prompts: int,
) -> tuple[list[Unit], list[str]]:
    """Every (trace, time scale, load, seed) with its arrivals and prompt window; notes on capped workloads
    and on those whose prompts run past the file (synthesised)."""
    limit = args.max_requests
    if n_prompts - args.warm <= 0 or (limit is not None and limit <= 0):
        raise SystemExit(f"sweep: {n_prompts} prompts and --warm {args.warm} leave no request")
    units, notes = [], []
    for spec in specs:
        bases: dict[int, np.ndarray] = {}
        for scale in scales:
            for load in loads:
                capped, synthesised = [], []
                for seed in seeds:
                    if seed not in bases:
                        bases[seed] = load_trace_seeded(list(spec.paths), seed)
                    scaled = scale_trace(bases[seed], scale, load, capacity, PEAK_WINDOW_S)
                    jittered = jitter_arrivals(scaled, args.jitter, np.random.default_rng([seed, _JITTER_STREAM]))
                    arrivals = jittered if limit is None else cap_window(jittered, limit)
                    if arrivals.size == 0:
                        raise SystemExit(f"sweep: {spec.name} at load {load} × {scale} has no arrivals")
                    u = float(np.random.default_rng([seed, _OFFSET_STREAM]).random())
                    units.append(
                        Unit(
                            trace=spec.name,
                            load=load,
                            time_scale=scale,
                            seed=seed,
                            arrivals=arrivals,
                            offset=prompt_offset(n_prompts, args.warm, arrivals.size, u),
                            uncapped=int(jittered.size),
                            peak_load=peak_rate(arrivals, PEAK_WINDOW_S) / capacity,
                        )
                    )
                    if units[-1].capped:
                        capped.append(units[-1].uncapped)
                    if args.warm + arrivals.size > n_prompts:
                        synthesised.append(args.warm + arrivals.size - n_prompts)
                if capped:
                    notes.append(
                        f"{spec.name} load {load:g} x{scale:g}: capped to {limit} consecutive requests centred on "
                        f"the peak (the workload has {_span(capped)})"
                    )
                if synthesised:
                    notes.append(
                        f"{spec.name} load {load:g} x{scale:g}: {_span(synthesised)} prompts synthesised past the "
                        f"file's {n_prompts} (scheduler.prompt_stream; lineage neighbour lists)"
                    )
    return units, notes


def _span(values: list[int]) -> str:
    """'n' or 'lo–hi' of a list of counts."""
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"


# ------------------------------------------------------------------------------------------- running


_SHARED: dict = {}


def _init_worker(shared: dict, quiet: bool) -> None:
    """Per process: the shared inputs; simulate's per-policy bars silenced (the sweep has one bar)."""
    _SHARED.clear()
    _SHARED.update(shared)
    if quiet:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 — lives as long as the process


def simulate_unit(unit: Unit, sh: dict, policies: list[str]) -> tuple[dict, dict[str, dict], tuple]:
    """The simulator policies among `policies` on one unit (its prompt window, one neighbour index shared by
    them): their runs and summaries by name, and (embeddings, cache, namespace) for the bounds."""
    warm, levels = sh["warm"], sh["levels"]
    embeddings, lists = _prompt_window(sh["embeddings"], unit.offset, warm, unit.arrivals.size, unit.seed)
    cache = ApproxCache(
        embeddings, levels, sh["cache_capacity"], query_start=warm, resumed_levels=sh["resumed_levels"], lists=lists
    )
    cache.set_similarity_map(calibration(sh.get("similarity_calibration", "none"), embeddings, warm))
    ns = argparse.Namespace(
        warm=warm,
        cache_capacity=sh["cache_capacity"],
        seed=unit.seed,
        window=sh["window"],
        cache_scope=sh["cache_scope"],
        tenants=sh["tenants"],
    )
    sim = [p for p in policies if is_sim_policy(p)]
    runs, results = _run_policies(sim, sh["config"], unit.arrivals, embeddings, cache, ns, tuple(levels))
    return runs, results, (embeddings, cache, ns)


def _run_unit(item: tuple[int, Unit]) -> tuple[int, dict[str, dict]]:
    """Every policy on one unit: `simulate_unit`, then the bounds (hindsight) on the same inputs."""
    index, unit = item
    sh = _SHARED
    warm, levels, config, arrivals = sh["warm"], sh["levels"], sh["config"], unit.arrivals
    _, results, (embeddings, cache, ns) = simulate_unit(unit, sh, sh["policies"])
    for bound in (p for p in sh["policies"] if not is_sim_policy(p)):
        try:  # another module's work in progress: a failure drops that column from this unit, with a note
            if bound in SIMULATOR_BOUNDS:
                results.update(_run_policies([bound], config, arrivals, embeddings, cache, ns, tuple(levels))[1])
            else:
                run = _hindsight_module.hindsight(config, arrivals, embeddings, warm, cache, unit.seed)
                results[bound] = run.summary(levels, sh["window"])
        except Exception as exc:
            results[bound] = {"error": f"{type(exc).__name__}: {exc}"}
    return index, {p: results[p] for p in sh["policies"]}


def _prompt_window(file_embeddings: np.ndarray, offset: int, warm: int, n: int, seed: int):
    """(embeddings, neighbour lists) of a unit: the file's window (exact lists, built by the cache), or, when
    the file is too short, the file followed by a synthesised continuation with its lineage lists."""
    if offset + warm + n <= len(file_embeddings):
        return file_embeddings[offset : offset + warm + n], None
    stream = extend_stream(file_embeddings, warm + n, seed)
    return stream.embeddings, candidate_lists(stream, warm, LINEAGE_TOP_M)


def run_units(units: list[Unit], shared: dict, jobs: int) -> list[dict[str, dict]]:
    """Every unit's metrics per policy, in unit order; `jobs` processes, a bar over cells on stderr."""
    return map_units(_run_unit, units, shared, jobs, desc="sweep", per_unit=len(shared["policies"]), unit="cell")


def map_units(
    work: Callable[[tuple[int, Unit]], tuple[int, Any]],
    units: list[Unit],
    shared: dict,
    jobs: int,
    desc: str,
    per_unit: int = 1,
    unit: str = "unit",
) -> list:
    """`work((index, unit))` → (index, result) on every unit, results in unit order: `jobs` forked processes,
    each holding `shared` as `_SHARED` (simulate's own bars silenced), and one bar on stderr advancing
    `per_unit` per unit done."""
    out: list = [None] * len(units)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with (
        tqdm(total=len(units) * per_unit, file=sys.stderr, unit=unit, desc=desc) as bar,
        ctx.Pool(min(jobs, max(1, len(units))), initializer=_init_worker, initargs=(shared, True)) as pool,
    ):
        for index, result in pool.imap_unordered(work, list(enumerate(units))):
            out[index] = result
            bar.update(per_unit)
    return out


def make_cells(units: list[Unit], results: list[dict[str, dict]]) -> list[dict]:
    """One record per (unit, policy): the workload, the seed and the flattened metrics."""
    cells = []
    for unit, per_policy in zip(units, results):
        for policy, summary in per_policy.items():
            cells.append(
                {
                    "trace": unit.trace,
                    "load": unit.load,
                    "time_scale": unit.time_scale,
                    "seed": unit.seed,
                    "policy": policy,
                    "prompt_offset": unit.offset,
                    "capped_from": unit.uncapped if unit.capped else None,
                    "peak_load": unit.peak_load,
                    "metrics": flatten_metrics(summary),
                }
            )
    return cells


def describe_workloads(workloads: dict[str, dict], units: list[Unit]) -> None:
    """Add to each aggregated workload what its units were: requests per seed, the cap, the realised peak
    load and the prompt offsets."""
    for key, w in workloads.items():
        mine = [u for u in units if workload_key(u.trace, u.load, u.time_scale) == key]
        if mine:
            w["requests"] = [int(u.arrivals.size) for u in mine]
            w["capped_from"] = [u.uncapped for u in mine] if any(u.capped for u in mine) else None
            w["peak_load_realised"] = mean_ci([u.peak_load for u in mine])
            w["prompt_offsets"] = [u.offset for u in mine]


# --------------------------------------------------------------------------------------------- printing


def _pm(stat: dict, fmt: str, scale: float = 1.0, signed: bool = False) -> str:
    mean, ci = stat["mean"] * scale, stat["ci"] * scale
    head = (f"{mean:+{fmt}}" if signed else f"{mean:{fmt}}") if math.isfinite(mean) else "-"
    return head + (f"±{ci:{fmt}}" if math.isfinite(ci) else "")


def format_sweep_table(workloads: dict[str, dict]) -> str:
    """Per workload and policy: viol. and eff. Q (mean ± 95 % CI) and the paired ΔQ / Δviol vs prompt_aware."""
    rows = [["workload", "requests", "peak", "policy", "viol. %", "eff. Q", "ΔQ vs PA", "Δviol pp vs PA"]]
    for key, w in workloads.items():
        req = w.get("requests") or []
        reqs = (f"{min(req)}" if min(req) == max(req) else f"{min(req)}–{max(req)}") if req else ""
        if w.get("capped_from"):
            reqs += f" of {max(w['capped_from'])}"
        peak = f"{w['peak_load_realised']['mean']:.2f}" if "peak_load_realised" in w else ""
        for i, (p, m) in enumerate(w["policies"].items()):
            d = w["paired"].get(p)
            rows.append(
                [
                    key if i == 0 else "",
                    reqs if i == 0 else "",
                    peak if i == 0 else "",
                    p,
                    _pm(m[VIOL], ".2f", 100),
                    _pm(m[QUALITY], ".4f"),
                    _pm(d[QUALITY], ".4f", signed=True) if d else "",
                    _pm(d[VIOL], ".2f", 100, signed=True) if d else "",
                ]
            )
    return _render(rows, left={0, 3})


def _render(rows: list[list[str]], left: set[int]) -> str:
    """Like metrics.render_table, with the columns in `left` left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _print_report(args, cfg, profile, policies, seeds, notes, workloads, goals, wall_s, n_cells, path) -> None:
    print(
        f"{args.workers} workers · {profile.name} · SLO {cfg.slo_s:.2f}s · period {args.period}s · util target "
        f"{args.util_target} · seeds {seeds[0]}–{seeds[-1]} · jitter ±{args.jitter:g} gap · warm {args.warm} · "
        f"{n_cells} cells in {wall_s:.0f} s ({args.jobs} jobs)"
    )
    quality = cfg.quality.source or "default"
    if quality != "default" or args.similarity_calibration != "none":
        print(f"quality model: {quality} · similarity calibration: {args.similarity_calibration}")
    for note in notes:
        print(f"note: {note}")
    print("mean ± 95 % CI over seeds; Δ = paired per-seed difference policy − prompt_aware; peak = realised load")
    print(format_sweep_table(workloads))
    print(format_goals(goals))
    print(f"wrote {path}")


def _config_doc(args, specs, policies, seeds, compressed, cfg, notes, wall_s, n_prompts) -> dict:
    return {
        "traces": {s.name: [os.path.abspath(p) for p in s.paths] for s in specs},
        "prompts": os.path.abspath(args.prompts),
        "prompt_lines": n_prompts,
        "warm": args.warm,
        "loads": _floats(args.loads),
        "time_scales": _floats(args.time_scales),
        "seeds": seeds,
        "jitter_gaps": args.jitter,
        "max_requests": args.max_requests,
        "policies": policies,
        "compressed_time_scales": compressed,
        "g2_load": args.g2_load,
        "capacity_rps_top_level": cfg.top_level_capacity(),
        "cache_capacity": args.cache_capacity,
        "resumed_levels": args.resumed_levels,
        "similarity_calibration": args.similarity_calibration,
        "window_s": args.window,
        "jobs": args.jobs,
        "wall_s": wall_s,
        "notes": notes,
        "scheduler": cfg.to_dict(),
    }


if __name__ == "__main__":
    sys.exit(main())
