"""The one place that computes the dashboard's and /metrics' aggregates (DESIGN §7).

Everything is aggregated in PostgreSQL (FILTER clauses, GROUP BY a time bucket, percentile_cont);
Python only receives a handful of rows. Definitions, over a window [now − W, now):

* Cohort metrics use the requests that **arrived** in the window (`created_at`):
  - arrivals, arrival rate = arrivals / W;
  - a request is *decided* when it is not cancelled and its outcome is known: it is terminal
    (succeeded, failed, expired) or still queued/running past its deadline (it can no longer be on
    time). Requests cancelled by their owner are neither on time nor violations: they are left out.
    Queued/running requests whose deadline has not passed yet are *pending* and left out too, so a
    fresh burst does not count as on time or as late before it has run;
  - SLO violation ratio = (decided − on time) / decided, where on time = succeeded with
    finished_at ≤ deadline. Violations are late successes, failures, expirations and overdue rows;
  - per-K′ mix = share of arrivals at each served level `k_served` (rows with a K′ only);
  - cache match rate = share of arrivals with a cache neighbour and K* > 0 (loadgen's "hit rate" is served at K′ > 0);
  - redirect rate = share of arrivals the dispatcher redirected.
* Completion metrics use the requests that **finished** in the window (`finished_at`):
  - on-time throughput = requests that succeeded by their deadline and finished in the window / W;
  - effective quality = mean `quality` of requests served (succeeded) in the window;
  - measured adherence (demo model only) = share of the served requests with a `measured_adherence` whose
    image the scorer read all four attributes back from, next to the mean `quality` of those same requests;
  - latency p50/p95/p99, mean queue wait and mean service time of those requests.
  To stay on the `created_at` index, completion metrics scan rows created at most
  `scan_lookback(W, SLO)` before the window start (≥ 1 h and ≥ 4 × SLO; the reconciler expires
  anything older than 2 × SLO).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from webapp.ledger.models import AllocationPlan, BatchRecord, GenerationRequest, ServingConfig
from webapp.ledger.queues import gpu_queue

WINDOWS: dict[str, int] = {
    name: int(name[:-1]) * {"m": 60, "h": 3600}[name[-1]] for name in settings.T2I_METRICS_WINDOWS
}
DEFAULT_WINDOW = "15m"
BUCKETS = 60
RECENT_PLANS = 8


class UnknownWindow(ValueError):
    pass


@dataclass(frozen=True)
class Window:
    name: str
    seconds: int
    start: datetime
    end: datetime
    scan_start: datetime

    @property
    def step(self) -> float:
        return self.seconds / BUCKETS

    def bucket_starts(self) -> list[datetime]:
        return [self.start + timedelta(seconds=i * self.step) for i in range(BUCKETS)]


def scan_lookback(window_seconds: float, slo_seconds: float) -> float:
    return max(3600.0, 4.0 * slo_seconds)


def resolve_window(name: str | None, now: datetime | None = None, slo_seconds: float | None = None) -> Window:
    name = name or DEFAULT_WINDOW
    if name not in WINDOWS:
        raise UnknownWindow(f"Unknown window {name!r}; choose one of {', '.join(WINDOWS)}.")
    seconds = WINDOWS[name]
    end = now or timezone.now()
    start = end - timedelta(seconds=seconds)
    if slo_seconds is None:
        slo_seconds = ServingConfig.current().slo_seconds
    scan_start = start - timedelta(seconds=scan_lookback(seconds, slo_seconds))
    return Window(name, seconds, start, end, scan_start)


def _table() -> str:
    return connection.ops.quote_name(GenerationRequest._meta.db_table)


def _fetch(sql: str, params: dict) -> list[dict]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def _ratio(num: float, den: float) -> float | None:
    return (num / den) if den else None


def _float(value) -> float | None:
    return None if value is None else float(value)


# SQL fragments shared by the queries (column names from the model, states from Status).
_ARRIVED = "r.created_at >= %(start)s"
_ON_TIME = "(r.status = 'succeeded' AND r.finished_at <= r.deadline)"
_DECIDED = "(r.status <> 'cancelled' AND (r.status IN ('succeeded', 'failed', 'expired') OR r.deadline <= %(end)s))"
_HIT = "(r.cache_neighbor_id IS NOT NULL AND r.k_star > 0)"
_FINISHED = "(r.finished_at >= %(start)s AND r.finished_at < %(end)s)"
_SERVED = f"({_FINISHED} AND r.status = 'succeeded')"


def _params(w: Window) -> dict:
    return {"start": w.start, "end": w.end, "scan_start": w.scan_start, "step": w.step}


def window_summary(w: Window) -> dict[str, Any]:
    """Headline numbers for one window (one query)."""
    sql = f"""
        SELECT
          count(*) FILTER (WHERE {_ARRIVED}) AS arrivals,
          count(*) FILTER (WHERE {_ARRIVED} AND r.status = 'cancelled') AS cancelled,
          count(*) FILTER (WHERE {_ARRIVED} AND {_DECIDED}) AS decided,
          count(*) FILTER (WHERE {_ARRIVED} AND {_ON_TIME}) AS on_time,
          count(*) FILTER (WHERE {_ARRIVED} AND r.status = 'succeeded'
                           AND r.finished_at > r.deadline) AS late,
          count(*) FILTER (WHERE {_ARRIVED} AND r.status = 'failed') AS failed,
          count(*) FILTER (WHERE {_ARRIVED} AND r.status = 'expired') AS expired,
          count(*) FILTER (WHERE {_ARRIVED} AND r.status IN ('queued', 'running')
                           AND r.deadline <= %(end)s) AS overdue,
          count(*) FILTER (WHERE {_ARRIVED} AND r.status IN ('queued', 'running')
                           AND r.deadline > %(end)s) AS pending,
          count(*) FILTER (WHERE {_ARRIVED} AND {_HIT}) AS cache_hits,
          count(*) FILTER (WHERE {_ARRIVED} AND r.redirected) AS redirects,
          count(*) FILTER (WHERE {_FINISHED} AND {_ON_TIME}) AS on_time_finished,
          count(*) FILTER (WHERE {_SERVED}) AS served,
          avg(r.quality) FILTER (WHERE {_SERVED}) AS effective_quality,
          count(r.measured_adherence) FILTER (WHERE {_SERVED}) AS adherence_scored,
          avg((r.measured_adherence = 1)::int) FILTER (WHERE {_SERVED}) AS measured_adherence,
          avg(r.quality) FILTER (WHERE {_SERVED} AND r.measured_adherence IS NOT NULL) AS scored_quality,
          avg(extract(epoch FROM (r.started_at - r.created_at))) FILTER (WHERE {_SERVED})
            AS mean_queue_wait,
          avg(r.service_seconds) FILTER (WHERE {_SERVED}) AS mean_service,
          percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
            ORDER BY extract(epoch FROM (r.finished_at - r.created_at))) FILTER (WHERE {_SERVED})
            AS latency
        FROM {_table()} r
        WHERE r.created_at >= %(scan_start)s AND r.created_at < %(end)s
    """
    row = _fetch(sql, _params(w))[0]
    out: dict[str, Any] = {
        k: int(row[k])
        for k in (
            "arrivals",
            "cancelled",
            "decided",
            "on_time",
            "late",
            "failed",
            "expired",
            "overdue",
            "pending",
            "cache_hits",
            "redirects",
            "on_time_finished",
            "served",
            "adherence_scored",
        )
    }
    out["violations"] = out["decided"] - out["on_time"]
    out["violation_ratio"] = _ratio(out["violations"], out["decided"])
    out["arrival_rate"] = out["arrivals"] / w.seconds
    out["on_time_throughput"] = out["on_time_finished"] / w.seconds
    out["effective_quality"] = _float(row["effective_quality"])
    # Demo model only (issue 15): the share of served images its scorer reads all four attributes back from,
    # and the yardstick's Q for those same images (avg() ignores the rows without a score).
    out["measured_adherence"] = _float(row["measured_adherence"])
    out["scored_quality"] = _float(row["scored_quality"])
    out["cache_hit_rate"] = _ratio(out["cache_hits"], out["arrivals"])
    out["redirect_rate"] = _ratio(out["redirects"], out["arrivals"])
    out["mean_queue_wait"] = _float(row["mean_queue_wait"])
    out["mean_service"] = _float(row["mean_service"])
    lat = row["latency"] or [None, None, None]
    out["latency_p50"], out["latency_p95"], out["latency_p99"] = (_float(x) for x in lat)
    return out


def k_mix(w: Window, column: str = "k_served") -> list[dict[str, Any]]:
    """Arrivals in the window per level (`k_served` = K′ mix, `k_star` = demand per K* class)."""
    assert column in ("k_served", "k_star")
    rows = _fetch(
        f"""
        SELECT r.{column} AS k, count(*) AS n FROM {_table()} r
        WHERE r.created_at >= %(start)s AND r.created_at < %(end)s AND r.{column} IS NOT NULL
        GROUP BY r.{column} ORDER BY r.{column}
    """,
        _params(w),
    )
    total = sum(int(r["n"]) for r in rows)
    return [{"k": int(r["k"]), "count": int(r["n"]), "share": int(r["n"]) / total} for r in rows]


def queue_depths() -> dict[int, dict[str, int]]:
    """Current queued and running rows per worker (the (status, worker) index)."""
    rows = _fetch(
        f"""
        SELECT r.worker, r.status, count(*) AS n FROM {_table()} r
        WHERE r.status IN ('queued', 'running') AND r.worker IS NOT NULL
        GROUP BY r.worker, r.status
    """,
        {},
    )
    out: dict[int, dict[str, int]] = {}
    for r in rows:
        out.setdefault(int(r["worker"]), {"queued": 0, "running": 0})[r["status"]] = int(r["n"])
    return out


def time_series(w: Window) -> dict[str, list]:
    """Per bucket (BUCKETS of W/BUCKETS seconds): arrivals, decided, violations, cache hits by
    arrival time; on-time completions, served, mean quality by finish time. Rates are per second."""
    p = _params(w)
    by_arrival = _fetch(
        f"""
        SELECT floor(extract(epoch FROM (r.created_at - %(start)s)) / %(step)s)::int AS b,
               count(*) AS arrivals,
               count(*) FILTER (WHERE {_DECIDED}) AS decided,
               count(*) FILTER (WHERE {_DECIDED} AND NOT {_ON_TIME}) AS violations
        FROM {_table()} r
        WHERE r.created_at >= %(start)s AND r.created_at < %(end)s
        GROUP BY b
    """,
        p,
    )
    by_finish = _fetch(
        f"""
        SELECT floor(extract(epoch FROM (r.finished_at - %(start)s)) / %(step)s)::int AS b,
               count(*) FILTER (WHERE {_ON_TIME}) AS on_time,
               count(*) FILTER (WHERE r.status = 'succeeded') AS served,
               avg(r.quality) FILTER (WHERE r.status = 'succeeded') AS quality
        FROM {_table()} r
        WHERE r.created_at >= %(scan_start)s AND r.created_at < %(end)s AND {_FINISHED}
        GROUP BY b
    """,
        p,
    )
    n = BUCKETS
    arrivals, decided, violations = [0] * n, [0] * n, [0] * n
    on_time, served, quality = [0] * n, [0] * n, [None] * n
    for r in by_arrival:
        b = min(max(int(r["b"]), 0), n - 1)
        arrivals[b] += int(r["arrivals"])
        decided[b] += int(r["decided"])
        violations[b] += int(r["violations"])
    for r in by_finish:
        b = min(max(int(r["b"]), 0), n - 1)
        on_time[b] += int(r["on_time"])
        served[b] += int(r["served"])
        if r["quality"] is not None:
            quality[b] = float(r["quality"])
    step = w.step
    return {
        "t": w.bucket_starts(),
        "step": step,
        "arrivals": arrivals,
        "arrival_rate": [a / step for a in arrivals],
        "on_time": on_time,
        "on_time_throughput": [x / step for x in on_time],
        "decided": decided,
        "violations": violations,
        "violation_ratio": [(v / d) if d else None for v, d in zip(violations, decided)],
        "served": served,
        "quality": quality,
    }


def mix_series(w: Window) -> dict[str, Any]:
    """Arrivals per bucket and K′ (`k_served`)."""
    rows = _fetch(
        f"""
        SELECT floor(extract(epoch FROM (r.created_at - %(start)s)) / %(step)s)::int AS b,
               r.k_served AS k, count(*) AS n
        FROM {_table()} r
        WHERE r.created_at >= %(start)s AND r.created_at < %(end)s AND r.k_served IS NOT NULL
        GROUP BY b, r.k_served
    """,
        _params(w),
    )
    levels = sorted({int(r["k"]) for r in rows})
    counts = {k: [0] * BUCKETS for k in levels}
    for r in rows:
        counts[int(r["k"])][min(max(int(r["b"]), 0), BUCKETS - 1)] += int(r["n"])
    return {"t": w.bucket_starts(), "step": w.step, "levels": levels, "counts": counts}


def queue_series(w: Window) -> dict[str, Any]:
    """Requests waiting (arrived, not yet started or finished) per worker at the end of each bucket.
    A row re-queued after a lost lease counts from its arrival to its last start."""
    rows = _fetch(
        f"""
        SELECT g.i AS b, r.worker AS worker, count(*) AS n
        FROM generate_series(1, %(n)s) AS g(i)
        JOIN {_table()} r
          ON r.created_at <= %(start)s + g.i * %(step_iv)s
         AND coalesce(r.started_at, r.finished_at, 'infinity'::timestamptz) > %(start)s + g.i * %(step_iv)s
        WHERE r.created_at >= %(scan_start)s AND r.created_at < %(end)s AND r.worker IS NOT NULL
        GROUP BY g.i, r.worker
    """,
        {**_params(w), "n": BUCKETS, "step_iv": timedelta(seconds=w.step)},
    )
    workers = sorted({int(r["worker"]) for r in rows} | set(range(settings.T2I_WORKERS)))
    depth = {k: [0] * BUCKETS for k in workers}
    for r in rows:
        depth[int(r["worker"])][int(r["b"]) - 1] = int(r["n"])
    t = [w.start + timedelta(seconds=i * w.step) for i in range(1, BUCKETS + 1)]
    return {"t": t, "workers": workers, "depth": depth}


def lifetime_totals() -> dict[str, Any]:
    """Monotonic totals for Prometheus counters (rows are never deleted; terminal states are final)."""
    rows = _fetch(
        f"""
        SELECT r.status, r.k_served AS k, count(*) AS n,
               count(*) FILTER (WHERE {_ON_TIME}) AS on_time,
               count(*) FILTER (WHERE {_HIT}) AS hits,
               count(*) FILTER (WHERE r.redirected) AS redirects,
               count(r.quality) FILTER (WHERE r.status = 'succeeded') AS quality_n,
               coalesce(sum(r.quality) FILTER (WHERE r.status = 'succeeded'), 0) AS quality_sum
        FROM {_table()} r GROUP BY r.status, r.k_served
    """,
        {},
    )
    by_status: dict[str, int] = {}
    served_by_k: dict[int, int] = {}
    out = {"created": 0, "on_time": 0, "cache_hits": 0, "redirects": 0, "quality_count": 0, "quality_sum": 0.0}
    for r in rows:
        n = int(r["n"])
        by_status[r["status"]] = by_status.get(r["status"], 0) + n
        out["created"] += n
        out["on_time"] += int(r["on_time"])
        out["cache_hits"] += int(r["hits"])
        out["redirects"] += int(r["redirects"])
        out["quality_count"] += int(r["quality_n"])
        out["quality_sum"] += float(r["quality_sum"])
        if r["status"] == "succeeded" and r["k"] is not None:
            served_by_k[int(r["k"])] = served_by_k.get(int(r["k"]), 0) + n
    out["by_status"] = by_status
    out["served_by_k"] = served_by_k
    return out


def batch_totals() -> list[dict[str, Any]]:
    """Per (worker, K′): batches run, requests in them, and summed service time."""
    table = connection.ops.quote_name(BatchRecord._meta.db_table)
    rows = _fetch(
        f"""
        SELECT b.worker, b.k_prime, count(*) AS batches, coalesce(sum(b.batch_size), 0) AS requests,
               coalesce(sum(b.service_seconds), 0) AS seconds
        FROM {table} b GROUP BY b.worker, b.k_prime ORDER BY b.worker, b.k_prime
    """,
        {},
    )
    return [
        {
            "worker": int(r["worker"]),
            "k_prime": int(r["k_prime"]),
            "batches": int(r["batches"]),
            "requests": int(r["requests"]),
            "seconds": float(r["seconds"]),
        }
        for r in rows
    ]


# --- plans and layout --------------------------------------------------------------------


def plan_dict(plan: AllocationPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    sol = plan.solution or {}
    levels = [int(k) for k in sol.get("levels", [])]
    route = sol.get("route") or []
    batch = {int(k): int(v) for k, v in (sol.get("batch_size") or {}).items()}
    util = list(plan.utilisation or sol.get("utilisation") or [])
    return {
        "version": plan.id,
        "created_at": plan.created_at.isoformat(timespec="seconds") if plan.created_at else None,
        "created_ts": plan.created_at.timestamp() if plan.created_at else None,
        "policy": plan.policy,
        "status": plan.status,
        "manual": plan.status == "manual",
        "message": plan.message,
        "worker_levels": [int(k) for k in plan.worker_levels or []],
        "expected_quality": plan.expected_quality,
        "utilisation": [float(u) for u in util],
        "solve_ms": plan.solve_ms,
        "levels": levels,
        "route": [[float(x) for x in row] for row in route],
        "batch_size": batch,
        "workers_per_level": [int(x) for x in sol.get("workers_per_level") or []],
        "capacity": [float(x) for x in sol.get("capacity") or []],
        "demand_rate": _float(sol.get("demand_rate")),
        "served_rate": _float(sol.get("served_rate")),
    }


def recent_plans(limit: int = RECENT_PLANS) -> list[dict[str, Any]]:
    rows = AllocationPlan.objects.order_by("-id").only(
        "id", "created_at", "policy", "status", "message", "worker_levels", "expected_quality", "solve_ms"
    )[:limit]
    return [
        {
            "version": p.id,
            "created_at": p.created_at.isoformat(timespec="seconds"),
            "policy": p.policy,
            "status": p.status,
            "usable": p.usable,
            "message": p.message,
            "worker_levels": [int(k) for k in p.worker_levels or []],
            "expected_quality": p.expected_quality,
            "solve_ms": p.solve_ms,
        }
        for p in rows
    ]


def workers_view(plan: dict | None, config: ServingConfig) -> dict[str, Any]:
    """Per-worker level (from the current plan) and queue depth, and where the layout comes from."""
    depths = queue_depths()
    levels = plan["worker_levels"] if plan else []
    n = max([settings.T2I_WORKERS, len(levels)] + [w + 1 for w in depths])
    manual_config = config.layout_list
    rows = []
    for w in range(n):
        d = depths.get(w, {"queued": 0, "running": 0})
        rows.append(
            {
                "worker": w,
                "queue": gpu_queue(w),
                "level": levels[w] if w < len(levels) else None,
                "queued": d["queued"],
                "running": d["running"],
            }
        )
    if plan is None:
        source = "none"
    elif plan["manual"]:
        source = "manual"
    else:
        source = {"ok": "solver", "fixed": "fixed"}.get(plan["status"], plan["status"])
    return {
        "rows": rows,
        "source": source,
        "manual": source == "manual",
        "configured_manual_layout": manual_config,
        # A layout was set (or cleared) in the admin but the controller has not applied it yet.
        "manual_pending": (manual_config is not None and (plan is None or plan["worker_levels"] != manual_config)),
    }


def snapshot(window_name: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard page and its JSON endpoint show."""
    config = ServingConfig.current()
    w = resolve_window(window_name, now, config.slo_seconds)
    current = plan_dict(AllocationPlan.current())
    return {
        "window": w.name,
        "window_seconds": w.seconds,
        "generated_at": w.end.isoformat(timespec="seconds"),
        "policy": config.policy,
        "slo_seconds": config.slo_seconds,
        "summary": window_summary(w),
        "k_mix": k_mix(w, "k_served"),
        "k_star_mix": k_mix(w, "k_star"),
        "workers": workers_view(current, config),
        "plan": current,
        "recent_plans": recent_plans(),
    }
