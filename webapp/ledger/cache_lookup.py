"""The submit path's view of the approximate cache: nearest neighbour of a prompt embedding.

Filled in by the cache store (workers/cache_store.py) when it is present; until then every
request is a miss and runs at K′ = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbour:
    entry_id: int
    prompt: str
    similarity: float
    levels: tuple[int, ...]


def find_neighbour(embedding: np.ndarray, *, width: int, height: int, steps: int) -> Neighbour | None:
    return None
