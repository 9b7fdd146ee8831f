"""Arrival traces: loading, merging and rescaling (shared by the simulator and the live load generator).

Formats (detected per line):
* PROTEUS: `arrival_ms,qos,slo_ms` (only the first field is used; milliseconds);
* one column: arrival time in **seconds**.
Several files are merged and sorted; times are shifted so the first arrival is at 0. Blank lines and lines
starting with `#` are skipped; a header line that does not parse is skipped too.

Rescaling keeps the shape:
* `time_scale` F multiplies every time (stretch);
* `peak_load` X then thins (or replicates) arrivals so the busiest 10-s window carries X × the cluster's
  capacity (in req/s). Thinning is deterministic and systematic (arrival i is kept when ⌊(i+1)p⌋ > ⌊ip⌋),
  so the shape is preserved without sampling noise; for p > 1 each arrival is repeated and the copies are
  spread evenly over the gap to the next arrival.
"""

from __future__ import annotations

import os

import numpy as np


def load_trace(paths: list[str] | str) -> np.ndarray:
    """Arrival times in seconds, merged across files, sorted, starting at 0."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    times: list[float] = []
    for path in paths:
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
