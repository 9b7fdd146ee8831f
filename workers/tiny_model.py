"""Build a tiny, randomly initialised Stable Diffusion pipeline offline.

The project must run (and be tested) on machines with no model weights and no model hub. This module
builds an SD 1.x or SDXL pipeline with the real architecture classes, a real CLIP BPE tokenizer (the
vocabulary bundled inside ``open-clip-torch``) and random weights, and saves it with ``save_pretrained``
so that workers load it with ``DiffusionPipeline.from_pretrained(folder)`` exactly like a real model.

Images from it are noise-like. The folder carries ``tiny_random_model.json`` so the app can label them
(see :func:`is_tiny_random_model`).

CLI: ``python -m workers.tiny_model OUT_DIR [--kind sd|sdxl] [--scheduler ddim|euler] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from scheduler.clip_tokenizer import CLIP_MAX_LENGTH, CLIP_VOCAB_SIZE, build_clip_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MARKER_FILE = "tiny_random_model.json"
KINDS = ("sd", "sdxl")
SCHEDULERS = ("ddim", "euler")

# Image size the tiny models are built for: 64x64 pixels -> 8x8 latents (VAE scale factor 8, like real SD).
IMAGE_SIZE = 64
LATENT_SIZE = IMAGE_SIZE // 8


# ----------------------------------------------------------------------------------------------------------
# Model components
# ----------------------------------------------------------------------------------------------------------

# SD 1.x / SDXL noise schedule, shared by both schedulers.
_SCHEDULE = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    timestep_spacing="leading",
)


def build_scheduler(name: str):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    if name == "ddim":
        return DDIMScheduler(**_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    if name == "euler":
        return EulerDiscreteScheduler(**_SCHEDULE)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


def _text_encoder(hidden: int, projection: bool, pad_token_id: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=hidden,
        # Real CLIP ids, so the pooled output is taken at the first <|endoftext|> as in real models.
        bos_token_id=CLIP_VOCAB_SIZE - 2,
        eos_token_id=CLIP_VOCAB_SIZE - 1,
        pad_token_id=pad_token_id,
        hidden_act="quick_gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae():
    from diffusers import AutoencoderKL

    # Four blocks -> VAE scale factor 8, as in real SD, so 64x64 images have 8x8 latents.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=IMAGE_SIZE,
    )


def _unet(cross_attention_dim: int, sdxl: bool, text_embeds_dim: int = 0):
    from diffusers import UNet2DConditionModel

    extra = {}
    if sdxl:
        # SDXL micro-conditioning: 6 time ids, each embedded with addition_time_embed_dim, plus the
        # pooled text embedding of the second text encoder.
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + text_embeds_dim,
            use_linear_projection=True,
        )
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=32,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        **extra,
    )


def build_pipeline(kind: str = "sd", scheduler: str = "ddim", seed: int = 0):
    """The tiny pipeline object, in memory (float32, CPU)."""
    import torch  # heavy: only when a model is built
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    torch.manual_seed(seed)  # random init, but reproducible
    sched = build_scheduler(scheduler)
    if kind == "sd":
        return StableDiffusionPipeline(
            vae=_vae(),
            text_encoder=_text_encoder(32, False, CLIP_VOCAB_SIZE - 1),
            tokenizer=build_clip_tokenizer(),
            unet=_unet(32, sdxl=False),
            scheduler=sched,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
    # SDXL: the UNet cross-attends to both encoders' hidden states concatenated (32 + 32).
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(32, False, CLIP_VOCAB_SIZE - 1),
        text_encoder_2=_text_encoder(32, True, 0),
        tokenizer=build_clip_tokenizer(),
        tokenizer_2=build_clip_tokenizer(pad_token="!"),
        unet=_unet(64, sdxl=True, text_embeds_dim=32),
        scheduler=sched,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def build_tiny_pipeline(out_dir: Path, kind: str = "sd", scheduler: str = "ddim", seed: int = 0) -> Path:
    """Build a tiny random SD 1.x (``kind="sd"``) or SDXL (``kind="sdxl"``) pipeline and save it.

    Returns ``out_dir``, loadable with ``DiffusionPipeline.from_pretrained(out_dir)``. Offline only.
    """
    out_dir = Path(out_dir)
    pipe = build_pipeline(kind, scheduler, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir)
    marker = {
        "tiny_random_model": True,
        "kind": kind,
        "scheduler": scheduler,
        "seed": seed,
        "image_size": IMAGE_SIZE,
        "note": "randomly initialised weights; images are noise-like by design",
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir


def is_tiny_random_model(model_dir: Path | str) -> bool:
    """True when ``model_dir`` was built by :func:`build_tiny_pipeline` (its images must be labelled)."""
    return (Path(model_dir) / MARKER_FILE).is_file()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a tiny random Stable Diffusion pipeline offline.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--kind", choices=KINDS, default="sd")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="ddim")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_pipeline(args.out_dir, args.kind, args.scheduler, args.seed)
    print(f"tiny random {args.kind} pipeline ({args.scheduler}) saved to {path}")


if __name__ == "__main__":
    main()
