"""Latency profiles L(K′, b) and the batch-cap rule.

A profile gives the wall time of one batched generation of `b` images served at level K′ (skipping the
first K′ of N denoising steps). Two sources are read:

1. **Full-run CSV** in DiffServe's format (`,Model,Accel,batchsize,avg_runtime,...`, milliseconds per
   batch; e.g. `../shared/data/profiles/diffserve/*.csv`). It only has K′ = 0, so the other levels follow
   the ApproxC model  L(K′, b) = L(0, b) · (γ + (1 − γ)(N − K′)/N), γ = 0.06 by default: the text
   encoder and VAE decode (≈ 6 % of an SDXL run) are not skipped. When a file holds several models, the
   one with the largest batch-1 latency (the full diffusion model, not the distilled one) is used unless
   `model` is given; rows of 100 000 ms or more are DiffServe's "does not fit" placeholder and are dropped.
2. **Level CSV** (what the engine's profiling command writes): columns `k` (or `level`), `batch_size`
   (or `batchsize`), and `latency_ms` (or `latency_s`). Levels it lacks are derived from its K′ = 0 rows
   with the ApproxC model.

Named presets (`sdxl-a100`, `sd15-a100`) carry the published DiffServe A100 figures so that tests and the
live emulated workers need no data folder.

Batch cap (PROTEUS's rule): the largest b with L(K′, b) ≤ SLO / 2, at least 1.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np

DEFAULT_LEVELS: tuple[int, ...] = (0, 5, 10, 15, 20, 25)
DEFAULT_GAMMA = 0.06
PLACEHOLDER_MS = 100_000.0

# Published DiffServe A100 figures, ms per batch (50 steps).
PRESETS: dict[str, dict[int, float]] = {
    "sdxl-a100": {1: 6100.0, 2: 10650.0, 4: 20920.0, 8: 40230.0, 16: 79110.0},
    "sd15-a100": {1: 1780.0, 2: 2160.0, 4: 3680.0, 8: 6790.0, 16: 12880.0, 32: 25350.0},
}


@dataclass
class LatencyProfile:
    """L(K′, b) in seconds for each level, linear in b between measured batch sizes."""

    levels: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    table_s: dict[int, tuple[float, ...]]  # level -> latency (s) per entry of batch_sizes
    n_steps: int = 50
    name: str = "profile"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_batch(self) -> int:
        return int(self.batch_sizes[-1])

    def latency(self, k: int, b: int) -> float:
        """Seconds for one batch of b requests at level k (interpolated in b; extrapolated linearly)."""
        key = (k, b)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if k not in self.table_s:
            raise KeyError(f"level {k} not in profile levels {self.levels}")
        bs = self.batch_sizes
        lat = self.table_s[k]
        b = max(1, int(b))
        if b <= bs[0]:
            val = lat[0] * b / bs[0] if bs[0] > 1 else lat[0]
        elif b >= bs[-1]:
            if len(bs) == 1:
                val = lat[0] * b
            else:
                slope = (lat[-1] - lat[-2]) / (bs[-1] - bs[-2])
                val = lat[-1] + slope * (b - bs[-1])
        else:
            val = float(np.interp(b, bs, lat))
        self._cache[key] = float(val)
        return float(val)

    def batch_cap(self, k: int, slo_s: float) -> int:
        """Largest b (≤ the largest measured batch) with L(k, b) ≤ SLO/2; at least 1 (PROTEUS's rule)."""
        cap = 1
        for b in range(1, self.max_batch + 1):
            if self.latency(k, b) <= slo_s / 2.0:
                cap = b
        return cap

    def batch_caps(self, slo_s: float) -> dict[int, int]:
        return {k: self.batch_cap(k, slo_s) for k in self.levels}

    def throughput(self, k: int, b: int) -> float:
        """Requests per second of one worker running full batches of b at level k."""
        return b / self.latency(k, b)

    def adjusted(self, factor: float = 1.0, overhead_s: float = 0.0) -> LatencyProfile:
        """This profile on a deployment's clock: every batch time × `factor` (emulated workers with a time
        factor), plus `overhead_s` per batch: what a live worker spends on a batch besides the denoising loop
        (claiming it, saving its images, the ledger writes), which a profile of the model alone leaves out."""
        if factor == 1.0 and overhead_s == 0.0:
            return self
        name = self.name + (f"×{factor:g}" if factor != 1.0 else "") + (f"+{overhead_s:.2f}s" if overhead_s else "")
        return LatencyProfile(
            levels=self.levels,
            batch_sizes=self.batch_sizes,
            table_s={k: tuple(t * factor + overhead_s for t in row) for k, row in self.table_s.items()},
            n_steps=self.n_steps,
            name=name,
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "levels": list(self.levels),
            "batch_sizes": list(self.batch_sizes),
            "n_steps": self.n_steps,
            "table_s": {str(k): list(v) for k, v in self.table_s.items()},
        }


def approxc_factor(k: int, n_steps: int = 50, gamma: float = DEFAULT_GAMMA) -> float:
    """Share of a full run's time spent when skipping k steps (fixed overhead γ is never skipped)."""
    return gamma + (1.0 - gamma) * (n_steps - k) / n_steps


def profile_from_full_runs(
    full_ms: dict[int, float],
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    n_steps: int = 50,
    gamma: float = DEFAULT_GAMMA,
    name: str = "profile",
) -> LatencyProfile:
    """Build a profile from K′ = 0 latencies (ms per batch) with the ApproxC model."""
    bs = tuple(sorted(int(b) for b in full_ms))
    base = [full_ms[b] / 1000.0 for b in bs]
    table = {k: tuple(v * approxc_factor(k, n_steps, gamma) for v in base) for k in levels}
    return LatencyProfile(levels=tuple(levels), batch_sizes=bs, table_s=table, n_steps=n_steps, name=name)


def _read_rows(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [dict(r) for r in reader]
        return list(reader.fieldnames or []), rows


def load_profile(
    source: str,
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    n_steps: int = 50,
    gamma: float = DEFAULT_GAMMA,
    model: str | None = None,
    accel: str | None = None,
) -> LatencyProfile:
    """Load a preset name (`sdxl-a100`) or a CSV in either supported format (see module docstring)."""
    if source in PRESETS:
        return profile_from_full_runs(PRESETS[source], levels, n_steps, gamma, name=source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"profile {source!r} is neither a preset {sorted(PRESETS)} nor a file")
    fields, rows = _read_rows(source)
    lower = {f.lower().strip(): f for f in fields if f is not None}
    name = os.path.basename(source)
    kcol = lower.get("k") or lower.get("level") or lower.get("k_prime")
    bcol = lower.get("batch_size") or lower.get("batchsize")
    if kcol and bcol:  # level CSV
        if "latency_ms" in lower:
            lcol, scale = lower["latency_ms"], 1.0
        elif "latency_s" in lower:
            lcol, scale = lower["latency_s"], 1000.0
        else:
            raise ValueError(f"{source}: level CSV needs a latency_ms or latency_s column")
        per_level: dict[int, dict[int, float]] = {}
        for r in rows:
            per_level.setdefault(int(float(r[kcol])), {})[int(float(r[bcol]))] = float(r[lcol]) * scale
        if 0 not in per_level:
            raise ValueError(f"{source}: level CSV must include K′ = 0 rows")
        bs = tuple(sorted(per_level[0]))
        table: dict[int, tuple[float, ...]] = {}
        for k in levels:
            row = per_level.get(k)
            if row is not None and all(b in row for b in bs):
                table[k] = tuple(row[b] / 1000.0 for b in bs)
            else:
                table[k] = tuple(per_level[0][b] / 1000.0 * approxc_factor(k, n_steps, gamma) for b in bs)
        return LatencyProfile(levels=tuple(levels), batch_sizes=bs, table_s=table, n_steps=n_steps, name=name)
    # DiffServe full-run CSV
    mcol, acol = lower.get("model"), lower.get("accel")
    bcol = lower.get("batchsize") or lower.get("batch_size")
    lcol = lower.get("avg_runtime") or lower.get("latency_ms")
    if not (bcol and lcol):
        raise ValueError(f"{source}: unrecognised profile CSV columns {fields}")
    by_model: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        key = (r.get(mcol, "") if mcol else "", r.get(acol, "") if acol else "")
        ms = float(r[lcol])
        if ms >= PLACEHOLDER_MS:
            continue
        by_model.setdefault(key, {})[int(float(r[bcol]))] = ms
    if model is not None:
        by_model = {k: v for k, v in by_model.items() if k[0] == model}
    if accel is not None:
        by_model = {k: v for k, v in by_model.items() if k[1] == accel}
    if not by_model:
        raise ValueError(f"{source}: no rows for model={model!r} accel={accel!r}")
    # The full model is the slowest one at batch 1; the first accel label in file order wins ties.
    order = list(by_model)
    best = max(order, key=lambda k: (by_model[k].get(min(by_model[k]), 0.0), -order.index(k)))
    return profile_from_full_runs(by_model[best], levels, n_steps, gamma, name=f"{name}:{best[0]}")
