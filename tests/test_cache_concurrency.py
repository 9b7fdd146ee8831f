"""Two real processes insert, hit, evict and purge the same cache at once under a small byte budget;
afterwards the index and the files must agree (every row's file exists, no orphan file, summaries
right, budget kept)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import subprocess_database_url
from tests.helpers import cache_config
from tests.test_cache_store import assert_consistent, files_on_disk
from webapp.cache import store as cache_store
from webapp.cache.models import CacheEntry, CacheLevel

pytestmark = pytest.mark.django_db(transaction=True)  # two real processes read and write these rows

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 40


def hammer(worker: int, rounds: int, barrier: str) -> None:
    """One process's workload (run with `python -c`, after django.setup()). Both processes start the
    workload together: each reports ready, then waits for the test's go file."""
    import time

    import numpy as np
    import torch

    from webapp.cache import store

    store.nearest(np.ones(384, dtype=np.float32), "hammer")  # connect before the start line
    Path(barrier, f"ready-{worker}").touch()
    while not Path(barrier, "go").exists():
        time.sleep(0.01)
    started = time.perf_counter()
    rng = np.random.default_rng(worker)
    mine: list[int] = []
    for r in range(rounds):
        n = int(rng.integers(1, 4))
        # Some prompts are shared by both processes: concurrent inserts of the same prompt and key.
        prompts = [f"shared {r % 7}" if j == 0 and r % 3 == 0 else f"w{worker} r{r} j{j}" for j in range(n)]
        levels = [
            sorted(rng.choice([5, 10, 15, 20, 25], size=int(rng.integers(1, 6)), replace=False)) for _ in range(n)
        ]
        vecs = rng.normal(size=(n, 384)).astype(np.float32)
        ids = store.insert_many(
            "hammer", prompts, [{int(k): torch.randn(1, 4, 8, 8) for k in lv} for lv in levels], vecs
        )
        mine += [i for i in ids if i is not None]
        for entry_id in rng.choice(mine, size=min(len(mine), 3), replace=False):
            store.start_latent(int(entry_id), int(rng.choice([5, 10, 15, 20, 25])))  # may be evicted: fine
        found = store.nearest(vecs[0], "hammer")
        assert found is not None
        if r % 10 == 9:
            store.purge([int(rng.choice(mine))])
        if r % 8 == 7:
            store.evict_to_budget()
    print(f"worker {worker}: {rounds} rounds in {time.perf_counter() - started:.1f} s")


def test_two_processes_inserting_and_evicting_keep_rows_and_files_consistent(embedded_services, settings, tmp_path):
    settings.T2I_CACHE_DIR = tmp_path / "latent-cache"
    # Budget: about 25 latents of 1 × 4 × 8 × 8 float32, so nearly every insert evicts.
    size = cache_store._write_latent(__import__("torch").zeros(1, 4, 8, 8), "probe.safetensors")
    (settings.T2I_CACHE_DIR / "probe.safetensors").unlink()
    budget = 25 * size
    cache_config(byte_budget=budget)

    env = dict(
        os.environ,
        DATABASE_URL=subprocess_database_url(),
        T2I_CACHE_DIR=str(settings.T2I_CACHE_DIR),
        DJANGO_SETTINGS_MODULE="webapp.settings",
        PYTHONUNBUFFERED="1",
    )
    code = (
        "import sys, django; django.setup(); from tests.test_cache_concurrency import hammer; "
        "hammer(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])"
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i), str(ROUNDS), str(barrier)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((barrier / f"ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "hammer did not start"
        time.sleep(0.05)
    (barrier / "go").touch()
    outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "not counted" not in out, out[-3000:]  # no hit lost to a lock conflict
        print(out.strip().splitlines()[-1])

    assert_consistent()
    assert cache_store.used_bytes() <= budget
    assert CacheEntry.objects.exists() and CacheLevel.objects.count() == len(files_on_disk())
    # Shared prompts were inserted by both processes at once, yet each exists at most once.
    shared = CacheEntry.objects.filter(prompt__startswith="shared").values_list("prompt", flat=True)
    assert len(shared) == len(set(shared))
