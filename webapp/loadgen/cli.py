"""What `manage.py loadgen` and `manage.py compare_sim` share: arguments and one live run.

The workload arguments (--trace, --prompts, --warm, --peak-load, --time-scale, --seed, --window,
--no-plots, and for compare_sim the cache/embedding options) are added by the simulator's own
functions (`scheduler.simulate.add_workload_arguments`, `add_cache_model_arguments`), so names,
types, defaults and help are the same in both.
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django.db import DatabaseError
from knox.models import AuthToken
from tqdm import tqdm

from scheduler.embeddings import read_prompts
from scheduler.simulate import add_workload_arguments
from scheduler.traces import peak_rate
from webapp.cache.models import CacheEntry
from webapp.ledger.models import AllocationPlan, ServingConfig

from . import collect
from .replay import ApiClient, ApiError, ReplayResult, replay, request_seeds, wait_for_end
from .workload import LiveSetup, Workload, WorkloadError, build_workload, fit_prompt, live_setup

RUN_TOKEN_DAYS = 2  # lifetime of the token a run makes for --user (tokens are stored hashed: none can be read back)


def add_live_arguments(parser, out_default: str) -> None:
    """Workload arguments (shared with the simulator) and the live client's own."""
    add_workload_arguments(parser)  # the simulator's own workload options (seed: also image seeds, seed + i)
    parser.add_argument(
        "--slo",
        type=float,
        default=None,
        help="judge on-time against arrival + SLO (profile seconds); default: each row's own "
        "deadline, i.e. the admin's SLO",
    )
    parser.add_argument(
        "--url",
        default=settings.T2I_WEB_URL,
        help="base URL of the web server (default: the running `make run`'s, from its connection file)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"API token (default: $T2I_TOKEN, else a new token for --user, made in the database, expiring in "
        f"{RUN_TOKEN_DAYS} days)",
    )
    parser.add_argument("--user", default="demo", help="for whom to make a token when --token is not given")
    parser.add_argument(
        "--start",
        type=float,
        default=None,
        help="replay the segment of the scaled trace from this time on (profile seconds; its "
        "first arrival becomes time 0); OUT/trace_segment.txt replays it in the simulator",
    )
    parser.add_argument("--max-requests", type=int, default=None, help="replay at most this many arrivals")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="replay only arrivals due within this many wall-clock seconds"
    )
    parser.add_argument("--out", default=out_default, help="output folder")
    parser.add_argument("--policy-label", default=None, help="row name (default: '<policy> (live)')")
    parser.add_argument(
        "--profile",
        default=None,
        help="latency profile (default: the live scheduler's: $T2I_PROFILE, else the engine's "
        "measured profile, else $T2I_FALLBACK_PROFILE)",
    )
    parser.add_argument("--workers", type=int, default=None, help="worker count (default: T2I_WORKERS)")
    parser.add_argument(
        "--time-factor",
        type=float,
        default=None,
        help="the emulated engine's time factor (default: $T2I_TIME_FACTOR or 1)",
    )
    parser.add_argument("--threads", type=int, default=16, help="HTTP client threads")
    parser.add_argument("--http-timeout", type=float, default=30.0, help="seconds per HTTP call")
    parser.add_argument(
        "--lag-limit",
        type=float,
        default=60.0,
        help="arrivals the client cannot send within this many seconds of their time fail",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="wall seconds to wait for requests to end after the last arrival (default: 4 × SLO + 60)",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="wall seconds between status polls")
    parser.add_argument(
        "--clip-prompts",
        action="store_true",
        help="shorten prompts over the server's CLIP token limit (else they fail with 400)",
    )
    parser.add_argument(
        "--assume-warm",
        action="store_true",
        help="with --warm N: skip warm_cache (already warmed) but still replay prompts[N:]",
    )
    parser.add_argument(
        "--warmup-requests",
        type=int,
        default=0,
        help="before the clock starts, send this many throw-away requests (prompts unlike any real "
        "one) and wait for them, so cold workers and web processes load their engines and "
        "models first; not counted (use about 2-3 × workers on a freshly started stack)",
    )
    parser.add_argument("--keep-cap", action="store_true", help="do not lift the per-user in-flight cap for the run")
    parser.add_argument(
        "--no-db", action="store_true", help="never touch the database (no config read, no cap lift, no warm_cache)"
    )


