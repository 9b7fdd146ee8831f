"""Candidate lists for the simulated cache's lookups: exact (O(n²)) or by lineage (O(n · m)).

A lookup (`ApproxCache.lookup`) takes, for request i, the first cached entry of two lists of candidates,
best first: its top-m warm prompts and its top-m earlier requests. `exact_lists` computes them with
blocked matrix products over the whole stream — exact, but the cost grows with the square of the
requests (1,000,000 requests would take hours on two cores), so it serves streams that fit in a prompt
file (≤ 30,000 lines here), and the cache then backs a list that holds nothing cached with an exact scan.

`lineage_lists` serves streams synthesised by `scheduler.prompt_stream` (prompt t built at cosine s from
its parent p): t is close to p and, through p, to p's own neighbours — cos(t, x) = s·cos(p, x) up to a
random direction that is nearly orthogonal to everything. So t's candidates are p, p's candidate lists and
p's earlier children (t's siblings, cos ≈ s·s′), re-ranked by their exact similarity to t; the prompt
file's rows keep exact lists (over the whole file: every file row precedes every synthetic one). The
lists are approximate, like the live system's pgvector HNSW lookup, and the cache does not scan past
them (`exhaustive = False`: an exact scan of a million rows per miss would undo the point).
`tests/test_sim_scale.py` measures the agreement of the resulting K* with exact search (≥ 99 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prompt_stream import PromptStream, generations
from .topm import topm_rows

SIBLINGS = 8  # earlier children of the parent kept as candidates
LINEAGE_TOP_M = 32  # list length for synthesised streams (memory: 2 × 12 bytes × m per request)


@dataclass
class CandidateLists:
    """Per replayed request (row = stream index − query_start): top-m warm and top-m earlier-request
    candidates, best first; index `n` (the stream length) pads a short list. `exhaustive`: whether a list
    with no cached entry may hide a closer cached one (then the cache scans exactly)."""

    warm_idx: np.ndarray
    warm_sim: np.ndarray
    req_idx: np.ndarray
    req_sim: np.ndarray
    exhaustive: bool = True


def exact_lists(emb: np.ndarray, query_start: int, top_m: int, progress=None) -> CandidateLists:
    """The exact lists (blocked matrix products over the stream; O(n²))."""
    n = emb.shape[0]
    rows = range(query_start, n)
    warm_idx, warm_sim = topm_rows(emb, rows, lambda i: query_start, top_m, progress=progress)
    req_idx, req_sim = topm_rows(emb, rows, lambda i: i, top_m, col_start=query_start, progress=progress)
    warm_idx[warm_idx < 0] = n  # padding → the never-cached slot
    req_idx[req_idx < 0] = n
    return CandidateLists(warm_idx, warm_sim, req_idx, req_sim, exhaustive=True)


def lineage_lists(emb: np.ndarray, parent: np.ndarray, n_file: int, query_start: int, top_m: int) -> CandidateLists:
    """Lists for a synthesised stream (see the module docstring). `parent[t]`: the row prompt t was built
    from (−1 for the prompt file's rows, which are the first `n_file`)."""
    n = emb.shape[0]
    if query_start > n_file:
        raise ValueError("the warm prompts must come from the prompt file")
    warm = _padded(n, top_m, n - query_start)
    req = _padded(n, top_m, n - query_start)
    file_lists = _file_lists(emb[:n_file], query_start, top_m)
    _store_file_rows(emb, file_lists, warm, req, query_start, n_file)
    siblings = _earlier_siblings(parent, n_file)
    for rows in generations(parent, n_file):
        _rerank_generation(emb, rows, parent[rows], siblings[rows - n_file], file_lists, warm, req, query_start)
    return CandidateLists(warm[0], warm[1], req[0], req[1], exhaustive=False)


def _padded(n: int, m: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, m), n, dtype=np.int64), np.full((rows, m), -np.inf, dtype=np.float32)


@dataclass
class _FileLists:
    """Exact neighbours of each file row over the whole file (itself excluded), split at query_start."""

    warm_idx: np.ndarray  # (n_file, m) in [0, query_start), padding n_file... mapped to -1
    warm_sim: np.ndarray
    later_idx: np.ndarray  # (n_file, m) in [query_start, n_file)
    later_sim: np.ndarray


def _file_lists(file_emb: np.ndarray, query_start: int, m: int) -> _FileLists:
    n_file = file_emb.shape[0]
    rows = range(0, n_file)
    w_idx, w_sim = topm_rows(file_emb, rows, lambda i: query_start, m)
    # the requests of the file part, whole file: drop the row itself by asking for one more
    r_idx, r_sim = topm_rows(file_emb, rows, lambda i: n_file, m + 1, col_start=query_start)
    own = r_idx == np.arange(n_file)[:, None]
    r_sim = np.where(own, -np.inf, r_sim)
    order = np.argsort(-r_sim, axis=1, kind="stable")[:, :m]
    return _FileLists(w_idx, w_sim, np.take_along_axis(r_idx, order, 1), np.take_along_axis(r_sim, order, 1))


