"""Metrics (PROTEUS's definitions, DESIGN §7), the results table and results.json.

* SLO violation ratio = (requests − requests finished by their deadline) / requests (late and dropped
  requests both violate).
* Throughput = requests finished on time per second, per window (`window_s`, by finish time); peak = the
  largest window, mean = on-time requests / span of the run.
* Effective quality = mean Q(s, K′) of served (finished) requests; max quality drop = 1 − the lowest
  windowed mean (windows by finish time with at least `min_count` served requests).
* Also: p50/p95/p99 end-to-end latency of served requests, cache hit rate (served with K′ > 0), redirect
  rate (share of all requests), queue wait and service time, per-K′ mix.

These functions take plain per-request arrays, so the live load generator can use them as well.
"""

from __future__ import annotations

import json
import os

import numpy as np

TABLE_COLUMNS: list[tuple[str, str, str]] = [
    ("slo_violation_ratio", "SLO viol.", "{:.2%}"),
    ("effective_quality", "eff. Q", "{:.4f}"),
    ("max_quality_drop", "max Q drop", "{:.4f}"),
    ("throughput_peak", "peak thr/s", "{:.2f}"),
    ("throughput_mean", "mean thr/s", "{:.2f}"),
    ("p99_latency_s", "p99 lat s", "{:.2f}"),
    ("hit_rate", "hit rate", "{:.2%}"),
    ("redirect_rate", "redirect", "{:.2%}"),
    ("requests", "requests", "{:d}"),
]


def summarize(
    arrival: np.ndarray,
    deadline: np.ndarray,
    finish: np.ndarray,
    quality: np.ndarray,
    k_prime: np.ndarray,
    redirected: np.ndarray,
    levels: list[int],
    window_s: float = 30.0,
    start: np.ndarray | None = None,
    min_count: int = 5,
) -> dict:
    """Summary metrics for one policy run (see module docstring)."""
    n = int(arrival.size)
    served = np.isfinite(finish)
    on_time = served & (finish <= deadline + 1e-9)
    lat = (finish - arrival)[served]
    t_end = float(np.nanmax(finish)) if served.any() else float(arrival.max(initial=0.0))
    t0 = float(arrival.min(initial=0.0))
    span = max(t_end - t0, 1e-9)
    edges = np.arange(t0, t_end + window_s, window_s)
    thr = np.histogram(finish[on_time], bins=edges)[0] / window_s if edges.size > 1 else np.zeros(1)
    qs = quality[served]
    fs = finish[served]
    idx = np.clip(((fs - t0) // window_s).astype(int), 0, max(edges.size - 2, 0)) if fs.size else fs.astype(int)
    worst = 1.0
    if fs.size:
        cnt = np.bincount(idx)
        sq = np.bincount(idx, weights=qs)
        ok = cnt >= min_count
        if ok.any():
            worst = float((sq[ok] / cnt[ok]).min())
    out = {
        "slo_violation_ratio": float((n - on_time.sum()) / n) if n else 0.0,
        "effective_quality": float(qs.mean()) if qs.size else float("nan"),
        "max_quality_drop": float(1.0 - worst),
        "throughput_peak": float(thr.max()) if thr.size else 0.0,
        "throughput_mean": float(on_time.sum() / span),
        "p50_latency_s": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p95_latency_s": float(np.percentile(lat, 95)) if lat.size else float("nan"),
        "p99_latency_s": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "hit_rate": float((k_prime[served] > 0).mean()) if served.any() else 0.0,
        "redirect_rate": float(redirected.mean()) if n else 0.0,
        "requests": n,
        "served": int(served.sum()),
        "on_time": int(on_time.sum()),
        "late": int((served & ~on_time).sum()),
        "dropped": int((~served).sum()),
        "k_prime_mix": {str(k): float((k_prime[served] == k).mean()) if served.any() else 0.0 for k in levels},
    }
    if start is not None:
        st = np.isfinite(start) & served
        out["mean_queue_wait_s"] = float((start - arrival)[st].mean()) if st.any() else float("nan")
        out["mean_service_s"] = float((finish - start)[st].mean()) if st.any() else float("nan")
    return out


def time_series(
    arrival: np.ndarray,
    deadline: np.ndarray,
    finish: np.ndarray,
    quality: np.ndarray,
    k_prime: np.ndarray,
    levels: list[int],
    window_s: float = 30.0,
    t_end: float | None = None,
) -> dict:
    """Per-window series for plots: load, on-time throughput, violation ratio, quality, K′ mix.
    Pass the same t_end for several policies so their windows line up."""
    served = np.isfinite(finish)
    on_time = served & (finish <= deadline + 1e-9)
    if t_end is None:
        t_end = max(float(np.nanmax(finish)) if served.any() else 0.0, float(arrival.max(initial=0.0)))
    edges = np.arange(0.0, t_end + window_s, window_s)
    if edges.size < 2:
        edges = np.array([0.0, window_s])
    load = np.histogram(arrival, bins=edges)[0] / window_s
    thr = np.histogram(finish[on_time], bins=edges)[0] / window_s
    n_arr = np.histogram(arrival, bins=edges)[0]
    n_bad = np.histogram(arrival[~on_time], bins=edges)[0]  # violations by arrival window
    viol = np.where(n_arr > 0, n_bad / np.maximum(n_arr, 1), np.nan)
    cnt = np.histogram(finish[served], bins=edges)[0]
    qsum = np.histogram(finish[served], bins=edges, weights=quality[served])[0]
    qual = np.where(cnt > 0, qsum / np.maximum(cnt, 1), np.nan)
    mix = {str(k): (np.histogram(finish[served & (k_prime == k)], bins=edges)[0] / window_s).tolist() for k in levels}
    return {
        "t": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "load": load.tolist(),
        "throughput": thr.tolist(),
        "violation_ratio": [None if not np.isfinite(v) else float(v) for v in viol],
        "quality": [None if not np.isfinite(v) else float(v) for v in qual],
        "k_prime_rate": mix,
    }


def format_table(results: dict[str, dict], columns: list[tuple[str, str, str]] | None = None) -> str:
    """The printed table: one row per policy; `columns` (key, header, format), by default TABLE_COLUMNS."""
    columns = TABLE_COLUMNS if columns is None else columns
    head = ["policy"] + [c[1] for c in columns]
    rows = [head]
    for name, m in results.items():
        rows.append([name] + [fmt.format(m[key]) if m.get(key) is not None else "-" for key, _, fmt in columns])
    return render_table(rows)


def render_table(rows: list[list[str]]) -> str:
    """Plain-text table: the first row is the header; first column left-aligned, the rest right."""
    head = rows[0]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(path: str, config: dict, results: dict[str, dict], series: dict | None = None) -> None:
    """Write results.json: {"config": ..., "policies": {name: metrics}} (+ "series" if given)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    doc = {"config": config, "policies": results}
    if series is not None:
        doc["series"] = series
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_clean(doc), fh, indent=2, allow_nan=False, default=_json_default)


def _clean(o):
    """NaN/inf → None so the file is strict JSON."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
