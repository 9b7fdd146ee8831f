"""Similarity calibration: a monotone map of the embedder's similarities onto a target K* mix.

Our MiniLM stream finds far more reuse than the Argus paper's CLIP lookups (issue 14: about 26 % miss /
12 % K = 5 / … / 32 % K = 25 against Argus's 22.5 / 42.6 / 21.3 / 4.6 / 3.2 / 5.9 %). To ask whether the
policies' ordering survives a harder cache, `--similarity-calibration argus` replaces every similarity s
by T(s), where T is the quantile map that sends the stream's own nearest-predecessor similarities onto
that mix: F(s) (the empirical CDF) picks the target K* bin at the same quantile, and the position inside
the bin is kept linearly. T is monotone, so every lookup keeps its neighbour; only s, hence K* and
Q(s, K′), change. The K* bins are the predictor's thresholds (`scheduler.predictor.DEFAULT_THRESHOLDS`):
K* = 0 below 0.65, 5 in [0.65, 0.75), …, 25 from 0.95.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .predictor import DEFAULT_THRESHOLDS
from .prompt_stream import nearest_predecessors

# The Argus paper's K* mix of 20,000 logged CLIP text-to-text top-1 lookups (issue 14, from the artifact's
# logs): K* = 0 (miss), 5, 10, 15, 20, 25.
ARGUS_K_STAR_MIX: tuple[float, ...] = (0.225, 0.426, 0.213, 0.046, 0.032, 0.059)
CALIBRATIONS: tuple[str, ...] = ("none", "argus")


def bin_edges(thresholds: Sequence[tuple[float, int]] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Similarity edges of the K* bins, ascending: [-1, 0.65, 0.75, 0.85, 0.90, 0.95, 1]."""
    return np.array([-1.0, *sorted(t for t, _ in thresholds), 1.0])


def quantile_map(
    observed: np.ndarray, target_mix: Sequence[float], edges: np.ndarray | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """T(s): the observed similarities' quantile → the same quantile of the target mix over the K* bins.

    Within a bin the target is uniform between its edges (the miss bin from the lowest observed similarity,
    so a miss keeps a plausible value); NaN (no neighbour) stays NaN."""
    edges = bin_edges() if edges is None else np.asarray(edges, dtype=float)
    mix = np.asarray(target_mix, dtype=float)
    if mix.size != edges.size - 1 or (mix < 0).any() or mix.sum() <= 0:
        raise ValueError(f"the target mix needs {edges.size - 1} non-negative shares (one per K* bin)")
    obs = np.sort(np.asarray(observed, dtype=float)[np.isfinite(observed)])
    if obs.size < 2:
        raise ValueError("calibration needs at least two observed similarities")
    lo, hi = edges[:-1].copy(), edges[1:]
    lo[0] = min(float(obs[0]), edges[1])
    shares = mix / mix.sum()
    cum = np.concatenate([[0.0], np.cumsum(shares)])
    ranks = (np.arange(obs.size) + 0.5) / obs.size

    def transform(s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        u = np.interp(s, obs, ranks, left=0.0, right=1.0)
        # The target bin at quantile u (an empty bin is never chosen: its upper cum equals its lower one),
        # then the same position inside it.
        b = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, shares.size - 1)
        inside = np.clip((u - cum[b]) / np.maximum(shares[b], 1e-12), 0.0, 1.0)
        out = lo[b] + inside * (hi[b] - lo[b])
        return np.where(np.isfinite(s), out, np.nan)

    return transform


FIT_ROWS = 6000  # a longer stream is fitted on its first rows: a synthesised continuation has their statistics


def calibration(name: str, embeddings: np.ndarray, warm: int = 0) -> Callable[[np.ndarray], np.ndarray] | None:
    """The similarity map `name` for a stream (rows = unit embeddings in arrival order), or None for "none".
    Fitted on the nearest-predecessor similarities of the requests (rows from `warm` on; at most the first
    FIT_ROWS rows, exact search being quadratic)."""
    if name == "none":
        return None
    if name != "argus":
        raise ValueError(f"unknown similarity calibration {name!r}; choose from {', '.join(CALIBRATIONS)}")
    rows = np.asarray(embeddings[: max(FIT_ROWS, warm + 2)], dtype=np.float32)
    sims, _ = nearest_predecessors(rows)  # sims[i - 1]: prompt i's
    return quantile_map(sims[max(warm - 1, 0) :], ARGUS_K_STAR_MIX)


def k_star_mix(similarities: np.ndarray, edges: np.ndarray | None = None) -> np.ndarray:
    """Share of similarities in each K* bin (NaN counts as a miss)."""
    edges = bin_edges() if edges is None else edges
    s = np.nan_to_num(np.asarray(similarities, dtype=float), nan=-1.0)
    counts = np.histogram(np.clip(s, -1.0, 1.0), bins=edges)[0]
    return counts / max(counts.sum(), 1)
