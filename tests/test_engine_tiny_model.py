"""The tiny random pipeline builder: offline, real CLIP vocabulary, loads like a real model."""

from __future__ import annotations

import json

import pytest
import torch

from scheduler import clip_tokenizer
from workers import tiny_model

# One intra-op torch thread for this module (tests/conftest.py explains why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tokenizer_has_real_clip_ids():
    tok = clip_tokenizer.build_clip_tokenizer()
    assert len(tok) == clip_tokenizer.CLIP_VOCAB_SIZE == 49408
    assert tok.model_max_length == 77
    # Ids of OpenAI CLIP (and of SD's tokenizer on the model hub) for this sentence.
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    ids = tok("x " * 200, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[-1] == 49407


@pytest.mark.parametrize(
    "kind,scheduler,cls,sched_cls",
    [
        ("sd", "ddim", "StableDiffusionPipeline", "DDIMScheduler"),
        ("sdxl", "euler", "StableDiffusionXLPipeline", "EulerDiscreteScheduler"),
    ],
)
def test_cli_builds_a_loadable_pipeline(tmp_path, capsys, kind, scheduler, cls, sched_cls):
    from diffusers import DiffusionPipeline

    out = tmp_path / kind
    tiny_model.main([str(out), "--kind", kind, "--scheduler", scheduler])
    assert str(out) in capsys.readouterr().out
    assert tiny_model.is_tiny_random_model(out) and not tiny_model.is_tiny_random_model(tmp_path)
    marker = json.loads((out / tiny_model.MARKER_FILE).read_text())
    assert marker["tiny_random_model"] is True and marker["kind"] == kind

    pipe = DiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert type(pipe).__name__ == cls and type(pipe.scheduler).__name__ == sched_cls
    assert pipe.tokenizer("a photo of a cat").input_ids[2] == 1125
    if kind == "sdxl":
        assert pipe.tokenizer_2.pad_token == "!"
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a photo of a cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_same_seed_same_weights(tmp_path):
    a = tiny_model.build_pipeline("sd", "ddim", seed=1).unet.conv_in.weight
    b = tiny_model.build_pipeline("sd", "ddim", seed=1).unet.conv_in.weight
    assert torch.equal(a, b)


def test_unknown_kind_or_scheduler_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        tiny_model.build_tiny_pipeline(tmp_path, kind="sd3")
    with pytest.raises(ValueError, match="scheduler"):
        tiny_model.build_tiny_pipeline(tmp_path, scheduler="dpm")
