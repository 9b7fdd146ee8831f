"""Final rows → the per-request arrays `scheduler.metrics.summarize` takes, and the output files.

Per arrival, in trace order (profile seconds = wall seconds ÷ time factor, from the run's start):
* accepted: arrival = the row's `created_at`, deadline = the row's `deadline` (or arrival + --slo), finish =
  `finished_at` when it **succeeded** (failed, cancelled, expired or never-ended rows are not served:
  finish = NaN, a violation), start = `started_at`, K′ = `k_served`, Q = the row's `quality` (when the
  worker left it empty: 1 at K′ = 0, else Q(similarity, K′) from the scheduler's quality model, counted
  in `quality_imputed`), redirected = `redirected`;
* not accepted (HTTP error, no answer, not sent): arrival = when the client sent it, deadline = arrival +
  SLO, finish = NaN — a failed arrival, counted as a violation like a dropped request in the simulator.
Server timestamps are used as they are when the server's clock agrees with ours (same host). A row cannot be
created before its POST was sent, so min(created_at − sent) over all rows bounds the clock difference (the
fastest POST's handling time on top); only when that exceeds a second either way is it taken out (skew).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from datetime import datetime

import numpy as np

from scheduler.interface import SchedulerConfig
from scheduler.metrics import format_table, summarize, time_series, write_results

from .replay import ReplayResult

SKEW_TOLERANCE_S = 1.0


def _ts(value) -> float:
    if not value:
        return math.nan
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def clock_offset(result: ReplayResult) -> float:
    """Server clock − client clock (s) from the fastest POST; 0 unless it exceeds SKEW_TOLERANCE_S."""
    diffs = [
        (_ts(result.rows[a.request_id].get("created_at")) - (result.t0_wall + a.sent))
        for a in result.arrivals
        if a.accepted and a.request_id in result.rows
    ]
    diffs = [d for d in diffs if math.isfinite(d)]
    if not diffs:
        return 0.0
    off = float(min(diffs))
    return off if abs(off) > SKEW_TOLERANCE_S else 0.0


def to_arrays(result: ReplayResult, cfg: SchedulerConfig, factor: float, slo_override: float | None) -> dict:
    """Arrays (profile seconds) for summarize/time_series, plus per-request columns for requests.csv."""
    n = len(result.arrivals)
    off = clock_offset(result)
    t0 = result.t0_wall + off
    slo_row = []  # server SLOs seen (profile s), for failed arrivals' deadlines
    cols = {k: np.full(n, np.nan) for k in ("arrival", "deadline", "start", "finish", "quality", "similarity")}
    k_prime = np.zeros(n, dtype=np.int64)
    k_star = np.full(n, -1, dtype=np.int64)
    worker = np.full(n, -1, dtype=np.int64)
    batch = np.zeros(n, dtype=np.int64)
    redirected = np.zeros(n, dtype=bool)
    status = [""] * n
    imputed = 0
    qm = cfg.quality
    for i, a in enumerate(result.arrivals):
        row = result.rows.get(a.request_id) if a.accepted else None
        if row is None:
            status[i] = (
                "http_error"
                if a.status_code not in (None, 0)
                else ("not_sent" if a.status_code is None else "no_response")
            )
            if a.accepted:
                status[i] = "lost"  # accepted, but the row could not be read back
            cols["arrival"][i] = a.sent / factor
            continue
        st = row.get("status", "")
        status[i] = st
        arr = (_ts(row.get("created_at")) - t0) / factor
        cols["arrival"][i] = arr
        dl = (_ts(row.get("deadline")) - t0) / factor
        if math.isfinite(dl):
            slo_row.append(dl - arr)
        cols["deadline"][i] = arr + slo_override if slo_override is not None else dl
        cols["start"][i] = (_ts(row.get("started_at")) - t0) / factor
        if st == "succeeded":
            cols["finish"][i] = (_ts(row.get("finished_at")) - t0) / factor
        k = int(row.get("k_served") or 0)
        k_prime[i] = k
        k_star[i] = -1 if row.get("k_star") is None else int(row["k_star"])
        worker[i] = -1 if row.get("worker") is None else int(row["worker"])
        batch[i] = int(row.get("batch_size") or 0)
        redirected[i] = bool(row.get("redirected"))
        s = row.get("similarity")
        cols["similarity"][i] = math.nan if s is None else float(s)
        q = row.get("quality")
        if q is None and st == "succeeded":
            imputed += 1
            q = 1.0 if k == 0 else (qm.q(float(s), k) if s is not None else qm.floor)
        cols["quality"][i] = math.nan if q is None else float(q)
    slo = slo_override if slo_override is not None else (float(np.median(slo_row)) if slo_row else cfg.slo_s)
    miss = ~np.isfinite(cols["deadline"])
    cols["deadline"][miss] = cols["arrival"][miss] + slo
    return {
        **cols,
        "k_prime": k_prime,
        "k_star": k_star,
        "worker": worker,
        "batch": batch,
        "redirected": redirected,
        "status": status,
        "clock_offset_s": off,
        "slo_s": slo,
        "quality_imputed": imputed,
    }


def live_metrics(result: ReplayResult, arrays: dict, levels: list[int], window_s: float) -> tuple[dict, dict]:
    """summarize() + live extras, and time_series(), from to_arrays()'s output."""
    a = arrays
    m = summarize(
        a["arrival"],
        a["deadline"],
        a["finish"],
        a["quality"],
        a["k_prime"],
        a["redirected"],
        list(levels),
        window_s=window_s,
        start=a["start"],
    )
    series = time_series(
        a["arrival"], a["deadline"], a["finish"], a["quality"], a["k_prime"], list(levels), window_s=window_s
    )
    arr = result.arrivals
    lag = np.array([x.sent - x.due for x in arr if math.isfinite(x.sent)])
    post = np.array([x.post_s for x in arr if math.isfinite(x.post_s)])
    errors = Counter(x.status_code if x.status_code is not None else "not sent" for x in arr if not x.accepted)
    m.update(
        {
            "accepted": sum(1 for x in arr if x.accepted),
            "http_errors": sum(errors.values()),
            "http_error_codes": {str(k): v for k, v in sorted(errors.items(), key=lambda kv: str(kv[0]))},
            "status_counts": dict(Counter(s for s in a["status"])),
            "unfinished": len(result.unfinished),
            "quality_imputed": a["quality_imputed"],
            "submit_lag_p99_s": float(np.percentile(lag, 99)) if lag.size else None,
            "submit_lag_max_s": float(lag.max()) if lag.size else None,
            "post_latency_p99_s": float(np.percentile(post, 99)) if post.size else None,
            "clock_offset_s": a["clock_offset_s"],
            "live_wall_s": result.replay_wall_s + result.drain_wall_s,
        }
    )
    return m, series


