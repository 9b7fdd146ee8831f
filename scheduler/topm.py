"""Exact top-m most similar earlier columns per row, by blocked matrix products (the neighbour search's kernel)."""

from __future__ import annotations

import numpy as np


def topm_rows(
    emb: np.ndarray, rows: range, cols_end, m: int, block: int = 512, col_start: int = 0, progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """For each row i in `rows`: the m most similar columns j in [col_start, cols_end(i)), best first, equal
    similarities by the lower j (index -1 / similarity -inf where there are fewer)."""
    q = len(rows)
    idx = np.full((q, m), -1, dtype=np.int64)
    sim = np.full((q, m), -np.inf, dtype=np.float32)
    for a in range(rows.start, rows.stop, block):
        b = min(rows.stop, a + block)
        ends = np.array([cols_end(i) for i in range(a, b)])
        hi = int(ends.max(initial=col_start))
        if hi <= col_start:
            continue
        s = emb[a:b] @ emb[col_start:hi].T
        s[np.arange(col_start, hi)[None, :] >= ends[:, None]] = -np.inf
        mm = min(m, hi - col_start)
        width = hi - col_start
        part = (
            np.argpartition(s, width - mm, axis=1)[:, width - mm :]
            if mm < width
            else np.broadcast_to(np.arange(width), (b - a, width)).copy()
        )
        ps = np.take_along_axis(s, part, axis=1)
        # Best first, equal similarities (duplicate prompts) by the lower index: the choice among exact
        # duplicates then does not depend on argpartition's internal order (or on m).
        order = np.lexsort((part, -ps), axis=1)
        part = np.take_along_axis(part, order, axis=1)
        ps = np.take_along_axis(ps, order, axis=1)
        idx[a - rows.start : b - rows.start, :mm] = np.where(np.isfinite(ps), part + col_start, -1)
        sim[a - rows.start : b - rows.start, :mm] = ps
        if progress is not None:
            progress.update(b - a)
    return idx, sim
