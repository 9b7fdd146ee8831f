"""Pure-Python helpers for the scheduler and simulator tests (no Django): the SDXL A100 profile the tests
plan with, a config builder, a near-duplicate embedding stream and a stand-in for the prompt-file embedder."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from scheduler.interface import SchedulerConfig
from scheduler.profiles import load_profile

PROFILE = load_profile("sdxl-a100")
LEVELS = list(PROFILE.levels)
ALL = tuple(lv for lv in LEVELS if lv > 0)  # every cache level: a neighbour that holds them all
SLO = 2 * PROFILE.latency(0, 1)


def cfg(n: int = 4, **kw) -> SchedulerConfig:
    return SchedulerConfig(n_workers=n, profile=PROFILE, slo_s=SLO, **kw)


def clustered_stream(n: int, d: int = 32, clusters: int = 40, noise: float = 0.25, seed: int = 0) -> np.ndarray:
    """Unit vectors in near-duplicate runs, like a real prompt stream (no model needed)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    lab = np.minimum(np.cumsum(rng.random(n) < 0.15), clusters - 1)
    rng.shuffle(lab[: n // 3])
    x = centers[lab] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fake_embed_file(path, cache_dir=None, batch_size=64, progress=False, dim: int = 384) -> np.ndarray:
    """Stands in for scheduler.embeddings.embed_prompt_file: one clustered vector per line of the file."""
    lines = Path(path).read_text().splitlines()
    return clustered_stream(len(lines), d=dim, seed=11)


fake_embed_file_64 = partial(fake_embed_file, dim=64)
