"""The demo model: the micro build (seconds), its folder as a stock pipeline, the engine on it, the scorer,
and the committed pretrained model.

CPU, float32, no database. The micro config trains a few steps only: its images are not meant to adhere;
adherence is checked on the committed model (skipped when it is absent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.demo import marker, scorer
from workers.demo.adherence import evaluation_captions, measure_adherence
from workers.demo.build import build_config, build_demo_model
from workers.demo.training import lr_factor, train_vae
from workers.demo.world import WORLD_VERSION, Attributes, make_dataset
from workers.engine import ApproxCEngine, GenItem, load_pipeline

# DEMO_PRETRAINED=FOLDER runs the committed-model checks on a candidate folder before it replaces the committed one.
PRETRAINED = Path(
    os.environ.get("DEMO_PRETRAINED") or Path(__file__).resolve().parents[1] / "workers" / "demo" / "pretrained"
)

# One intra-op torch thread for this module (tests/conftest.py explains why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "micro"
    lines: list[str] = []
    result = build_demo_model(out, build_config("micro"), log=lines.append, progress=False)
    return out, result, lines


@pytest.mark.slow
def test_micro_build_saves_a_stock_folder_with_scorer_and_marker(micro):
    out, result, lines = micro
    assert (out / "model_index.json").is_file() and marker.is_demo_model(out)
    assert scorer.has_scorer(marker.scorer_folder(out))
    info = marker.read_marker(out)
    assert info["world_version"] == WORLD_VERSION and info["image_size"] == 32
    assert info["example_prompts"][0] == "a red circle at the top left on a gray background"
    assert {"red", "circle", "left", "background"} <= set(info["words"])
    assert [p["step"] for p in info["adherence_curve"]] == [2, 4]
    assert set(info["adherence"]["accuracy"]) == {"colour", "shape", "position", "background", "all"}
    assert any("scorer on held-out renders" in line for line in lines)
    assert any("step     4" in line for line in lines)
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and "scorer" not in index


def test_folder_loads_with_from_pretrained_and_generates_32px(micro):
    from diffusers import DiffusionPipeline

    out, _, _ = micro
    pipe = DiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and type(pipe.scheduler).__name__ == "DDIMScheduler"
    config = pipe.scheduler.config
    assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
    assert config.timestep_spacing == "trailing"
    assert pipe.vae_scale_factor == 4 and pipe.tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle at the top left on a gray background", num_inference_steps=3).images[0]
    assert image.size == (32, 32)


def test_engine_runs_the_folder_and_resumes_exactly(micro):
    out, _, _ = micro
    engine = ApproxCEngine(load_pipeline(out, device="cpu"), cache_levels=(2, 4))
    assert engine.default_size == (32, 32) and engine.latent_shape() == (1, 8, 8, 8)
    prompt = "a blue square in the center on a black background"
    full = engine.generate([GenItem(prompt=prompt, seed=3, steps=10)])[0]
    assert full.image.size == (32, 32) and set(full.latents) == {2, 4}
    resumed = engine.generate([GenItem(prompt=prompt, steps=10, start_level=4, start_latent=full.latents[4])])[0]
    assert torch.equal(resumed.final_latent, full.final_latent)  # DDIM resumes bit-exactly
    neighbour = GenItem(
        prompt="a red square in the center on a black background", steps=10, start_level=4, start_latent=full.latents[4]
    )
    other = engine.generate([neighbour])[0]
    assert not torch.equal(other.final_latent, full.final_latent)


def test_vae_training_is_reproducible():
    cfg = build_config("micro").training
    a, b = train_vae(cfg).state_dict(), train_vae(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_micro_scorer_reads_renders_and_reloads(micro):
    out, result, _ = micro
    assert min(result.scorer_renders[k] for k in ("colour", "position", "background")) >= 0.99
    assert result.scorer_renders["shape"] >= 0.95
    loaded = scorer.load_scorer(marker.scorer_folder(out))
    data = make_dataset(64, seed=99)
    assert np.array_equal(loaded.predict_indices(data.images), loaded.predict_indices(list(map(_pil, data.images))))
    assert loaded.accuracy(data.images, data.labels)["all"] >= 0.9


def test_lr_schedules_warm_up_then_cosine_or_hold_and_decay():
    assert lr_factor(0, 1000, 100) == pytest.approx(0.01) and lr_factor(99, 1000, 100) == pytest.approx(1.0)
    assert lr_factor(999, 1000, 100) == pytest.approx(0.05, abs=1e-4)  # cosine ends at 5 % of the peak
    wsd = [lr_factor(s, 1000, 100, "wsd", decay_fraction=0.2, final=0.0) for s in range(1000)]
    assert wsd[100:800] == [1.0] * 700  # held at the peak until the last 20 %
    assert all(a > b for a, b in zip(wsd[800:], wsd[801:])) and wsd[-1] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        lr_factor(500, 1000, 100, "step")


def test_rule_check_reads_renders():
    data = make_dataset(340, seed=5)
    assert scorer.rule_accuracy(data.images, data.labels) == {"colour": 1.0, "position": 1.0, "background": 1.0}


def test_evaluation_captions_are_balanced_and_fixed():
    pairs = evaluation_captions(512)
    assert len(pairs) == 512 and len({a for _, a in pairs}) == 340
    assert pairs == evaluation_captions(512)


def _pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array)


# ----------------------------------------------------------------------------------------------------------
# The committed model (workers/demo/pretrained)
# ----------------------------------------------------------------------------------------------------------

needs_pretrained = pytest.mark.skipif(not marker.is_demo_model(PRETRAINED), reason="no committed demo model")


@needs_pretrained
def test_pretrained_folder_is_small_and_has_no_pickles():
    files = [p for p in PRETRAINED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 1024 * 1024
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]


@needs_pretrained
def test_pretrained_scorer_reads_fresh_renders():
    judge = scorer.load_scorer(marker.scorer_folder(PRETRAINED))
    data = make_dataset(340, seed=4242)
    accuracy = judge.accuracy(data.images, data.labels)
    assert min(accuracy.values()) >= 0.99, accuracy


@needs_pretrained
def test_pretrained_model_draws_what_it_is_asked():
    """A small, fixed sample of the adherence measurement (the build measures 512 captions)."""
    pipe = load_pipeline(PRETRAINED, device="cpu")
    judge = scorer.load_scorer(marker.scorer_folder(PRETRAINED))
    report = measure_adherence(pipe, judge, n=32)
    recorded = marker.read_marker(PRETRAINED)["adherence"]["accuracy"]
    assert report.accuracy["colour"] >= 0.9 and report.accuracy["background"] >= 0.9, report.line()
    assert report.accuracy["all"] >= recorded["all"] - 0.25, report.line()


@needs_pretrained
def test_pretrained_model_draws_the_readme_prompt():
    pipe = load_pipeline(PRETRAINED, device="cpu")
    judge = scorer.load_scorer(marker.scorer_folder(PRETRAINED))
    engine = ApproxCEngine(pipe)
    items = [GenItem(prompt="a red circle at the top left on a gray background", seed=s) for s in range(4)]
    read = judge.predict([r.image for r in engine.generate(items)])
    target = Attributes("red", "circle", "top left", "gray")
    assert sum(a == target for a in read) >= 3, read
