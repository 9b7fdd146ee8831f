"""The simulator's approximate cache: which prompts' latents are held, at which levels, and LCBFU eviction.

Entries are prompts of the stream (warm prefix + replayed requests), identified by their index. Levels:
* warm entries (full generations) hold every cache level;
* a request served at K′ contributes the levels **above** K′ — the steps it computed itself, conditioned on
  its own prompt (levels ≤ K′ would be its neighbour's latents); served at the largest level it adds
  nothing. This matches what a resumed engine run can capture. (`resumed_levels="all"` is an optimistic
  ablation that lets every served request contribute every level, as if its early latents were its own.)
LCBFU (NIRVANA): an entry's score is Σ K over its hits (frequency × K); when the cache is over capacity
(in entries) the lowest score leaves, the oldest first among equals.

Scope (issue 10): `shared` (one cache for everyone), `tenant` (a request may resume only from entries its
own tenant created; the warm prompts are the operator's and usable by every tenant) or `off` (no lookup,
no insert). `set_scope(scope, tenants)` gives each stream position its tenant; the filter is applied to
the same candidate lists and the same exact fallback scan, so a tenant's nearest entry is exact too.

Search: the nearest cached prompt by cosine similarity (embeddings are unit vectors), exact. Only
prompts earlier in the stream can be cached when a request arrives, so two candidate lists are
precomputed per request with blocked matrix products: its top-m warm prompts and its top-m earlier
requests, best first. A lookup takes the first cached entry of each list. A list with no cached entry
among its m can only hide candidates no more similar than its m-th; only when that bound beats the best
hit found does the lookup fall back to one matrix-vector product over that list's (cached) range — rare,
and skipped entirely when no request has been cached (e.g. under Clipper-HT).

The lists come from `scheduler.neighbour_index`: exact by default; a synthesised stream longer than the
prompt file passes its lineage lists (`lists=`, O(n · m) to build, approximate), and then a list with no
cached entry counts as a miss, with no exact scan (`exhaustive` False).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

from .neighbour_index import exact_lists
from .topm import topm_rows  # noqa: F401 — re-exported: its historical home

CACHE_SCOPES: tuple[str, ...] = ("shared", "tenant", "off")


class ApproxCache:
    """Cache state over a prompt stream; see module docstring."""

    def __init__(
        self,
        emb: np.ndarray,
        levels: tuple[int, ...] | list[int],
        capacity: int,
        query_start: int = 0,
        top_m: int = 96,
        resumed_levels: str = "above",
        progress=None,
        lists=None,
    ) -> None:
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.n = self.emb.shape[0]
        self.levels = tuple(lv for lv in levels if lv > 0)  # cache levels (0 is "no latent")
        self.capacity = max(1, int(capacity))
        self.query_start = query_start
        self.similarity_map: Callable[[np.ndarray], np.ndarray] | None = None
        if resumed_levels not in ("above", "all"):
            raise ValueError("resumed_levels must be 'above' or 'all'")
        self.resumed_levels = resumed_levels  # "all": optimistic ablation, see module docstring
        self._in_cache_s = np.zeros(self.n + 1, dtype=bool)  # last slot: padding, never cached
        self.in_cache = self._in_cache_s[: self.n]
        self.min_level_idx = np.zeros(self.n, dtype=np.int8)  # index into self.levels of the lowest held
        self.score = np.zeros(self.n, dtype=np.float64)
        self._seq = 0
        self._heap: list[tuple[float, int, int]] = []
        self._born: dict[int, int] = {}
        self.size = 0
        self.evictions = 0
        self.fallbacks = 0
        self._avail = [tuple(self.levels[i:]) for i in range(len(self.levels) + 1)]
        if lists is None:  # the exact candidate lists (scheduler.neighbour_index has the scalable kind)
            lists = exact_lists(self.emb, query_start, top_m, progress=progress)
        self.warm_idx, self.warm_sim, self.req_idx, self.req_sim = (
            lists.warm_idx,
            lists.warm_sim,
            lists.req_idx,
            lists.req_sim,
        )
        # False for approximate lists: a list with no cached entry is taken as a miss, with no exact scan
        self.exhaustive = lists.exhaustive
        self.cached_requests = 0  # entries from the replayed part of the stream currently held
        self.scope = "shared"
        self._tenant_s = np.full(self.n + 1, -1, dtype=np.int64)  # per position; warm: -1 (the operator's)
        self._tenant_s[self.n] = -2  # the padding slot matches no tenant

    def set_scope(self, scope: str, tenants: np.ndarray | None = None) -> None:
        """`shared`, `tenant` (with the tenant of each replayed request, in stream order from query_start)
        or `off`. Kept across `reset`, like the neighbour index."""
        if scope not in CACHE_SCOPES:
            raise ValueError(f"unknown cache scope {scope!r}; choose from {', '.join(CACHE_SCOPES)}")
        if scope == "tenant":
            if tenants is None or len(tenants) != self.n - self.query_start:
                raise ValueError("the tenant scope needs one tenant per replayed request")
            self._tenant_s[self.query_start : self.n] = np.asarray(tenants, dtype=np.int64)
        self.scope = scope

    def reset(self, capacity: int | None = None) -> None:
        """Empty the cache (keeps the neighbour index, which depends only on the embeddings)."""
        self.in_cache[:] = False
        self.min_level_idx[:] = 0
        self.score[:] = 0.0
        self._heap.clear()
        self._born.clear()
        self._seq = self.size = self.evictions = self.fallbacks = self.cached_requests = 0
        if capacity is not None:
            self.capacity = max(1, int(capacity))

    def available(self, j: int) -> tuple[int, ...]:
        """Levels held for entry j."""
        return self._avail[int(self.min_level_idx[j])]

    def insert(self, j: int, served_k: int = 0) -> None:
        """Add prompt j after it was served at served_k (levels above served_k are its own)."""
        if self.scope == "off" and j >= self.query_start:
            return
        lvls = self.levels
        lo = 0
        if self.resumed_levels == "above":
            while lo < len(lvls) and lvls[lo] <= served_k:
                lo += 1
        if lo >= len(lvls):
            return
        if self.in_cache[j]:
            if lo < self.min_level_idx[j]:
                self.min_level_idx[j] = lo
            return
        self.in_cache[j] = True
        if j >= self.query_start:
            self.cached_requests += 1
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
                if j >= self.query_start:
                    self.cached_requests -= 1
                self.size -= 1
                self.evictions += 1
                return

    def hit(self, j: int, k: int) -> None:
        """LCBFU: a hit at level k adds k to the entry's score."""
        if self.in_cache[j]:
            self.score[j] += k
            heapq.heappush(self._heap, (self.score[j], self._born[j], j))

    def set_similarity_map(self, fn: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """A monotone map applied to every similarity a lookup returns (`scheduler.similarity_calibration`);
        neighbours are unchanged since the map keeps their order. None: the embedder's own similarities."""
        self.similarity_map = fn

    def warm(self, count: int) -> None:
        for j in range(count):
            self.insert(j, 0)

    def lookup(self, i: int) -> tuple[int, float]:
        """Nearest cached predecessor of prompt i: (index, similarity), or (-1, nan) if none is cached."""
        if self.scope == "off":
            return -1, float("nan")
        row = i - self.query_start
        best_j, best_s = -1, -np.inf
        in_cache = self._in_cache_s  # view with a trailing always-False slot for the -1 padding
        W = self.query_start
        if self.size > self.cached_requests:  # some warm entry is cached
            idx = self.warm_idx[row]
            ok = in_cache[idx]
            p = int(ok.argmax())
            if ok[p]:
                best_j, best_s = int(idx[p]), float(self.warm_sim[row, p])
            else:
                best_j, best_s = self._fallback(i, 0, W, float(self.warm_sim[row, -1]), best_j, best_s)
        if self.cached_requests > 0 and i > W:
            idx = self.req_idx[row]
            ok = in_cache[idx]
            if self.scope == "tenant":
                ok = ok & (self._tenant_s[idx] == self._tenant_s[i])
            p = int(ok.argmax())
            if ok[p]:
                sp = float(self.req_sim[row, p])
                if sp > best_s:
                    best_j, best_s = int(idx[p]), sp
            else:
                best_j, best_s = self._fallback(i, W, i, float(self.req_sim[row, -1]), best_j, best_s)
        if best_j < 0:
            return -1, float("nan")
        if self.similarity_map is not None:
            return best_j, float(self.similarity_map(best_s))
        return best_j, best_s

    def lookup_many(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """`lookup(i)` for every i in [first, stop) against the cache as it is now (nothing is inserted in
        between): indices (-1: none) and similarities (NaN: none). One vectorised pass over the candidate
        lists, then the same exact scan as `lookup` for a row whose list holds no cached entry and could
        hide a closer one; used to forecast a window of future arrivals (the oracle)."""
        rows = np.arange(first - self.query_start, stop - self.query_start)
        W = self.query_start
        best_j = np.full(rows.size, -1, dtype=np.int64)
        best_s = np.full(rows.size, -np.inf)
        in_cache = self._in_cache_s
        if self.scope == "off":
            return np.full(rows.size, -1, dtype=np.int64), np.full(rows.size, np.nan)
        lists = []  # (candidate indices, similarities, scan range lo, hi) per list that can hold a hit
        if self.size > self.cached_requests:
            lists.append((self.warm_idx, self.warm_sim, np.zeros(rows.size, dtype=np.int64), np.full(rows.size, W)))
        if self.cached_requests > 0:
            lists.append((self.req_idx, self.req_sim, np.full(rows.size, W), rows + W))
        for idx_l, sim_l, lo, hi in lists:
            idx, sim = idx_l[rows], sim_l[rows]
            ok = in_cache[idx]
            if self.scope == "tenant" and idx_l is self.req_idx:
                ok = ok & (self._tenant_s[idx] == self._tenant_s[rows + W][:, None])
            p = ok.argmax(axis=1)
            found = ok[np.arange(rows.size), p]
            cand_j = idx[np.arange(rows.size), p]
            cand_s = sim[np.arange(rows.size), p].astype(np.float64)
            better = found & (cand_s > best_s)
            best_j[better], best_s[better] = cand_j[better], cand_s[better]
            bound = sim[:, -1].astype(np.float64)
            scan = ~found & (hi > lo) & np.isfinite(bound) & (bound > best_s) & self.exhaustive
            for r in np.flatnonzero(scan):  # exact scan, as in lookup(); rare
                self.fallbacks += 1
                j, sv = self._scan(int(rows[r] + W), int(lo[r]), int(hi[r]))
                if j >= 0 and sv > best_s[r]:
                    best_j[r], best_s[r] = j, sv
        best_s[best_j < 0] = np.nan
        if self.similarity_map is not None:
            best_s = self.similarity_map(best_s)
        return best_j, best_s

    def _scan(self, i: int, lo: int, hi: int) -> tuple[int, float]:
        """The most similar cached entry to prompt i in [lo, hi); (-1, -inf) if none is cached."""
        s = self.emb[lo:hi] @ self.emb[i]  # contiguous: cheaper than gathering the cached rows
        s[~self.in_cache[lo:hi]] = -np.inf
        if self.scope == "tenant" and lo >= self.query_start:
            s[self._tenant_s[lo:hi] != self._tenant_s[i]] = -np.inf
        k = int(s.argmax())
        return (k + lo, float(s[k])) if np.isfinite(s[k]) else (-1, -np.inf)

    def _fallback(self, i: int, lo: int, hi: int, bound: float, best_j: int, best_s: float) -> tuple[int, float]:
        """Exact scan of [lo, hi) when the list had no cached entry and might hide a better one."""
        if hi <= lo or not (bound > best_s) or not np.isfinite(bound) or not self.exhaustive:
            return best_j, best_s
        self.fallbacks += 1
        j, s = self._scan(i, lo, hi)
        if j >= 0 and s > best_s:
            return j, s
        return best_j, best_s
