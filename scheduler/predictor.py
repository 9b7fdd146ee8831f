"""Similarity → K* (NIRVANA's thresholds), capped by what the neighbour actually has cached."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (similarity strictly above, level), highest first: NIRVANA's rule.
DEFAULT_THRESHOLDS: tuple[tuple[float, int], ...] = ((0.95, 25), (0.90, 20), (0.85, 15), (0.75, 10), (0.65, 5))


@dataclass(frozen=True)
class Predictor:
    thresholds: tuple[tuple[float, int], ...] = DEFAULT_THRESHOLDS

    def predict(self, s: float | None) -> int:
        """K* from similarity alone (0 = a miss)."""
        if s is None or not np.isfinite(s):
            return 0
        for t, k in self.thresholds:
            if s > t:
                return k
        return 0

    def predict_array(self, s: np.ndarray) -> np.ndarray:
        s = np.nan_to_num(np.asarray(s, dtype=np.float64), nan=-np.inf)
        out = np.zeros(s.shape, dtype=np.int64)
        for t, k in reversed(self.thresholds):  # lowest threshold first, higher ones overwrite
            out[s > t] = k
        return out

    def k_star(self, s: float | None, available: tuple[int, ...] | None = None) -> int:
        """K* capped to the neighbour's cached levels: the largest available level ≤ the predicted one."""
        k = self.predict(s)
        if k == 0 or available is None:
            return k
        best = 0
        for lv in available:
            if best < lv <= k:
                best = lv
        return best
