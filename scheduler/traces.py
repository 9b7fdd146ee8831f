"""Arrival traces: loading, merging and rescaling (shared by the simulator and the live load generator).

Formats (`trace_format` tells them apart by content, not by file name):
* PROTEUS: `arrival_ms,qos,slo_ms` (only the first field is used; milliseconds), detected per line;
* one column: arrival time in **seconds**, detected per line;
* a rate curve (the Azure Functions shape DiffServe replays, `,hour,invocations`): a CSV whose header has
  an `invocations` column, one row per consecutive bin. It is a rate *shape*, not arrivals: see
  `rate_curve_arrivals` (each bin lasts 1 s, as DiffServe replays it; the curve is scaled so its peak bin
  has 1,000 req/s, above the busiest PROTEUS Twitter window of ~715/s, so the peak-load rescaling below
  thins it as it thins the Twitter trace; arrivals are a non-homogeneous Poisson draw, seeded);
* timestamped requests (Alibaba GenTD26 `lora_request_trace.csv`): a CSV whose header has a `gmt_create`
  column (`YYYY-MM-DD HH:MM:SS`), one request per row: see `read_timestamped` (the TXT_2_IMG rows of the
  busiest 24 h, time compressed 300×, so a day spans 288 s like the Twitter trace's 290.6 s).
Several files are merged and sorted; times are shifted so the first arrival is at 0. Blank lines and lines
starting with `#` are skipped; a header line that does not parse is skipped too. `load_trace` draws a
rate curve with seed 0; `load_trace_seeded` takes the seed (the sweep's seeds vary the draw).

Rescaling keeps the shape:
* `time_scale` F multiplies every time (stretch);
* `peak_load` X then thins (or replicates) arrivals so the busiest 10-s window carries X × the cluster's
  capacity (in req/s). Thinning is deterministic and systematic (arrival i is kept when ⌊(i+1)p⌋ > ⌊ip⌋),
  so the shape is preserved without sampling noise; for p > 1 each arrival is repeated and the copies are
  spread evenly over the gap to the next arrival.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime

import numpy as np

RATE_CURVE_BIN_S = 1.0  # one bin of a rate curve (an hour of the Azure data) lasts this many trace seconds
RATE_CURVE_PEAK_RPS = 1000.0  # the busiest bin's rate after normalising the curve (req/s)
TIMESTAMPED_KINDS = ("TXT_2_IMG",)  # GenTD26 `predict_type` rows kept (img2img/inpainting: other pipelines)
TIMESTAMPED_WINDOW_H = 24.0  # the busiest window of this many hours is kept
TIMESTAMPED_COMPRESS = 300.0  # and its time divided by this (24 h → 288 s)


def load_trace(paths: list[str] | str) -> np.ndarray:
    """Arrival times in seconds, merged across files, sorted, starting at 0 (rate curves: seed 0)."""
    return load_trace_seeded(paths, 0)


def load_trace_seeded(paths: list[str] | str, seed: int) -> np.ndarray:
    """`load_trace` with the seed of the Poisson draw for rate-curve files (file i of the list draws with
    `default_rng([seed, i])`); event files do not depend on it."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    times: list[float] = []
    for i, path in enumerate(paths):
        kind = trace_format(path)
        if kind == "rate_curve":
            times.extend(rate_curve_arrivals(read_rate_curve(path), np.random.default_rng([seed, i])).tolist())
            continue
        if kind == "timestamped":
            times.extend(read_timestamped(path).tolist())
            continue
        with open(path, encoding="utf-8") as fh:
            for ln, line in enumerate(fh):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = [p for p in line.replace("\t", ",").replace(" ", ",").split(",") if p != ""]
                try:
                    if len(parts) >= 3:
                        times.append(float(parts[0]) / 1000.0)  # PROTEUS: milliseconds
                    elif len(parts) == 1:
                        times.append(float(parts[0]))  # seconds
                    else:
                        raise ValueError(f"{path}:{ln + 1}: expected 1 or 3 fields, got {len(parts)}")
                except ValueError:
                    if ln == 0 and not parts[0].replace(".", "", 1).lstrip("-").isdigit():
                        continue  # header
                    raise
    if not times:
        raise ValueError(f"no arrivals in {paths}")
    t = np.sort(np.asarray(times, dtype=np.float64))
    return t - t[0]


def trace_format(path: str | os.PathLike) -> str:
    """The format of a trace file, from its first line that is neither blank nor a `#` comment:
    `rate_curve` (a header with an `invocations` column), `timestamped` (a header with a `gmt_create`
    column) or `events` (PROTEUS or one-column seconds, told apart per line by `load_trace`)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            columns = [c.strip().lower() for c in line.split(",")]
            if "invocations" in columns:
                return "rate_curve"
            if "gmt_create" in columns:
                return "timestamped"
            return "events"
    return "events"


def read_rate_curve(path: str | os.PathLike) -> np.ndarray:
    """The rate per bin of a rate-curve CSV (the `invocations` column, rows in file order; negative → 0)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise ValueError(f"{path}: empty rate curve")
    col = [c.strip().lower() for c in rows[0]].index("invocations")
    rates = np.array([float(r[col]) for r in rows[1:] if len(r) > col and r[col].strip()], dtype=np.float64)
    if rates.size == 0 or not np.isfinite(rates).all() or rates.max() <= 0:
        raise ValueError(f"{path}: no positive rates in the `invocations` column")
    return np.maximum(rates, 0.0)


