"""The demo model's parts, all stock diffusers/transformers classes so that the saved folder is a plain
``StableDiffusionPipeline`` that loads with ``DiffusionPipeline.from_pretrained(folder)``.

Sizes are chosen for a 2-core CPU and a ≤ 20 MB folder (docs/demo_model.md explains each choice):

* VAE: ``AutoencoderKL`` with three blocks, so its scale factor is 2**(3-1) = 4: 32×32 images ↔ 8×8×4
  latents. No attention in its mid block (it buys nothing at this size and costs time). Trained as a
  deterministic autoencoder (the posterior mean), see ``training.train_vae``.
* Text encoder: a 2-layer ``CLIPTextModel`` with the real CLIP BPE vocabulary (49408 ids, so the token
  embedding is most of its size: keep ``hidden`` small).
* UNet: ``UNet2DConditionModel`` whose down path goes 8×8 → 4×4 → 2×2. At 2×2 every cell sees the whole
  image and, through the convolutions' zero padding, knows which corner it is: that is what lets a stock
  UNet (no positional encoding for image tokens) learn *where* to draw. Cross-attention sits at 4×4 and
  2×2 (and in the mid block); the 8×8 level is convolutions only (attention there tripled the cost).
* Scheduler: DDIM, v-prediction, SD's ``scaled_linear`` betas rescaled to zero terminal SNR, trailing
  timestep spacing: pure noise at the first step, so the initial noise's low frequencies cannot fix the
  background or layout against the prompt.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from scheduler.clip_tokenizer import CLIP_MAX_LENGTH, CLIP_VOCAB_SIZE, build_clip_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class ArchitectureConfig:
    """Sizes of the three networks."""

    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 8
    text_hidden: int = 32
    text_layers: int = 2
    text_heads: int = 2
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_heads: int = 8  # diffusers' ``attention_head_dim`` is the number of heads here
    unet_layers_per_block: int = 1
    unet_top_attention: bool = False  # cross-attention at the full latent resolution too (costs ~+50 %)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_scale_factor

    def to_json(self) -> dict:
        return asdict(self)


# SD's beta range, rescaled to zero terminal SNR; v-prediction (ε-prediction is undefined at SNR 0).
SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    rescale_betas_zero_snr=True,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    steps_offset=1,  # unused by trailing spacing; 1 keeps diffusers from warning
)


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False)


def build_vae(cfg: ArchitectureConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=cfg.latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        block_out_channels=cfg.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        mid_block_add_attention=False,
        sample_size=cfg.image_size,
    )


def build_text_encoder(cfg: ArchitectureConfig):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=cfg.text_hidden,
        bos_token_id=CLIP_VOCAB_SIZE - 2,
        eos_token_id=CLIP_VOCAB_SIZE - 1,
        pad_token_id=CLIP_VOCAB_SIZE - 1,
        hidden_act="quick_gelu",
    )
    return CLIPTextModel(config)


def build_unet(cfg: ArchitectureConfig):
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    top_down, top_up = (
        ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") if cfg.unet_top_attention else ("DownBlock2D", "UpBlock2D")
    )
    down = (top_down,) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + (top_up,)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        layers_per_block=cfg.unet_layers_per_block,
        block_out_channels=cfg.unet_channels,
        norm_num_groups=16,
        attention_head_dim=cfg.unet_heads,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cfg.text_hidden,
    )


def build_tokenizer():
    return build_clip_tokenizer()


def assemble_pipeline(vae, text_encoder, unet, scheduler=None):
    """The parts as a stock ``StableDiffusionPipeline`` (no safety checker: nothing to check here)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_tokenizer(),
        unet=unet,
        scheduler=scheduler if scheduler is not None else build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
