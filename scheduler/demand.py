"""Demand per K* class: what the controller plans for.

`DemandEstimator` counts arrivals per K* class in the current controller window and, at each `roll(now)`,
turns them into a rate. The estimate is **fast up, slow down**: max(last window's rate, EWMA), with the
EWMA weight `alpha` on the newest window. A rising burst is planned for at once (the lesson of the
prototype: a slow EWMA multiplied SLO violations 5–25×); a fading one is forgotten gradually so a short lull
does not strip capacity. The default mode, "total", takes that max on the total rate and splits it by a
slowly moving class mix; mode "max" takes it per class, where class noise inflates the total it plans for
(two classes swapping 30/10 and 10/30 arrivals are planned as 45, not 40). "total" became the default once
the batch cut had removed the violations it used to cost at load 1.0 (docs/results.md, "Light load" and
"The batch cut"). It also keeps, per class, the mean expected quality at each level from the similarities
actually seen, which is what the planner trades off.

`DemandEstimate.with_backlog` adds the requests already queued (per class) as extra rate to drain within a
horizon (default two controller periods): an estimate made during a burst otherwise ignores the queue the
burst built, and the plan stays one step behind.

Every policy with a controller uses this same estimator with the same settings (fairness, DESIGN §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .interface import SchedulerConfig
from .quality import QualityModel


@dataclass
class DemandEstimate:
    """Rates (req/s) per K* class and mean Q per class × level. Classes and levels share one list."""

    levels: list[int]
    rates: list[float]
    quality: list[list[float]]  # [class][level]
    time: float = 0.0

    def with_backlog(self, queued: list[int] | list[float], horizon_s: float) -> DemandEstimate:
        """Add the requests already waiting (per K* class) as extra rate to be served within horizon_s,
        so a plan made during a burst also drains the queues the burst left behind."""
        extra = [q / max(horizon_s, 1e-9) for q in queued]
        return DemandEstimate(
            levels=list(self.levels),
            rates=[r + e for r, e in zip(self.rates, extra)],
            quality=[list(r) for r in self.quality],
            time=self.time,
        )

    @property
    def total(self) -> float:
        return float(sum(self.rates))

    def to_dict(self) -> dict:
        return {
            "levels": list(self.levels),
            "rates": list(map(float, self.rates)),
            "quality": [list(map(float, r)) for r in self.quality],
            "time": float(self.time),
        }

    @classmethod
    def from_dict(cls, d: dict) -> DemandEstimate:
        return cls(
            levels=[int(x) for x in d["levels"]],
            rates=[float(x) for x in d["rates"]],
            quality=[[float(x) for x in r] for r in d["quality"]],
            time=float(d.get("time", 0.0)),
        )


def default_class_quality(levels: list[int] | tuple[int, ...], qm: QualityModel) -> np.ndarray:
    """Per-class Q at each level before any request was seen: evaluated at a representative similarity
    (the middle of the class's similarity band; 0.5 for misses)."""
    reps = {0: 0.5, 5: 0.70, 10: 0.80, 15: 0.875, 20: 0.925, 25: 0.975}
    s = np.array([reps.get(k, 0.5) for k in levels])
    return qm.q_matrix(s, list(levels))


MIX_DECAY = 0.8  # per window: the mix remembers ~5 windows (50 s at the default period)
ESTIMATE_MODES: tuple[str, ...] = ("max", "last", "ewma", "total")


@dataclass
class DemandEstimator:
    levels: list[int]
    quality_model: QualityModel = field(default_factory=QualityModel)
    alpha: float = 0.5
    start: float = 0.0
    mode: str = "max"  # "max" (of the last window and the EWMA, per class), "last" window, "ewma" or "total"
    trend_beta: float = 0.0  # Holt's trend smoothing (0: the EWMA alone)
    horizon_s: float = 0.0  # with a trend: plan for the rate this far ahead (a rising trend only)
    min_window_s: float = 0.0  # a shorter window (an event-triggered re-plan) borrows from the one before
    _counts: np.ndarray = field(init=False, repr=False)
    _qsum: np.ndarray = field(init=False, repr=False)
    _ewma: np.ndarray = field(init=False, repr=False)
    _last: np.ndarray = field(init=False, repr=False)
    _qmean: np.ndarray = field(init=False, repr=False)
    _window_start: float = field(init=False, repr=False)
    _seen: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        if self.mode not in ESTIMATE_MODES:
            raise ValueError(f"unknown demand estimate {self.mode!r}; choose from {', '.join(ESTIMATE_MODES)}")
        n = len(self.levels)
        self._index = {k: i for i, k in enumerate(self.levels)}
        self._counts = np.zeros(n)
        self._qsum = np.zeros((n, n))
        self._ewma = np.zeros(n)
        self._trend = np.zeros(n)  # req/s per second, per class (Holt)
        self._last = np.zeros(n)
        self._qmean = default_class_quality(self.levels, self.quality_model)
        self._qweight = np.zeros(n)
        self._window_start = self.start
        self._previous: tuple[np.ndarray, float] = (np.zeros(n), 0.0)
        self._pc = [0] * n  # per-window counts, plain lists (observe is per request)
        self._pq = [[0.0] * n for _ in range(n)]
        self._mix = np.full(n, 1.0 / n)  # the class mix, remembered longer than the rate (mode "total")
        self._mix_weight = 0.0

    def observe(self, k_star: int, q_row: np.ndarray | None = None) -> None:
        """Record one arrival of class k_star; q_row = its Q at each level (optional)."""
        i = self._index[k_star]
        self._pc[i] += 1
        if q_row is not None:
            acc = self._pq[i]
            for j, v in enumerate(q_row):
                acc[j] += v

    def roll(self, now: float) -> DemandEstimate:
        """Close the current window at `now` and return the updated estimate."""
        self._counts = np.asarray(self._pc, dtype=float)
        self._qsum = np.asarray(self._pq, dtype=float)
        self._pc = [0] * len(self.levels)
        self._pq = [[0.0] * len(self.levels) for _ in self.levels]
        span = max(now - self._window_start, 1e-9)
        rate = self._window_rate(self._counts, span)
        if not self._seen:
            self._ewma = rate.copy()
            self._seen = True
        elif self.trend_beta > 0:  # Holt: the level moves with the trend between windows
            previous = self._ewma
            self._ewma = self.alpha * rate + (1.0 - self.alpha) * (previous + self._trend * span)
            slope = (self._ewma - previous) / span
            self._trend = self.trend_beta * slope + (1.0 - self.trend_beta) * self._trend
        else:
            self._ewma = self.alpha * rate + (1.0 - self.alpha) * self._ewma
        self._last = rate
        self._update_mix(self._counts)
        # Per-class quality: running mean weighted by counts, decayed like the EWMA.
        has = self._counts > 0
        if has.any():
            w_old = (1.0 - self.alpha) * self._qweight
            new_mean = np.where(has[:, None], self._qsum / np.maximum(self._counts, 1)[:, None], self._qmean)
            tot = w_old + self._counts
            mix = np.where(
                tot[:, None] > 0,
                (w_old[:, None] * self._qmean + self._counts[:, None] * new_mean) / np.maximum(tot, 1e-12)[:, None],
                self._qmean,
            )
            self._qmean = np.where(has[:, None], mix, self._qmean)
            self._qweight = tot
        self._counts[:] = 0
        self._qsum[:] = 0
        self._window_start = now
        return self.estimate(now)

    def _update_mix(self, counts: np.ndarray) -> None:
        """The share of each class, a count-weighted mean whose memory decays by MIX_DECAY per window: the
        mix moves slowly while the rate can jump, and a handful of arrivals does not redraw it."""
        n = float(counts.sum())
        if n <= 0:
            return
        old = MIX_DECAY * self._mix_weight
        self._mix = (old * self._mix + counts) / (old + n)
        self._mix_weight = old + n

    def _window_rate(self, counts: np.ndarray, span: float) -> np.ndarray:
        """Arrivals per second over the window just closed; a window shorter than `min_window_s` (a re-plan
        between periods) is topped up with the matching share of the previous window, so a handful of
        arrivals in two seconds does not read as a burst (or a lull)."""
        previous_counts, previous_span = self._previous
        self._previous = (counts.copy(), span)
        short = self.min_window_s - span
        if short <= 0 or previous_span <= 0:
            return counts / span
        share = min(1.0, short / previous_span)
        return (counts + share * previous_counts) / (span + share * previous_span)

    def estimate(self, now: float) -> DemandEstimate:
        ahead = self._ewma + np.maximum(self._trend, 0.0) * self.horizon_s if self.trend_beta > 0 else self._ewma
        if self.mode == "last":
            rates = self._last
        elif self.mode == "total":  # fast up, slow down on the total; the long-memory mix splits it
            rates = max(float(ahead.sum()), float(self._last.sum())) * self._mix
        elif self.mode == "ewma":
            rates = ahead
        else:
            rates = np.maximum(ahead, self._last)
        return DemandEstimate(levels=list(self.levels), rates=rates.tolist(), quality=self._qmean.tolist(), time=now)


def estimator_for(config: SchedulerConfig, start: float) -> DemandEstimator:
    """The estimator every controller uses (simulator and live alike), from the shared settings."""
    return DemandEstimator(
        config.levels,
        config.quality,
        alpha=config.ewma_alpha,
        start=start,
        mode=config.demand_estimate,
        trend_beta=config.trend_beta,
        horizon_s=config.period_s,
        min_window_s=config.period_s,
    )
