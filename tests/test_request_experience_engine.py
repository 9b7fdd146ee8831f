"""Issue 12, cancel while running, in the engine: items the step hook names leave the batch's tensors at that
step; the other items go on and end as they would have without them (tiny random pipelines, CPU, float32).

The worker side (a real worker process, a cancelled row in a running batch of three) is in
tests/test_request_experience.py."""

from __future__ import annotations

import pytest
import torch

from scheduler.profiles import load_profile
from workers.emulated_engine import EmulatedEngine
from workers.engine import ApproxCEngine, GenItem, load_pipeline
from workers.tiny_model import build_tiny_pipeline

N = 20
LEVELS = (5, 10, 15)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict[str, ApproxCEngine]:
    root = tmp_path_factory.mktemp("drop_models")
    sd = build_tiny_pipeline(root / "sd", "sd", "ddim")
    sdxl = build_tiny_pipeline(root / "sdxl", "sdxl", "euler")
    return {
        "sd-ddim": ApproxCEngine(load_pipeline(sd, device="cpu"), cache_levels=LEVELS),
        "sdxl-euler": ApproxCEngine(load_pipeline(sdxl, device="cpu"), cache_levels=LEVELS),
    }


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Batched and single runs differ by GEMM remainder paths (~1e-6 of the latent; see test_engine_exactness)."""
    return float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max()))


class DropFrom:
    """A step hook that drops `positions` from step `at` on, answering with one frozenset object (as the
    worker's StepReporter does), and records the steps it saw."""

    def __init__(self, positions: set[int], at: int) -> None:
        self.drop, self.at, self.steps = frozenset(positions), at, []

    def __call__(self, i: int, n: int) -> frozenset[int] | None:
        self.steps.append(i)
        return self.drop if i >= self.at else None


@pytest.mark.parametrize("kind", ["sd-ddim", "sdxl-euler"])
def test_a_dropped_item_leaves_its_batch_and_the_others_end_as_without_it(engines, kind):
    engine = engines[kind]
    donor = engine.generate([GenItem("a red fox in the snow", seed=9, steps=N)])[0]
    items = [
        GenItem("a lighthouse at dawn", seed=1, steps=N),
        GenItem("drop me", seed=2, steps=N, negative_prompt="blurry"),
        GenItem("a castle", seed=3, steps=N, start_level=10, start_latent=donor.latents[10], guidance_scale=5.0),
    ]
    hook = DropFrom({1}, at=4)
    results = engine.generate(items, on_step=hook)
    assert results[1] is None
    assert hook.steps == list(range(N))  # the batch went on to the end for the others
    for item, got in ((items[0], results[0]), (items[2], results[2])):
        alone = engine.generate([item])[0]
        assert _close(got.final_latent, alone.final_latent)
        assert sorted(got.latents) == sorted(alone.latents)
        assert all(_close(got.latents[lv], alone.latents[lv]) for lv in got.latents)
        assert got.image.size == alone.image.size


@pytest.mark.parametrize("kind", ["sd-ddim", "sdxl-euler"])
def test_dropping_every_running_item_skips_ahead_to_a_late_joiner(engines, kind):
    """The only running item is dropped before step 3; the one joining at K′ = 10 starts there, on a fresh
    schedule position, and ends exactly as it does alone (no steps are run for nobody)."""
    engine = engines[kind]
    donor = engine.generate([GenItem("a red fox in the snow", seed=9, steps=N)])[0]
    late = GenItem("a castle", seed=3, steps=N, start_level=10, start_latent=donor.latents[10])
    hook = DropFrom({0}, at=3)
    results = engine.generate([GenItem("drop me", seed=1, steps=N), late], on_step=hook)
    assert results[0] is None
    assert hook.steps == [0, 1, 2, 3, *range(10, N)]
    assert _close(results[1].final_latent, engine.generate([late])[0].final_latent)


def test_dropping_the_whole_batch_stops_it_at_once(engines):
    engine = engines["sd-ddim"]
    hook = DropFrom({0, 1}, at=2)
    results = engine.generate([GenItem("one", seed=1, steps=N), GenItem("two", seed=2, steps=N)], on_step=hook)
    assert results == [None, None]
    assert hook.steps == [0, 1, 2]


def test_the_emulated_engine_drops_items_too():
    engine = EmulatedEngine(load_profile("sdxl-a100"), time_factor=0.001)
    hook = DropFrom({0}, at=1)
    items = [GenItem("drop me", seed=1, steps=10), GenItem("keep me", seed=2, steps=10)]
    results = engine.generate(items, on_step=hook)
    assert results[0] is None and results[1].start_level == 0
    assert hook.steps == list(range(10))
    hook = DropFrom({0, 1}, at=0)
    assert engine.generate(items, on_step=hook) == [None, None] and hook.steps == [0]