@dataclass
class LiveRun:
    setup: LiveSetup
    workload: Workload
    result: ReplayResult
    arrays: dict
    metrics: dict
    series: dict
    config: dict
    label: str
    plans: list = None  # controller plans during the run (profile seconds from t0), with DB access


def _say(stream, msg: str) -> None:
    print(msg, file=stream, flush=True)


def resolve_token(opts: dict) -> str:
    token = opts.get("token") or os.environ.get("T2I_TOKEN")
    if token:
        return token
    if opts.get("no_db"):
        raise CommandError("pass --token (or set T2I_TOKEN): with --no-db it cannot be looked up")
    try:
        user = get_user_model().objects.filter(username=opts["user"]).first()
        if user is None:
            raise CommandError(f"no user {opts['user']!r}: pass --token or --user")
        # Tokens are stored hashed, so an existing one cannot be read back: a fresh one for this run, expiring
        # on its own (the owner sees it at /tokens/ and may revoke it).
        return AuthToken.objects.create(user=user, expiry=timedelta(days=RUN_TOKEN_DAYS))[1]
    except DatabaseError as exc:
        raise CommandError(
            f"pass --token: cannot use the database to make a token for {opts['user']!r} ({exc})"
        ) from exc


@contextmanager
def in_flight_cap_lifted(opts: dict, stream):
    """Set ServingConfig.max_in_flight to 0 (no cap) for the run and restore it after, saying so."""
    if opts.get("keep_cap") or opts.get("no_db"):
        _say(stream, "in-flight cap: left as it is (--keep-cap/--no-db); 429 answers count as failed arrivals")
        yield None
        return

    try:
        sc = ServingConfig.current()
    except DatabaseError as exc:
        raise CommandError(
            f"cannot read the serving configuration to lift the per-user in-flight cap ({exc}); "
            f"lift it in the admin (max_in_flight = 0) and rerun with --keep-cap"
        ) from exc
    old = sc.max_in_flight
    if old:
        ServingConfig.objects.filter(pk=sc.pk).update(max_in_flight=0)
        _say(stream, f"in-flight cap: lifted for this run (ServingConfig.max_in_flight {old} → 0; restored after)")
    try:
        yield old
    finally:
        if old:
            ServingConfig.objects.filter(pk=sc.pk).update(max_in_flight=old)


def warm_limit(prompts_path: str, warm: int) -> int:
    """warm_cache's --limit that covers exactly lines [0, warm) of the file, as the simulator's --warm does:
    warm_cache counts distinct non-blank prompts in file order, so duplicates must not push it further."""
    return len(dict.fromkeys(p.strip() for p in read_prompts(prompts_path)[:warm] if p.strip()))


def cache_surplus(prompts_path: str, warm: int) -> int:
    """Cache entries beyond the warm set (0 when unknown)."""
    try:
        return max(0, CacheEntry.objects.count() - warm_limit(prompts_path, warm))
    except DatabaseError:
        return 0


def _throttle_warning(wl: Workload, factor: float) -> str | None:
    rate = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).get("submit")
    if not rate:
        return None
    num, per = rate.split("/")
    secs = {"s": 1, "m": 60, "h": 3600, "d": 86400}[per[0]]
    wall = wl.arrivals * factor
    busiest = peak_rate(wall, float(secs)) * secs
    if busiest > int(num):
        return (
            f"the trace sends up to {busiest:.0f} requests per {per} but the submit throttle here is {rate} "
            f"(T2I_SUBMIT_RATE); if the server has the same setting it will answer 429"
        )
    return None


