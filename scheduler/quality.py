"""The quality yardstick Q(s, K′): expected image quality relative to a full N-step generation.

Default model (fixed before any comparison, identical for every policy — never tune it):

    Q(s, 0)  = 1
    Q(s, K′) = max(floor, 1 − g(K′)·(1 − s)),   floor = 0.75
    g(5) = 2/7, g(10) = 0.4, g(15) = 2/3, g(20) = 1, g(25) = 2, linear in between (g(0) = 0).

With α = 0.9, "the largest K′ with Q ≥ α" reproduces NIRVANA's thresholds exactly
(0.95 → 25, 0.90 → 20, 0.85 → 15, 0.75 → 10, 0.65 → 5); the 0.75 floor matches published CLIP-score
ratios for badly matched retrievals. A request with no cached neighbour can only run at K′ = 0.

A measured table (similarity buckets × levels, e.g. from the engine's profiling command) can replace the
default via `QualityModel.from_table`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
            "table": None
            if self.table_values is None
            else {
                "edges": list(self.table_edges),
                "levels": list(self.table_levels),
                "values": [list(r) for r in self.table_values],
            },
        }
