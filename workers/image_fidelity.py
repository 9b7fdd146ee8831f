"""Image quality of an ApproxC result against the full generation of the same prompt and seed.

* Fidelity (always available, offline): SSIM and PSNR from scikit-image, ApproxC image vs the K = 0
  image of the same prompt and seed. 1.0 / high dB = identical.
* CLIP score relative to K = 0 (only with a local CLIP model folder, e.g. a saved
  ``openai/clip-vit-large-patch14``): CLIPScore(prompt, approx) / CLIPScore(prompt, full). Returns None
  when no folder is configured, so callers can skip it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# PSNR of identical images is infinite; report this instead so means and JSON stay finite.
PSNR_CAP_DB = 100.0


@dataclass(frozen=True)
class Fidelity:
    ssim: float  # structural similarity in [-1, 1]; 1 = identical
    psnr: float  # dB, capped at PSNR_CAP_DB


def _rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels, got {array.dtype}")
    return array


def fidelity(approx: Image.Image | np.ndarray, full: Image.Image | np.ndarray) -> Fidelity:
    """SSIM and PSNR of ``approx`` against the reference ``full`` (same size, 8-bit RGB)."""
    a, b = _rgb(approx), _rgb(full)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    # SSIM's default 7x7 window must fit; tiny images (thumbnails) get the largest odd window that does.
    win = min(7, min(a.shape[:2]) - (1 - min(a.shape[:2]) % 2))
    ssim = float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win))
    if np.array_equal(a, b):
        psnr = PSNR_CAP_DB
    else:
        psnr = min(float(peak_signal_noise_ratio(b, a, data_range=255)), PSNR_CAP_DB)
    return Fidelity(ssim=ssim, psnr=psnr)


# ----------------------------------------------------------------------------------------------------------
# CLIP score
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _load_clip(model_dir: str) -> tuple[Any, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(model_dir, local_files_only=True)
    return model, processor


def clip_scores(prompt: str, images: list[Image.Image], model_dir: str | Path) -> list[float]:
    """CLIPScore (Hessel et al.): 100 · max(cos(text, image), 0) for each image."""
    import torch

    model, processor = _load_clip(str(model_dir))
    inputs = processor(
        text=[prompt],
        images=[im.convert("RGB") for im in images],
        return_tensors="pt",
        padding="max_length",
        truncation=True,
        max_length=77,
    )
    with torch.inference_mode():
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        image = model.get_image_features(pixel_values=inputs["pixel_values"])
    text = _as_tensor(text)
    image = _as_tensor(image)
    cos = torch.nn.functional.cosine_similarity(image, text.expand_as(image), dim=-1)
    return [100.0 * max(float(c), 0.0) for c in cos]


def _as_tensor(features: Any) -> Any:
    # transformers 5 may return a model output object rather than a bare tensor from get_*_features.
    if hasattr(features, "pooler_output") and not hasattr(features, "shape"):
        return features.pooler_output
    return features


def clip_score_ratio(prompt: str, approx: Image.Image, full: Image.Image, model_dir: str | Path | None) -> float | None:
    """CLIPScore of the ApproxC image relative to the K = 0 image of the same prompt and seed.

    None when ``model_dir`` is None or not a folder (no local CLIP weights: skip gracefully), or when
    the full image scores 0 (ratio undefined).
    """
    if model_dir is None or not Path(model_dir).is_dir():
        return None
    approx_score, full_score = clip_scores(prompt, [approx, full], model_dir)
    if full_score <= 0.0 or math.isnan(full_score):
        return None
    return approx_score / full_score
