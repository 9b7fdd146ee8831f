"""ApproxC engine: exact resume, batching, determinism and scheduler refusal, on tiny random pipelines.

CPU, float32, no Django. Run: ``.venv/bin/python -m pytest -p no:django tests/test_engine_*.py``
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.engine import (
    ApproxCEngine,
    GenItem,
    UnsupportedSchedulerError,
    check_scheduler,
    load_pipeline,
    set_scheduler,
)
from workers.tiny_model import build_tiny_pipeline

LEVELS = (5, 10, 15, 20, 25)
N = 30  # fewer than the serving default (50) to keep the suite fast; still covers every level
TOL = 1e-5
PROMPT_A = "a watercolor painting of a lighthouse at dawn"
PROMPT_B = "an oil painting of a red fox in the snow"
COMBOS = [("sd", "ddim"), ("sd", "euler"), ("sdxl", "ddim"), ("sdxl", "euler")]


# One intra-op torch thread for this module (tests/conftest.py explains why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("engine_models")
    return {
        "sd": build_tiny_pipeline(root / "sd", "sd", "ddim"),
        "sdxl": build_tiny_pipeline(root / "sdxl", "sdxl", "euler"),
    }


@pytest.fixture(scope="module")
def engines(tiny_dirs) -> dict[tuple[str, str], ApproxCEngine]:
    """One engine per (kind, scheduler); schedulers other than the saved one are swapped in."""
    out = {}
    for kind, sched in COMBOS:
        out[(kind, sched)] = ApproxCEngine(
            load_pipeline(tiny_dirs[kind], device="cpu", scheduler=sched), cache_levels=LEVELS
        )
    return out


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _batch_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Batched vs single runs are not bit-identical on CPU: a GEMM computes the rows of its remainder
    block on another kernel path (~1e-7 per op). Observed: ~1e-6 of the latent's magnitude after 50
    steps; allow 1e-5 of it."""
    return _max_diff(a, b) <= 1e-5 * max(1.0, float(b.abs().max()))


# ----------------------------------------------------------------------------------------------------------
# Exactness
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,sched", COMBOS, ids=[f"{k}-{s}" for k, s in COMBOS])
def test_resume_from_own_latent_reproduces_full_run(engines, kind, sched):
    engine = engines[(kind, sched)]
    assert engine.scheduler_name == sched
    if sched == "ddim":  # converted from Euler for SDXL: must not clip latents to [-1, 1]
        assert engine.pipe.scheduler.config.clip_sample is False
    assert engine.pipe.unet.dtype == torch.float32 and engine.device.type == "cpu"
    full = engine.generate([GenItem(PROMPT_A, seed=11, steps=N)])[0]
    assert sorted(full.latents) == list(LEVELS)
    full_pixels = engine.decode(full.final_latent)
    for k in LEVELS:
        # The seed must not matter once resuming: use a different one on purpose.
        resumed = engine.generate([GenItem(PROMPT_A, seed=999, steps=N, start_level=k, start_latent=full.latents[k])])[
            0
        ]
        assert resumed.start_level == k and resumed.timings.steps_run == N - k
        assert _max_diff(resumed.final_latent, full.final_latent) <= TOL, f"K={k}"
        assert _max_diff(engine.decode(resumed.final_latent), full_pixels) <= TOL, f"K={k}"
        assert np.array_equal(np.asarray(resumed.image), np.asarray(full.image)), f"K={k}"
        # Its later levels are the full run's later levels.
        assert sorted(resumed.latents) == [lv for lv in LEVELS if lv > k]
        for lv, latent in resumed.latents.items():
            assert _max_diff(latent, full.latents[lv]) <= TOL


@pytest.mark.parametrize("kind,sched", COMBOS, ids=[f"{k}-{s}" for k, s in COMBOS])
def test_full_run_matches_stock_diffusers_pipeline(engines, kind, sched):
    """K′ = 0 through the engine is the stock pipeline's output for the same seed (CPU generator)."""
    engine = engines[(kind, sched)]
    ours = engine.generate([GenItem(PROMPT_A, seed=5, steps=12, guidance_scale=7.5)])[0]
    stock = engine.pipe(
        PROMPT_A,
        num_inference_steps=12,
        guidance_scale=7.5,
        output_type="latent",
        generator=torch.Generator("cpu").manual_seed(5),
    ).images
    assert _max_diff(ours.final_latent, stock) <= TOL


def test_resume_uses_the_new_prompt(engines):
    engine = engines[("sd", "ddim")]
    a = engine.generate([GenItem(PROMPT_A, seed=1, steps=N)])[0]
    b_full = engine.generate([GenItem(PROMPT_B, seed=1, steps=N)])[0]
    b_from_a = engine.generate([GenItem(PROMPT_B, steps=N, start_level=10, start_latent=a.latents[10])])[0]
    assert _max_diff(b_from_a.final_latent, a.final_latent) > 1e-3
    assert _max_diff(b_from_a.final_latent, b_full.final_latent) > 1e-3