def write_requests_csv(path: str, result: ReplayResult, arrays: dict) -> None:
    """One line per arrival: what the client did and what the server recorded (profile seconds)."""
    fields = [
        "index",
        "due_wall_s",
        "sent_wall_s",
        "http",
        "id",
        "status",
        "arrival",
        "deadline",
        "start",
        "finish",
        "k_star",
        "k_prime",
        "worker",
        "batch",
        "similarity",
        "quality",
        "redirected",
        "error",
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        for i, a in enumerate(result.arrivals):

            def f(key, i=i):
                v = arrays[key][i]
                return (
                    ""
                    if isinstance(v, float) and not math.isfinite(v)
                    else (round(float(v), 4) if isinstance(v, float) else v)
                )

            w.writerow(
                [
                    a.index,
                    round(a.due, 4),
                    "" if not math.isfinite(a.sent) else round(a.sent, 4),
                    a.status_code if a.status_code is not None else "",
                    a.request_id or "",
                    arrays["status"][i],
                    f("arrival"),
                    f("deadline"),
                    f("start"),
                    f("finish"),
                    int(arrays["k_star"][i]),
                    int(arrays["k_prime"][i]),
                    int(arrays["worker"][i]),
                    int(arrays["batch"][i]),
                    f("similarity"),
                    f("quality"),
                    bool(arrays["redirected"][i]),
                    a.error or "",
                ]
            )


def write_outputs(
    out_dir: str, config: dict, results: dict[str, dict], series: dict[str, dict], title: str, plots: bool = True
) -> list[str]:
    """results.json and series.json (the simulator's layout), timeseries.png and kmix.png."""
    os.makedirs(out_dir, exist_ok=True)
    written = [os.path.join(out_dir, "results.json"), os.path.join(out_dir, "series.json")]
    write_results(written[0], config, results)
    write_results(written[1], config, {}, series)
    if plots:
        from scheduler.plots import plot_kmix, plot_timeseries

        plot_timeseries(series, os.path.join(out_dir, "timeseries.png"), title)
        plot_kmix(series, os.path.join(out_dir, "kmix.png"))
        written += [os.path.join(out_dir, "timeseries.png"), os.path.join(out_dir, "kmix.png")]
    return written


def write_json(path: str, doc: dict) -> None:
    """Strict JSON (NaN/inf → null), numpy values as plain numbers."""

    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.bool_,)):
            return bool(o)
        if isinstance(o, (float, np.floating)):
            return float(o) if math.isfinite(o) else None
        return o

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(clean(doc), fh, indent=2, allow_nan=False)


__all__ = [
    "write_json",
    "to_arrays",
    "live_metrics",
    "write_requests_csv",
    "write_outputs",
    "format_table",
    "clock_offset",
]
