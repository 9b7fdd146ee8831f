"""The simulator's approximate cache: which prompts' latents are held, at which levels, and LCBFU eviction.

Entries are prompts of the stream (warm prefix + replayed requests), identified by their index. Levels:
* warm entries (full generations) hold every cache level;
* a request served at K′ contributes the levels **above** K′ — the steps it computed itself, conditioned on
  its own prompt (levels ≤ K′ would be its neighbour's latents); served at the largest level it adds
  nothing. This matches what a resumed engine run can capture.
LCBFU (NIRVANA): an entry's score is Σ K over its hits (frequency × K); when the cache is over capacity
(in entries) the lowest score leaves, the oldest first among equals.

Search: the nearest cached prompt by cosine similarity (embeddings are unit vectors). Because only
predecessors in the stream can ever be cached when a request arrives, each request's top-m most similar
predecessors are precomputed with blocked matrix products; a lookup takes the first of them that is
cached, which is the exact nearest cached neighbour. Only when none of the m is cached (heavy eviction,
or a policy that adds few entries) does it fall back to one matrix-vector product over the predecessors.
"""

from __future__ import annotations

import heapq

import numpy as np


def topm_predecessors(emb: np.ndarray, start: int, m: int = 32, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For every row i ≥ start: indices and similarities of its m most similar rows j < i, best first."""
    n = emb.shape[0]
    q = n - start
    idx = np.full((q, m), -1, dtype=np.int64)
    sim = np.full((q, m), -np.inf, dtype=np.float32)
    for a in range(start, n, block):
        b = min(n, a + block)
        s = emb[a:b] @ emb[:b].T  # (b-a, b)
        rows = np.arange(a, b)
        s[np.arange(b)[None, :] >= rows[:, None]] = -np.inf  # only predecessors
        mm = min(m, b)
        part = np.argpartition(-s, mm - 1, axis=1)[:, :mm]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        part = np.take_along_axis(part, order, axis=1)
        ps = np.take_along_axis(ps, order, axis=1)
        ps_valid = np.isfinite(ps)
        idx[a - start:b - start, :mm] = np.where(ps_valid, part, -1)
        sim[a - start:b - start, :mm] = ps
    return idx, sim


class ApproxCache:
    """Cache state over a prompt stream; see module docstring."""

    def __init__(self, emb: np.ndarray, levels: tuple[int, ...] | list[int], capacity: int,
                 query_start: int = 0, top_m: int = 32) -> None:
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.n = self.emb.shape[0]
        self.levels = tuple(lv for lv in levels if lv > 0)  # cache levels (0 is "no latent")
        self.capacity = max(1, int(capacity))
        self.query_start = query_start
        self.in_cache = np.zeros(self.n, dtype=bool)
        self.min_level_idx = np.zeros(self.n, dtype=np.int8)  # index into self.levels of the lowest held
        self.score = np.zeros(self.n, dtype=np.float64)
        self._seq = 0
        self._heap: list[tuple[float, int, int]] = []
        self._born: dict[int, int] = {}
        self.size = 0
        self.evictions = 0
        self.fallbacks = 0
        self._avail = [tuple(self.levels[i:]) for i in range(len(self.levels) + 1)]
        self.nbr_idx, self.nbr_sim = topm_predecessors(self.emb, query_start, top_m)

    def reset(self, capacity: int | None = None) -> None:
        """Empty the cache (keeps the neighbour index, which depends only on the embeddings)."""
        self.in_cache[:] = False
        self.min_level_idx[:] = 0
        self.score[:] = 0.0
        self._heap.clear()
        self._born.clear()
        self._seq = self.size = self.evictions = self.fallbacks = 0
        if capacity is not None:
            self.capacity = max(1, int(capacity))

    def available(self, j: int) -> tuple[int, ...]:
        """Levels held for entry j."""
        return self._avail[int(self.min_level_idx[j])]

    def insert(self, j: int, served_k: int = 0) -> None:
        """Add prompt j after it was served at served_k (levels above served_k are its own)."""
        lvls = self.levels
        lo = 0
        while lo < len(lvls) and lvls[lo] <= served_k:
            lo += 1
        if lo >= len(lvls):
            return
        if self.in_cache[j]:
            if lo < self.min_level_idx[j]:
                self.min_level_idx[j] = lo
            return
        self.in_cache[j] = True
        self.min_level_idx[j] = lo
        self.score[j] = 0.0
        self._seq += 1
        self._born[j] = self._seq
        heapq.heappush(self._heap, (0.0, self._seq, j))
        self.size += 1
        while self.size > self.capacity:
            self._evict_one()

    def _evict_one(self) -> None:
        while self._heap:
            sc, seq, j = heapq.heappop(self._heap)
            if self.in_cache[j] and self._born.get(j) == seq and sc == self.score[j]:
                self.in_cache[j] = False
                self.size -= 1
                self.evictions += 1
                return

    def hit(self, j: int, k: int) -> None:
        """LCBFU: a hit at level k adds k to the entry's score."""
        if self.in_cache[j]:
            self.score[j] += k
            heapq.heappush(self._heap, (self.score[j], self._born[j], j))

    def warm(self, count: int) -> None:
        for j in range(count):
            self.insert(j, 0)

    def lookup(self, i: int) -> tuple[int, float]:
        """Nearest cached predecessor of prompt i: (index, similarity), or (-1, nan) if the cache is empty."""
        row = i - self.query_start
        idx = self.nbr_idx[row]
        ok = self.in_cache[idx] & (idx >= 0)
        p = int(ok.argmax())
        if ok[p]:
            return int(idx[p]), float(self.nbr_sim[row, p])
        if self.size == 0:
            return -1, float("nan")
        self.fallbacks += 1
        s = self.emb[:i] @ self.emb[i]
        s[~self.in_cache[:i]] = -np.inf
        j = int(s.argmax())
        if not np.isfinite(s[j]):
            return -1, float("nan")
        return j, float(s[j])