def rate_curve_arrivals(
    rates: np.ndarray,
    rng: np.random.Generator,
    bin_s: float = RATE_CURVE_BIN_S,
    peak_rps: float = RATE_CURVE_PEAK_RPS,
) -> np.ndarray:
    """A non-homogeneous Poisson draw over a rate shape: the curve is scaled so its largest bin has
    `peak_rps` req/s; bin i lasts `bin_s` seconds from i·bin_s, its count is Poisson(rate_i · bin_s) and its
    arrivals are uniform inside it (piecewise-constant rate, as DiffServe replays it). Sorted seconds."""
    rates = np.asarray(rates, dtype=np.float64)
    lam = rates / rates.max() * peak_rps * bin_s
    counts = rng.poisson(lam)
    starts = np.repeat(np.arange(rates.size, dtype=np.float64) * bin_s, counts)
    return np.sort(starts + rng.random(starts.size) * bin_s)


def read_timestamped(
    path: str | os.PathLike,
    kinds: tuple[str, ...] | None = TIMESTAMPED_KINDS,
    window_h: float | None = TIMESTAMPED_WINDOW_H,
    compress: float = TIMESTAMPED_COMPRESS,
) -> np.ndarray:
    """Arrival seconds of a timestamped request CSV (GenTD26 `lora_request_trace.csv`): one request per row,
    `gmt_create` as `YYYY-MM-DD HH:MM:SS` (any ISO form, read as UTC). Keeps the rows whose `predict_type` is in `kinds`
    (every row when None or when the file has no such column; all statuses: a failed request still
    arrived), then the busiest `window_h` hours (the sliding window holding most requests, the earliest
    among equals; the whole file when None or shorter), then divides time by `compress`. Sorted, from 0."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        stamp, kind = fields["gmt_create"], fields.get("predict_type")
        t = np.array(
            [
                datetime.fromisoformat(row[stamp].strip()).replace(tzinfo=UTC).timestamp()
                for row in reader
                if row.get(stamp) and (kinds is None or kind is None or row[kind].strip() in kinds)
            ],
            dtype=np.float64,
        )
    if t.size == 0:
        raise ValueError(f"{path}: no requests of kinds {kinds}")
    t = np.sort(t) - t.min()
    if window_h is not None and t[-1] > window_h * 3600.0:
        ends = np.searchsorted(t, t + window_h * 3600.0, side="left")
        first = int(np.argmax(ends - np.arange(t.size)))
        t = t[first : ends[first]] - t[first]
    return t / float(compress)


def peak_rate(arrivals: np.ndarray, window_s: float = 10.0) -> float:
    """Largest number of arrivals in any window of `window_s` seconds (sliding), per second."""
    if arrivals.size == 0:
        return 0.0
    ends = np.searchsorted(arrivals, arrivals + window_s, side="left")
    return float((ends - np.arange(arrivals.size)).max()) / window_s


def resample_rate(arrivals: np.ndarray, factor: float) -> np.ndarray:
    """Multiply the arrival rate by `factor` keeping the shape (deterministic; see module docstring)."""
    if factor <= 0:
        return arrivals[:0]
    n = arrivals.size
    i = np.arange(n + 1, dtype=np.float64)
    counts = np.diff(np.floor(i * factor + 1e-9)).astype(np.int64)  # copies of each arrival
    if factor <= 1.0:
        return arrivals[counts > 0]
    gaps = np.diff(np.append(arrivals, arrivals[-1] + (arrivals[-1] - arrivals[0]) / max(n - 1, 1)))
    rep = np.repeat(np.arange(n), counts)
    offs = np.concatenate([np.arange(c) / c for c in counts if c > 0]) if rep.size else np.zeros(0)
    return arrivals[rep] + offs * gaps[rep]


def scale_trace(
    arrivals: np.ndarray,
    time_scale: float = 1.0,
    peak_load: float | None = None,
    capacity_rps: float | None = None,
    window_s: float = 10.0,
) -> np.ndarray:
    """Stretch time by `time_scale`, then rescale the rate so the peak window is peak_load × capacity."""
    t = np.asarray(arrivals, dtype=np.float64) * float(time_scale)
    if peak_load is not None:
        if capacity_rps is None:
            raise ValueError("peak_load needs capacity_rps")
        pr = peak_rate(t, window_s)
        if pr > 0:
            t = resample_rate(t, peak_load * capacity_rps / pr)
    return t