def _plan_stats(t0_wall: float, t1_wall: float, factor: float, levels: list[int]) -> tuple[dict, list[dict]]:
    """Controller plans stored during the run: summary numbers and their history (profile seconds)."""
    try:
        rows = list(
            AllocationPlan.objects.filter(
                created_at__gte=datetime.fromtimestamp(t0_wall, UTC),
                created_at__lte=datetime.fromtimestamp(t1_wall, UTC),
            )
            .order_by("id")
            .values_list("created_at", "status", "solve_ms", "worker_levels", "expected_quality")
        )
    except DatabaseError:
        return {}, []
    ms = [v for _, _, v, _, _ in rows if v is not None]
    history = []
    for created, status, solve_ms, wl, eq in rows:
        c = Counter(wl or [])
        history.append(
            {
                "time": (created.timestamp() - t0_wall) / factor,
                "status": status,
                "workers_per_level": [c.get(k, 0) for k in levels],
                "expected_quality": eq,
                "solve_time_s": None if solve_ms is None else solve_ms / 1e3,
            }
        )
    stats = {
        "plans": len(rows),
        "plan_solve_ms_mean": float(np.mean(ms)) if ms else None,
        "plans_failed": sum(1 for _, s, _, _, _ in rows if s in ("failed", "slow")),
    }
    return stats, history


def run_live(
    opts: dict, stream=sys.stderr, setup: LiveSetup | None = None, workload: Workload | None = None
) -> LiveRun:
    """One live replay with the options of add_live_arguments(); messages go to `stream`."""
    use_db = not opts.get("no_db")
    setup = setup or live_setup(
        slo=opts.get("slo"),
        factor=opts.get("time_factor"),
        profile=opts.get("profile"),
        workers=opts.get("workers"),
        use_db=use_db,
    )
    workload = workload or _build_workload(opts, setup)
    client = _connect(opts)
    _describe(setup, workload, stream)
    prompts = _prompts_to_send(workload, opts, stream)
    _warm_cache(workload, opts, use_db, stream)
    drain = opts.get("drain_timeout")
    if drain is None:
        drain = 4.0 * setup.config.slo_s * setup.time_factor + 60.0
    result = _replay_and_wait(client, workload, prompts, setup.time_factor, drain, opts, stream)
    t_end = time.time()
    arrays = collect.to_arrays(result, setup.config, setup.time_factor, opts.get("slo"))
    metrics, series = collect.live_metrics(result, arrays, setup.config.levels, opts["window"])
    plans: list[dict] = []
    if use_db:
        stats, plans = _plan_stats(result.t0_wall, t_end, setup.time_factor, setup.config.levels)
        metrics.update(stats)
    _report_problems(result, metrics, drain, stream)
    label = opts.get("policy_label") or f"{setup.policy} (live)"
    config = _run_config(opts, setup, workload, result, arrays, label, drain)
    return LiveRun(setup, workload, result, arrays, metrics, series, config, label, plans)


def _build_workload(opts: dict, setup: LiveSetup) -> Workload:
    """The scaled trace and prompt stream, as the simulator builds it."""
    try:
        return build_workload(
            opts["trace"],
            opts["prompts"],
            opts["warm"],
            opts["time_scale"],
            opts["peak_load"],
            setup.config,
            setup.time_factor,
            opts.get("max_requests"),
            opts.get("max_seconds"),
            opts.get("start"),
        )
    except (WorkloadError, OSError) as exc:
        raise CommandError(str(exc)) from exc


def _connect(opts: dict) -> ApiClient:
    """An API client with a working token, checked against the server before anything is sent."""
    client = ApiClient(opts["url"], resolve_token(opts), opts["http_timeout"])
    try:
        client.check()
    except ApiError as exc:
        raise CommandError(str(exc)) from exc
    return client


def _describe(setup: LiveSetup, workload: Workload, stream) -> None:
    cfg, factor = setup.config, setup.time_factor
    for note in setup.notes:
        _say(stream, f"note: {note}")
    _say(stream, workload.describe(factor))
    _say(
        stream,
        f"live: {cfg.n_workers} workers · profile {cfg.profile.name} · time factor {factor:g} · policy "
        f"{setup.policy} · SLO {cfg.slo_s:.2f} s profile = {cfg.slo_s * factor:.2f} s wall",
    )
    warn = _throttle_warning(workload, factor)
    if warn:
        _say(stream, f"warning: {warn}")