# ----------------------------------------------------------------------------------------------------------
# Batching and determinism
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_batched_equals_single_with_mixed_levels(engines, kind):
    engine = engines[(kind, "euler")]
    donor = engine.generate([GenItem(PROMPT_B, seed=3, steps=N)])[0]
    items = [
        GenItem(PROMPT_A, seed=1, steps=N),
        GenItem(PROMPT_A, seed=2, steps=N, start_level=15, start_latent=donor.latents[15]),
        GenItem(PROMPT_B, seed=3, steps=N, negative_prompt="blurry", guidance_scale=5.0),
        GenItem("a castle", seed=4, steps=N, start_level=5, start_latent=donor.latents[5]),
    ]
    batched = engine.generate(items)
    for item, got in zip(items, batched):
        single = engine.generate([item])[0]
        assert got.start_level == item.start_level
        assert got.timings.batch_size == len(items)
        assert _batch_close(got.final_latent, single.final_latent)
        assert sorted(got.latents) == sorted(single.latents)
        for lv in got.latents:
            assert _batch_close(got.latents[lv], single.latents[lv])


def test_heterogeneous_requests_split_into_sub_batches_in_order(engines):
    engine = engines[("sd", "ddim")]
    items = [
        GenItem(PROMPT_A, seed=1, steps=8),
        GenItem(PROMPT_A, seed=1, steps=6, width=48, height=48),
        GenItem(PROMPT_B, seed=2, steps=8, guidance_scale=1.0),
        GenItem(PROMPT_B, seed=2, steps=8),
    ]
    results = engine.generate(items)
    assert [r.image.size for r in results] == [(64, 64), (48, 48), (64, 64), (64, 64)]
    assert [r.timings.batch_size for r in results] == [2, 1, 1, 2]
    assert [r.timings.steps_run for r in results] == [8, 6, 8, 8]
    assert len({r.timings.batch_s for r in results}) == 1
    assert engine.generate([]) == []


def test_seed_determinism(engines):
    engine = engines[("sdxl", "ddim")]
    one, two, other = engine.generate(
        [
            GenItem(PROMPT_A, seed=42, steps=10),
            GenItem(PROMPT_A, seed=42, steps=10),
            GenItem(PROMPT_A, seed=43, steps=10),
        ]
    )
    again = engine.generate([GenItem(PROMPT_A, seed=42, steps=10)])[0]
    assert _batch_close(one.final_latent, two.final_latent)
    assert _batch_close(one.final_latent, again.final_latent)
    assert np.array_equal(
        again.final_latent.numpy(),  # same batch shape: bit-identical
        engine.generate([GenItem(PROMPT_A, seed=42, steps=10)])[0].final_latent.numpy(),
    )
    assert _max_diff(one.final_latent, other.final_latent) > 1e-2


def test_capture_levels(tiny_dirs):
    pipe = load_pipeline(tiny_dirs["sd"], device="cpu")
    engine = ApproxCEngine(pipe, cache_levels=(3, 6, 9, 12))
    full = engine.generate([GenItem(PROMPT_A, seed=0, steps=10)])[0]
    assert sorted(full.latents) == [3, 6, 9]  # level 12 is past the end
    assert full.latents[3].shape == engine.latent_shape() == (1, 4, 8, 8)
    assert full.latents[3].device.type == "cpu"
    resumed = engine.generate([GenItem(PROMPT_B, steps=10, start_level=3, start_latent=full.latents[3][0])])[0]
    assert sorted(resumed.latents) == [6, 9]  # 3-D start latent accepted too
    no_resume_capture = ApproxCEngine(pipe, cache_levels=(3, 6, 9), capture_after_resume=False)
    resumed = no_resume_capture.generate([GenItem(PROMPT_B, steps=10, start_level=3, start_latent=full.latents[3])])[0]
    assert resumed.latents == {}


# ----------------------------------------------------------------------------------------------------------
# Refusals and validation
# ----------------------------------------------------------------------------------------------------------


def test_dpm_solver_refused_with_clear_message(tiny_dirs):
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

    pipe = load_pipeline(tiny_dirs["sd"], device="cpu")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
    with pytest.raises(UnsupportedSchedulerError) as err:
        ApproxCEngine(pipe)
    message = str(err.value)
    assert "DPM-Solver++" in message and "history" in message and "DDIM" in message and "Euler" in message
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(UnsupportedSchedulerError, match="PNDMScheduler"):
        check_scheduler(pipe.scheduler)
    set_scheduler(pipe, "ddim")  # the documented way out
    assert ApproxCEngine(pipe).scheduler_name == "ddim"
    with pytest.raises(UnsupportedSchedulerError):
        set_scheduler(pipe, "dpmsolver++")


@pytest.mark.parametrize(
    "item,match",
    [
        (GenItem("x", steps=10, start_level=10, start_latent=torch.zeros(1, 4, 8, 8)), "start_level"),
        (GenItem("x", steps=10, start_level=-1), "start_level"),
        (GenItem("x", steps=10, start_level=5), "needs a start_latent"),
        (GenItem("x", steps=10, start_level=5, start_latent=torch.zeros(1, 4, 6, 6)), "shape"),
        (GenItem("x", steps=10, start_latent=torch.zeros(1, 4, 8, 8)), "must be None"),
        (GenItem("x", steps=0), "steps"),
        (GenItem("x", steps=10, width=60), "multiples of 8"),
    ],
)
def test_invalid_items_rejected(engines, item, match):
    with pytest.raises(ValueError, match=match):
        engines[("sd", "ddim")].generate([item])
