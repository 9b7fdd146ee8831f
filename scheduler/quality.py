"""The quality yardstick Q(s, K′): expected image quality relative to a full N-step generation.

Default model (fixed before any comparison, identical for every policy — never tune it):

    Q(s, 0)  = 1
    Q(s, K′) = max(floor, 1 − g(K′)·(1 − s)),   floor = 0.75
    g(5) = 2/7, g(10) = 0.4, g(15) = 2/3, g(20) = 1, g(25) = 2, linear in between (g(0) = 0).

With α = 0.9, "the largest K′ with Q ≥ α" reproduces NIRVANA's thresholds exactly
(0.95 → 25, 0.90 → 20, 0.85 → 15, 0.75 → 10, 0.65 → 5); the 0.75 floor matches published CLIP-score
ratios for badly matched retrievals. A request with no cached neighbour can only run at K′ = 0.

A measured table (similarity buckets × levels) can replace the default via `QualityModel.from_table`;
`load_measured` reads the one `python -m workers.demo.measure_quality` writes (format
``t2i-measured-quality/1``, docs/quality.md), and `quality_from_spec` turns the command-line option
``--quality default|nirvana|argus|measured:FILE`` of `scheduler.simulate` and `scheduler.sweep` into a
model (`argus`: the Argus paper's per-level table, prompt-agnostic; `nirvana`: the default above).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_G: dict[int, float] = {0: 0.0, 5: 2.0 / 7.0, 10: 0.4, 15: 2.0 / 3.0, 20: 1.0, 25: 2.0}


@dataclass
class QualityModel:
    g: dict[int, float] = field(default_factory=lambda: dict(DEFAULT_G))
    floor: float = 0.75
    alpha: float = 0.9
    # Optional measured table: bucket lower edges (ascending) × levels → quality.
    table_edges: tuple[float, ...] | None = None
    table_levels: tuple[int, ...] | None = None
    table_values: tuple[tuple[float, ...], ...] | None = None
    source: str | None = None  # where a measured table came from (recorded in results)

    def __post_init__(self) -> None:
        self._gc: dict[int, float] = {}

    def g_of(self, k: float) -> float:
        hit = self._gc.get(k)
        if hit is not None:
            return hit
        v = self._g_of(k)
        self._gc[k] = v
        return v

    def _g_of(self, k: float) -> float:
        ks = sorted(self.g)
        vals = [self.g[x] for x in ks]
        if k <= ks[-1]:
            return float(np.interp(k, ks, vals))
        slope = (vals[-1] - vals[-2]) / (ks[-1] - ks[-2])
        return float(vals[-1] + slope * (k - ks[-1]))

    def q(self, s: float | None, k: int) -> float:
        """Expected quality of serving at level k from a neighbour of similarity s (None: no neighbour)."""
        if k == 0:
            return 1.0
        if s is None or s != s:
            return float("nan")  # cannot be served above 0 without a neighbour
        if self.table_values is None:  # hot path: plain floats
            v = 1.0 - self.g_of(k) * (1.0 - s)
            return v if v > self.floor else self.floor
        i = int(np.searchsorted(self.table_edges, s, side="right") - 1)
        i = min(max(i, 0), len(self.table_edges) - 1)
        return float(np.interp(k, self.table_levels, self.table_values[i]))

    def q_matrix(self, s: np.ndarray, levels: tuple[int, ...] | list[int]) -> np.ndarray:
        """Q for each similarity (rows) at each level (columns); NaN similarity → Q = 1 only at level 0."""
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        out = np.empty((s.size, len(levels)), dtype=np.float64)
        for j, k in enumerate(levels):
            if k == 0:
                out[:, j] = 1.0
            elif self.table_values is not None:
                out[:, j] = [self.q(x, k) for x in s]
            else:
                out[:, j] = np.maximum(self.floor, 1.0 - self.g_of(k) * (1.0 - s))
        return out

    def k_star(self, s: float | None, levels: tuple[int, ...] | list[int]) -> int:
        """The largest level whose expected quality stays ≥ α (the definition of K*)."""
        best = 0
        for k in levels:
            if k > best and self.q(s, k) >= self.alpha - 1e-12:
                best = k
        return best

    @classmethod
    def from_table(
        cls, edges: list[float], levels: list[int], values: list[list[float]], alpha: float = 0.9
    ) -> QualityModel:
        """A measured table: row i holds Q at each level for similarities in [edges[i], edges[i+1])."""
        return cls(
            alpha=alpha,
            table_edges=tuple(edges),
            table_levels=tuple(levels),
            table_values=tuple(tuple(r) for r in values),
        )

    def to_dict(self) -> dict:
        return {
            "g": {str(k): v for k, v in self.g.items()},
            "floor": self.floor,
            "alpha": self.alpha,
            "source": self.source,
            "table": None
            if self.table_values is None
            else {
                "edges": list(self.table_edges),
                "levels": list(self.table_levels),
                "values": [list(r) for r in self.table_values],
            },
        }


MEASURED_FORMAT = "t2i-measured-quality/1"


def load_measured(path: str | Path, alpha: float = 0.9) -> QualityModel:
    """The measured table of ``python -m workers.demo.measure_quality`` as a quality model.

    Reads ``levels`` and each of ``bins`` (``lo``: the bin's lower similarity edge, ascending; ``q``: Q at
    each level). Q at a level between two measured ones is interpolated; a similarity below the first
    edge uses the first row. Q is capped at 1: a full generation is the reference by definition, and a
    measured ratio above 1 is sampling noise. A bin whose Q is undefined (nothing adhered at K′ = 0) is
    dropped, so the row below it covers its range. Raises ValueError with the reason on a bad file.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the measured quality table {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != MEASURED_FORMAT:
        raise ValueError(f"{path} is not a measured quality table (format {MEASURED_FORMAT!r})")
    levels = [int(k) for k in doc["levels"]]
    if not levels or levels[0] != 0 or levels != sorted(set(levels)):
        raise ValueError(f"{path}: levels must be ascending and start at 0, got {levels}")
    edges, values = [], []
    for b in doc["bins"]:
        q = b["q"]
        if len(q) != len(levels):
            raise ValueError(f"{path}: a bin has {len(q)} values for {len(levels)} levels")
        if any(x is None or not math.isfinite(x) for x in q):
            continue
        edges.append(float(b["lo"]))
        values.append([1.0 if k == 0 else min(1.0, float(x)) for k, x in zip(levels, q)])
    if not edges:
        raise ValueError(f"{path}: no bin with a defined quality")
    if edges != sorted(edges):
        raise ValueError(f"{path}: bin edges must be ascending")
    model = QualityModel.from_table(edges, levels, values, alpha=alpha)
    model.source = str(Path(path).resolve())
    return model


# The Argus paper's per-level quality of SDXL served from the approximate cache at K = 0, 5, …, 25 of 50
# steps (Argus, Middleware 2025, arXiv 2511.06724; the same numbers as `candidate_machine_acc` in the
# artifact's solver_milp_oda.py): prompt-agnostic, one value per level whatever the similarity.
ARGUS_LEVEL_QUALITY: dict[int, float] = {0: 1.0, 5: 0.97046, 10: 0.95808, 15: 0.94378, 20: 0.93235, 25: 0.9152}
QUALITY_SPECS: tuple[str, ...] = ("default", "nirvana", "argus", "measured:FILE")


def argus_quality(alpha: float = 0.9) -> QualityModel:
    """The Argus per-level table as a model: one similarity bin, so Q(s, K′) = ARGUS_LEVEL_QUALITY[K′] for
    any neighbour (K* still comes from the predictor's similarity thresholds)."""
    levels = sorted(ARGUS_LEVEL_QUALITY)
    model = QualityModel.from_table([-1.0], levels, [[ARGUS_LEVEL_QUALITY[k] for k in levels]], alpha=alpha)
    model.source = "argus"
    return model


def quality_from_spec(spec: str) -> QualityModel:
    """``default`` or ``nirvana`` (the yardstick above), ``argus`` (`argus_quality`) or ``measured:FILE``
    (`load_measured`); ValueError otherwise."""
    if spec in ("default", "nirvana"):
        return QualityModel()
    if spec == "argus":
        return argus_quality()
    if spec.startswith("measured:") and spec[len("measured:") :]:
        return load_measured(spec[len("measured:") :])
    raise ValueError(f"--quality must be one of {', '.join(QUALITY_SPECS)}, got {spec!r}")