def _prompts_to_send(workload: Workload, opts: dict, stream) -> list[str]:
    """The workload's prompts, shortened to the CLIP token limit with --clip-prompts."""
    prompts = workload.prompts
    if not opts.get("clip_prompts"):
        return prompts
    clipped = [fit_prompt(p) for p in prompts]
    changed = sum(a != b for a, b in zip(prompts, clipped))
    if changed:
        _say(stream, f"--clip-prompts: shortened {changed} prompt(s) to the CLIP token limit")
    return clipped


def _warm_cache(workload: Workload, opts: dict, use_db: bool, stream) -> None:
    """Fill the cache with the warm prefix of the prompt file (as the simulator's --warm does)."""
    if workload.warm and not opts.get("assume_warm"):
        if not use_db:
            raise CommandError("--warm needs database access (it runs warm_cache); use --assume-warm with --no-db")
        if "warm_cache" not in get_commands():
            raise CommandError(
                "--warm needs the warm_cache command (workers/management/commands/warm_cache.py), "
                "which this checkout does not have yet"
            )
        started = time.perf_counter()
        limit = warm_limit(opts["prompts"], workload.warm)
        call_command("warm_cache", prompts=opts["prompts"], limit=limit, stdout=stream, stderr=stream)
        _say(
            stream,
            f"warm_cache: lines 1-{workload.warm} of the prompt file ({limit} distinct prompts) in "
            f"{time.perf_counter() - started:.1f} s",
        )
    if use_db:
        extra = cache_surplus(opts["prompts"], workload.warm)
        if extra:
            _say(
                stream,
                f"warning: the cache holds {extra} prompt(s) beyond the warm set (earlier runs grew it); "
                f"the simulator starts from the warm set only — for a like-for-like run start from a "
                f"fresh stack (`make clean-data`)",
            )


def _replay_and_wait(
    client: ApiClient, workload: Workload, prompts: list[str], factor: float, drain: float, opts: dict, stream
) -> ReplayResult:
    """Send every arrival at its wall time (with the in-flight cap lifted), then wait for all to end."""
    due = (workload.arrivals * factor).tolist()
    seeds = request_seeds(workload.n, opts.get("seed") or 0)
    with in_flight_cap_lifted(opts, stream):
        if opts.get("warmup_requests"):
            warm_up(client, int(opts["warmup_requests"]), drain, opts, stream)
        with tqdm(total=workload.n, file=stream, unit="req", desc="submitting", mininterval=0.5) as bar:
            result = replay(
                client, due, prompts, seeds, threads=opts["threads"], lag_limit_s=opts["lag_limit"], progress=bar
            )
        accepted = len(result.accepted_ids)
        with tqdm(total=accepted, file=stream, unit="req", desc="waiting", mininterval=0.5) as bar:
            wait_for_end(client, result, drain, opts["poll"], progress=bar)
    return result


def _report_problems(result: ReplayResult, metrics: dict, drain: float, stream) -> None:
    if result.unfinished:
        sample = ", ".join(f"{k} ({v})" for k, v in list(result.unfinished.items())[:10])
        _say(stream, f"warning: {len(result.unfinished)} request(s) had not ended after {drain:.0f} s: {sample}")
    errs = [a for a in result.arrivals if not a.accepted]
    if errs:
        codes = metrics["http_error_codes"]
        _say(stream, f"{len(errs)} arrival(s) failed at submission {codes}; first: {errs[0].error}")
        if any("cap" in (a.error or "") for a in errs if a.status_code == 429):
            _say(
                stream,
                "the per-user in-flight cap refused requests: lift it (admin: max_in_flight = 0) "
                "or let loadgen do it (run it with database access and without --keep-cap)",
            )
        if any("near-duplicate" in (a.error or "") for a in errs if a.status_code == 429):
            _say(
                stream,
                "the near-duplicate (probing) limit refused requests: replay as a staff user (the default "
                "--user demo is one) or start the server with T2I_PROBE_LIMIT=0",
            )


