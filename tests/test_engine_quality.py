"""Fidelity (SSIM/PSNR) and CLIP-score-relative-to-K=0 of ApproxC images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scheduler.clip_tokenizer import CLIP_VOCAB_SIZE, build_clip_tokenizer
from workers import image_fidelity

PROMPT = "a lighthouse at dawn"


# One intra-op torch thread for this module (tests/conftest.py explains why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8))


def test_fidelity_identical_and_different():
    a = _image(0)
    same = image_fidelity.fidelity(a, a.copy())
    assert same.ssim == pytest.approx(1.0) and same.psnr == image_fidelity.PSNR_CAP_DB
    arr = np.asarray(a).astype(int)
    slightly = Image.fromarray(np.clip(arr + 3, 0, 255).astype(np.uint8))
    near, far = image_fidelity.fidelity(slightly, a), image_fidelity.fidelity(_image(1), a)
    assert 1.0 > near.ssim > far.ssim and image_fidelity.PSNR_CAP_DB > near.psnr > far.psnr
    assert near.psnr == pytest.approx(10 * np.log10(255**2 / np.mean((np.clip(arr + 3, 0, 255) - arr) ** 2)))
    assert image_fidelity.fidelity(_image(0, 6), _image(1, 6)).psnr > 0  # tiny images: SSIM window shrinks
    with pytest.raises(ValueError, match="size"):
        image_fidelity.fidelity(_image(0, 64), _image(0, 32))


def test_clip_score_skipped_without_model(tmp_path):
    assert image_fidelity.clip_score_ratio(PROMPT, _image(0), _image(1), None) is None
    assert image_fidelity.clip_score_ratio(PROMPT, _image(0), _image(1), tmp_path / "missing") is None


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIP model folder (the layout of a saved openai/clip-vit-* model)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=build_clip_tokenizer(),
    )
    # Random weights may give a negative cosine (CLIPScore 0); flip the text projection if so, so that
    # the ratio is defined for the reference image.
    inputs = processor(text=[PROMPT], images=[_image(0)], return_tensors="pt", padding="max_length", max_length=77)
    with torch.no_grad():
        text = model.get_text_features(input_ids=inputs["input_ids"]).pooler_output
        image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        if torch.nn.functional.cosine_similarity(text, image).item() < 0:
            model.text_projection.weight.neg_()
    out = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_clip_score_ratio_with_local_model(tiny_clip_dir):
    scores = image_fidelity.clip_scores(PROMPT, [_image(0), _image(1)], tiny_clip_dir)
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores) and scores[0] > 0
    assert image_fidelity.clip_score_ratio(PROMPT, _image(0), _image(0), tiny_clip_dir) == pytest.approx(1.0)
    ratio = image_fidelity.clip_score_ratio(PROMPT, _image(1), _image(0), tiny_clip_dir)
    assert ratio == pytest.approx(scores[1] / scores[0])
