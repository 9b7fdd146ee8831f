"""Prompt streams longer than the prompt file: a seeded, calibrated synthesis of new prompt embeddings.

A replay needs one prompt embedding per request. When the trace has more requests than the file has
lines, `extend_stream` keeps the file's embeddings, in order, as the head of the stream and synthesises
the rest; a stream that fits in the file is returned unchanged (the default replay: one prompt each, in
order), so every existing run is bit-identical.

The model (a bootstrap of the file's own reuse structure):

1. For every prompt i ≥ 1 of the file, its nearest predecessor j(i) = argmax_{j<i} cos(e_i, e_j) (exact
   search) gives a pair (similarity s_i, lag i − j(i)). Together these describe how the file reuses
   earlier prompts: exact repeats (s = 1), near-duplicate runs of a session (s ≈ 0.9, lag 1–3), returns to
   an older subject (larger lags) and fresh prompts (low s).
2. New prompt t draws one such pair (s, lag) uniformly at random (seeded) and becomes a prompt at cosine
   exactly s from the stream's prompt t − lag (its *parent*, file or synthetic):
   e_t = s·e_p + √(1 − s²)·u, with u a random unit vector orthogonal to e_p. A random direction in 384
   dimensions is close to orthogonal to every other prompt, so the parent stays the nearest predecessor
   and the new prompt's nearest-predecessor similarity is (almost exactly) the drawn s.

What this preserves: the distribution of nearest-predecessor similarity — hence the K* mix (NIRVANA's
thresholds on s) — and the lags at which reuse happens (sessions, returns), both drawn from the same file
prompt so their correlation is kept. `tests/test_sim_scale.py` checks the K* mix of a synthesised stream
against its file's. What it does not model: topic drift beyond the file (new prompts live near the
file's subjects, in chains of perturbations) and popularity beyond what the lags encode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .topm import topm_rows


@dataclass
class PromptStream:
    """Embeddings in stream order; `parent[t]` the row prompt t was built from (−1: a prompt-file row, the
    first `n_file`). `parent` is None when the whole stream comes from the file."""

    embeddings: np.ndarray
    n_file: int
    parent: np.ndarray | None = None

    @property
    def synthetic(self) -> bool:
        return self.parent is not None


def nearest_predecessors(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, lag) of each prompt i ≥ 1 to its most similar predecessor, exact (blocked products)."""
    if emb.shape[0] < 2:
        raise ValueError("a prompt file needs at least two prompts to calibrate a stream")
    idx, sim = topm_rows(np.ascontiguousarray(emb, dtype=np.float32), range(1, emb.shape[0]), lambda i: i, 1)
    lag = np.arange(1, emb.shape[0]) - idx[:, 0]
    return np.clip(sim[:, 0].astype(np.float64), -1.0, 1.0), lag.astype(np.int64)


def extend_stream(base: np.ndarray, n_total: int, seed: int = 0) -> PromptStream:
    """The prompt stream of n_total embeddings: the file's (`base`) in order, then synthesised ones (see the
    module docstring). The file's rows alone (unchanged) when the file is long enough."""
    base = np.ascontiguousarray(base, dtype=np.float32)
    n_base = base.shape[0]
    if n_total <= n_base:
        return PromptStream(base[:n_total], n_file=n_total)
    sims, lags = nearest_predecessors(base)
    rng = np.random.default_rng([seed, n_base, 0x5EED])
    pick = rng.integers(0, sims.size, size=n_total - n_base)
    s, lag = sims[pick], lags[pick]
    parent = np.concatenate([np.full(n_base, -1, dtype=np.int64), np.arange(n_base, n_total) - lag])
    out = np.empty((n_total, base.shape[1]), dtype=np.float32)
    out[:n_base] = base
    for rows in generations(parent, n_base):  # a prompt is built once its parent exists
        noise = rng.standard_normal((rows.size, base.shape[1]), dtype=np.float32)
        _perturb_into(out, rows, parent[rows], s[rows - n_base], noise)
    return PromptStream(out, n_file=n_base, parent=parent)


def generations(parent: np.ndarray, n_file: int) -> list[np.ndarray]:
    """The synthetic rows grouped by generation (a parent in the file: 1, else its parent's + 1), so each
    group can be built in one vectorised step after the groups it depends on."""
    dep = [0] * (parent.size - n_file)
    for t, p in enumerate(parent[n_file:].tolist()):  # parents precede their children: one pass
        dep[t] = 1 if p < n_file else dep[p - n_file] + 1
    depth = np.asarray(dep, dtype=np.int64)
    order = np.argsort(depth, kind="stable")
    return [n_file + g for g in np.split(order, np.flatnonzero(np.diff(depth[order])) + 1)]


def _perturb_into(out: np.ndarray, rows: np.ndarray, parents: np.ndarray, s: np.ndarray, g: np.ndarray) -> None:
    """out[rows] = s·out[parents] + √(1 − s²)·u, u ⟂ out[parents] a unit vector along the noise g."""
    p = out[parents]
    u = g - np.sum(g * p, axis=1, keepdims=True) * p
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    s32 = s.astype(np.float32)[:, None]
    v = s32 * p + np.sqrt(np.maximum(0.0, 1.0 - s32 * s32)) * u
    out[rows] = v / np.linalg.norm(v, axis=1, keepdims=True)