def _run_config(
    opts: dict, setup: LiveSetup, workload: Workload, result: ReplayResult, arrays: dict, label: str, drain: float
) -> dict:
    """What results.json records about the run (the simulator's keys, plus the live ones)."""
    return {
        "trace": [os.path.abspath(x) for x in opts["trace"]],
        "prompts": os.path.abspath(opts["prompts"]),
        "warm": workload.warm,
        "peak_load": opts["peak_load"],
        "time_scale": opts["time_scale"],
        "requests": workload.n,
        "duration_s": workload.duration_s,
        "capacity_rps_top_level": workload.capacity_rps,
        "seed": opts.get("seed") or 0,
        "window_s": opts["window"],
        "policies": [label],
        "scheduler": setup.config.to_dict(),
        "live": {
            **setup.to_dict(),
            "url": opts["url"],
            "trace_requests": workload.trace_requests,
            "truncated_by": workload.truncated_by,
            "max_requests": opts.get("max_requests"),
            "start": opts.get("start"),
            "max_seconds": opts.get("max_seconds"),
            "clip_prompts": bool(opts.get("clip_prompts")),
            "drain_timeout_s": drain,
            "threads": opts["threads"],
            "slo_judged": arrays["slo_s"],
            "times": "profile seconds (wall seconds / time_factor)",
            "t0_unix": result.t0_wall,
            "unfinished_ids": list(result.unfinished),
        },
    }


def warm_up(client: ApiClient, n: int, timeout_s: float, opts: dict, stream) -> None:
    """Throw-away requests that make every cold process load what it loads lazily (not measured)."""
    tag = uuid.uuid4().hex[:8]
    prompts = [f"zz loadgen warm-up {tag} number {i}" for i in range(n)]
    t = time.perf_counter()
    res = replay(
        client,
        [0.1 * i for i in range(n)],
        prompts,
        request_seeds(n, 0),
        threads=opts["threads"],
        lag_limit_s=opts["lag_limit"],
        run_id=f"warmup-{tag}",
    )
    wait_for_end(client, res, timeout_s, opts["poll"])
    took = time.perf_counter() - t
    _say(stream, f"warm-up: {n} throw-away requests in {took:.1f} s{warm_up_trouble(res)} — not counted")


_SUBMIT_FAILURE = {None: "not sent", 0: "no response"}  # replay's status codes that are not HTTP answers


def warm_up_trouble(res: ReplayResult) -> str:
    """What went wrong in the warm-up, for its line: requests not accepted, by HTTP status or as `replay` left
    them (status None: not sent; 0: no response), with the first one's message, and requests that had not
    ended; empty when nothing did."""
    refused = [a for a in res.arrivals if not a.accepted]
    parts = []
    if refused:
        codes = Counter(_SUBMIT_FAILURE.get(a.status_code, f"HTTP {a.status_code}") for a in refused)
        by_code = ", ".join(f"{count} × {code}" for code, count in sorted(codes.items()))
        parts.append(f"{len(refused)} refused ({by_code}; first: {refused[0].error})")
    if res.unfinished:
        parts.append(f"{len(res.unfinished)} unfinished")
    return f" ({'; '.join(parts)})" if parts else ""


def header_line(cfg, setup: LiveSetup) -> str:
    """The simulator's settings line, plus the live time factor."""
    return (
        f"{cfg.n_workers} workers · {cfg.profile.name} · SLO {cfg.slo_s:.2f}s · period {cfg.period_s:g}s · "
        f"util target {cfg.util_target} · EWMA α {cfg.ewma_alpha} · backlog-aware {cfg.backlog_aware} · "
        f"redirect {cfg.deadline_redirect} · batch caps {cfg.batch_caps()} · time factor {setup.time_factor:g} "
        f"(times in profile seconds)"
    )


def finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