def _store_file_rows(emb: np.ndarray, fl: _FileLists, warm, req, query_start: int, n_file: int) -> None:
    """The file's replayed rows get exact lists over their predecessors (as `exact_lists` computes them)."""
    if n_file <= query_start:
        return
    rows = np.arange(query_start, n_file)
    n = emb.shape[0]
    w_idx = fl.warm_idx[rows]
    warm[0][: rows.size] = np.where(w_idx >= 0, w_idx, n)
    warm[1][: rows.size] = fl.warm_sim[rows]
    m = req[0].shape[1]
    r_idx, r_sim = topm_rows(emb[:n_file], range(query_start, n_file), lambda i: i, m, col_start=query_start)
    req[0][: rows.size] = np.where(r_idx >= 0, r_idx, n)
    req[1][: rows.size] = r_sim


def _earlier_siblings(parent: np.ndarray, n_file: int) -> np.ndarray:
    """For each synthetic row: up to SIBLINGS earlier rows with the same parent, latest first (−1: none)."""
    syn = np.arange(n_file, parent.size)
    par = parent[n_file:]
    order = np.lexsort((syn, par))
    out = np.full((syn.size, SIBLINGS), -1, dtype=np.int64)
    sorted_par = par[order]
    for k in range(1, SIBLINGS + 1):
        same = np.zeros(syn.size, dtype=bool)
        same[k:] = sorted_par[k:] == sorted_par[:-k]
        out[order[same], k - 1] = syn[order[np.flatnonzero(same) - k]]
    return out


def _rerank_generation(emb, rows, parents, siblings, fl: _FileLists, warm, req, query_start: int) -> None:
    """Rows of one generation: candidates from their parents' lists (built before), exact re-rank, top m."""
    n, m = emb.shape[0], warm[0].shape[1]
    n_file = fl.warm_idx.shape[0]
    in_file = parents < n_file
    # warm candidates: the parent itself if warm, and the parent's warm list
    p_warm = np.where(
        in_file[:, None], _file_rows(fl.warm_idx, parents, in_file), _req_rows(warm[0], parents, query_start)
    )
    w_cand = np.concatenate([np.where(parents < query_start, parents, n)[:, None], p_warm], axis=1)
    # request candidates: the parent if replayed, its request list (file: whole-file neighbours), siblings
    p_req = np.where(
        in_file[:, None], _file_rows(fl.later_idx, parents, in_file), _req_rows(req[0], parents, query_start)
    )
    r_cand = np.concatenate([np.where(parents >= query_start, parents, n)[:, None], p_req, siblings], axis=1)
    for cand, (idx_out, sim_out) in ((w_cand, warm), (r_cand, req)):
        cand = np.where((cand < 0) | (cand >= n), n, cand)
        _top_m_into(emb, rows, cand, idx_out, sim_out, query_start, m)


def _file_rows(table: np.ndarray, parents: np.ndarray, in_file: np.ndarray) -> np.ndarray:
    return table[np.where(in_file, parents, 0)]


def _req_rows(table: np.ndarray, parents: np.ndarray, query_start: int) -> np.ndarray:
    return table[np.maximum(parents - query_start, 0)]


def _top_m_into(emb, rows, cand, idx_out, sim_out, query_start: int, m: int) -> None:
    """Exact similarity of each row to its candidates (padding n: −inf), duplicates dropped, top m stored."""
    n = emb.shape[0]
    valid = cand < n
    safe = np.where(valid, cand, 0)
    sims = np.einsum("rd,rcd->rc", emb[rows], emb[safe], optimize=False)
    sims = np.where(valid, sims, -np.inf).astype(np.float32)
    srt = np.sort(cand, axis=1)  # a candidate met twice (parent's list ∩ siblings) counts once
    dup_sorted = np.zeros_like(srt, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    order_c = np.argsort(cand, axis=1, kind="stable")
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order_c, dup_sorted, axis=1)
    sims[dup] = -np.inf
    order = np.lexsort((cand, -sims), axis=1)[:, :m]  # best first, ties by the lower index (as exact_lists)
    top_idx = np.take_along_axis(cand, order, 1)
    top_sim = np.take_along_axis(sims, order, 1)
    k = min(m, top_idx.shape[1])
    out_rows = rows - query_start
    idx_out[out_rows, :k] = np.where(np.isfinite(top_sim), top_idx, n)[:, :k]
    sim_out[out_rows, :k] = top_sim[:, :k]


def candidate_lists(stream: PromptStream, query_start: int, top_m: int, progress=None) -> CandidateLists:
    """Exact lists for a stream from the file alone; lineage lists (O(n · m)) for a synthesised one."""
    if stream.parent is None:
        return exact_lists(stream.embeddings, query_start, top_m, progress=progress)
    return lineage_lists(stream.embeddings, stream.parent, stream.n_file, query_start, top_m)
