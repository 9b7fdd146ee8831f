"""Training the demo model on the CPU: a short VAE phase, then the UNet and the text encoder jointly on
the VAE's latents.

Everything is seeded and runs a fixed number of iterations (never a time box: time-boxed training is not
reproducible on a loaded machine). The two phases:

1. **VAE** (``train_vae``): a deterministic autoencoder (the posterior mean, no KL sampling: sampling gave
   only blobs in the CPU budget), with the loss on foreground pixels weighted up (the shape is a small part
   of the image, and it is what matters). Gaussian noise on the latent while training makes the decoder
   forgiving of the diffusion model's small errors. Afterwards the latents are centred and scaled to unit
   variance by folding their mean into the VAE's own biases and their scale into ``scaling_factor``, so the
   stock pipeline needs nothing extra.
2. **Diffusion** (``DiffusionTrainer``): renders are encoded once; each step draws a batch of latents, a
   random paraphrase of each one's caption (dropped to "" with ``caption_dropout``, for classifier-free
   guidance), a uniform timestep, and regresses v with a min-SNR-style clamp on the weight. AdamW with
   warm-up and cosine decay; an exponential moving average (EMA) of the weights is what gets saved.

Django-free.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from workers.demo.architecture import (
    ArchitectureConfig,
    assemble_pipeline,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
)
from workers.demo.world import BACKGROUNDS, RGB, Attributes, all_attributes, canonical_caption, make_dataset, paraphrase

Progress = Callable[[str, int, int, dict], None]  # (phase, step, total, values)


@dataclass(frozen=True)
class TrainingConfig:
    """Every number that decides the trained weights (with the seed)."""

    name: str = "default"
    arch: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    seed: int = 0
    # VAE phase
    vae_steps: int = 1000
    vae_batch: int = 64
    vae_lr: float = 3e-3
    vae_foreground_weight: float = 8.0
    vae_latent_noise: float = 0.05
    vae_images: int = 340 * 16
    # Diffusion phase
    latent_pool: int = 340 * 24  # renders encoded once for the diffusion phase
    captions_per_combo: int = 48  # paraphrases per attribute combination, tokenised once
    unet_steps: int = 3000
    batch: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    # "cosine": cosine from the peak to ``final_lr_factor`` × peak over the whole run. "wsd" (warm-up–stable–
    # decay): the peak held until the last ``decay_fraction`` of the run, then a linear decay to
    # ``final_lr_factor`` × peak — the shape keeps learning only while the rate is high (docs/demo_model.md).
    lr_schedule: str = "cosine"
    decay_fraction: float = 0.2
    final_lr_factor: float = 0.05
    weight_decay: float = 1e-2
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    foreground_loss_weight: float = 0.0  # extra loss weight on latent cells under the shape (0: none)
    checkpoints: tuple[int, ...] = ()  # steps (besides the last) at which the adherence curve is measured

    def to_json(self) -> dict:
        out = asdict(self)
        out["arch"] = self.arch.to_json()
        return out


# ----------------------------------------------------------------------------------------------------------
# Phase 1: the VAE
# ----------------------------------------------------------------------------------------------------------


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [-1, 1], the VAE's range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def foreground_mask(images: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """(N, 1, H, W) 1 where a pixel differs from its image's (known) background colour."""
    bg = torch.tensor([RGB[BACKGROUNDS[b]] for b in labels[:, 3]], dtype=torch.float32) / 127.5 - 1.0
    distance = (images - bg.view(-1, 3, 1, 1)).abs().sum(1, keepdim=True)
    return (distance > 0.15).float()


def train_vae(cfg: TrainingConfig, progress: Progress | None = None):
    """Phase 1: a deterministic, foreground-weighted autoencoder. Returns the VAE (eval mode), its latents
    centred and scaled (see :func:`normalise_latents`)."""
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.arch)
    data = make_dataset(cfg.vae_images, seed=cfg.seed + 1, paraphrases=False)
    x_all = images_to_tensor(data.images)
    w_all = 1.0 + cfg.vae_foreground_weight * foreground_mask(x_all, data.labels)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.vae_lr, total_steps=cfg.vae_steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    vae.train()
    for step in range(cfg.vae_steps):
        idx = torch.randint(0, x_all.shape[0], (cfg.vae_batch,), generator=gen)
        x, w = x_all[idx], w_all[idx]
        z = vae.encode(x).latent_dist.mean
        z_noisy = z + cfg.vae_latent_noise * z.detach().std() * torch.randn(z.shape, generator=gen)
        recon = vae.decode(z_noisy).sample
        loss = (w * (recon - x).abs()).mean() + 0.5 * (w * (recon - x) ** 2).mean() + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress("vae", step, cfg.vae_steps, {"loss": loss.item()})
    vae.eval()
    normalise_latents(vae, x_all)
    return vae


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means × scaling_factor: the latents the UNet is trained on."""
    out = [vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, images.shape[0], batch)]
    return torch.cat(out) * vae.config.scaling_factor


@torch.no_grad()
def normalise_latents(vae, images: torch.Tensor) -> None:
    """Centre the latents (per channel) inside the VAE and set ``scaling_factor`` to 1/std.

    The mean is folded into the encoder's ``quant_conv`` bias (subtracted) and the decoder's
    ``post_quant_conv`` bias (added back through its weights), so encode/decode stay exact and the stock
    pipeline, which only divides by ``scaling_factor``, needs no latents_mean."""
    vae.register_to_config(scaling_factor=1.0)
    z = encode(vae, images)
    mean = z.mean(dim=(0, 2, 3))
    channels = mean.numel()
    vae.quant_conv.bias[:channels] -= mean
    weight = vae.post_quant_conv.weight[:, :, 0, 0]  # (out, in)
    vae.post_quant_conv.bias += weight @ mean
    std = float(encode(vae, images).std())
    vae.register_to_config(scaling_factor=1.0 / std)


@torch.no_grad()
def reconstruct(vae, images: np.ndarray) -> np.ndarray:
    """uint8 renders → uint8 VAE reconstructions (encode mean, decode)."""
    x = images_to_tensor(images)
    z = encode(vae, x) / vae.config.scaling_factor
    out = torch.cat([vae.decode(z[i : i + 256]).sample for i in range(0, z.shape[0], 256)])
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------------------------------------
# Phase 2: UNet + text encoder
# ----------------------------------------------------------------------------------------------------------


def caption_bank(per_combo: int, seed: int) -> tuple[list[Attributes], torch.Tensor]:
    """For each of the 340 combinations: its canonical caption and ``per_combo - 1`` random paraphrases,
    tokenised as the pipeline does (padded to 77). Returns (combinations, ids (340, per_combo, 77))."""
    rng = random.Random(seed)
    tokenizer = build_tokenizer()
    combos = all_attributes()
    captions = [[canonical_caption(a)] + [paraphrase(a, rng) for _ in range(per_combo - 1)] for a in combos]
    flat = [c for row in captions for c in row]
    ids = tokenizer(flat, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    return combos, torch.tensor(ids, dtype=torch.long).view(len(combos), per_combo, -1)


def empty_caption_ids() -> torch.Tensor:
    tokenizer = build_tokenizer()
    return torch.tensor(tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length).input_ids)


class EMA:
    """Exponential moving average of a module's parameters, with the usual warm-up of the decay."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), module.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)


def lr_factor(
    step: int, total: int, warmup: int, schedule: str = "cosine", decay_fraction: float = 0.2, final: float = 0.05
) -> float:
    """The learning rate at ``step`` as a fraction of the peak: linear warm-up, then either a cosine decay
    to ``final`` over the rest of the run, or (``"wsd"``) the peak held and a linear decay to ``final``
    over the last ``decay_fraction`` of the run."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * total))
        into_decay = step - (total - decay_steps)
        return 1.0 if into_decay < 0 else 1.0 - (1 - final) * min(1.0, (into_decay + 1) / decay_steps)
    raise ValueError(f"unknown lr_schedule {schedule!r} (cosine or wsd)")


class DiffusionTrainer:
    """Phase 2, steppable so that the caller can measure adherence at checkpoints in between."""

    def __init__(self, cfg: TrainingConfig, vae):
        self.cfg = cfg
        torch.manual_seed(cfg.seed + 3)
        self.vae = vae
        self.scheduler = build_scheduler()
        self.text_encoder = build_text_encoder(cfg.arch)
        self.unet = build_unet(cfg.arch)
        data = make_dataset(cfg.latent_pool, seed=cfg.seed + 4, paraphrases=False)
        pixels = images_to_tensor(data.images)
        self.latents = encode(vae, pixels)
        # Latent cells the shape touches, optionally weighted up (the shape is the hard attribute). Off by
        # default: it moved nothing in the ablation (docs/demo_model.md).
        side = self.latents.shape[-1]
        touched = F.adaptive_max_pool2d(foreground_mask(pixels, data.labels), side)
        self.cell_weight = 1.0 + cfg.foreground_loss_weight * touched
        combos, self.caption_ids = caption_bank(cfg.captions_per_combo, cfg.seed + 5)
        index_of = {a: i for i, a in enumerate(combos)}
        self.combo_of = torch.tensor([index_of[a] for a in data.attributes()], dtype=torch.long)
        self.empty_ids = empty_caption_ids()
        alphas = self.scheduler.alphas_cumprod.float()
        self.sqrt_a, self.sqrt_1ma = alphas.sqrt(), (1 - alphas).sqrt()
        snr = alphas / (1 - alphas).clamp(min=1e-12)
        # min-SNR-γ for v-prediction, with the weight capped at 1 where SNR < γ - 1 (incl. SNR 0, where
        # the plain min-SNR weight would vanish and the first, layout-deciding step would not be trained).
        self.loss_weight = (cfg.snr_gamma / (snr + 1)).clamp(max=1.0)
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema_unet = EMA(self.unet, cfg.ema_decay)
        self.ema_text = EMA(self.text_encoder, cfg.ema_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed + 6)
        self.step_count = 0

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, gen = self.cfg, self.gen
        idx = torch.randint(0, self.latents.shape[0], (cfg.batch,), generator=gen)
        which = torch.randint(0, self.caption_ids.shape[1], (cfg.batch,), generator=gen)
        ids = self.caption_ids[self.combo_of[idx], which]
        drop = torch.rand(cfg.batch, generator=gen) < cfg.caption_dropout
        ids[drop] = self.empty_ids
        return self.latents[idx], ids, self.cell_weight[idx]

    def step(self) -> float:
        """One optimisation step; returns the loss."""
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(
                self.step_count,
                cfg.unet_steps,
                cfg.warmup_steps,
                cfg.lr_schedule,
                cfg.decay_fraction,
                cfg.final_lr_factor,
            )
        x0, ids, cell_weight = self._batch()
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=self.gen)
        a, s = self.sqrt_a[t].view(-1, 1, 1, 1), self.sqrt_1ma[t].view(-1, 1, 1, 1)
        x_t = a * x0 + s * noise
        target = a * noise - s * x0  # v
        states = self.text_encoder(ids)[0]
        pred = self.unet(x_t, t, encoder_hidden_states=states).sample
        per_item = (cell_weight * (pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (self.loss_weight[t] * per_item).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.unet.parameters()) + list(self.text_encoder.parameters()), 1.0)
        self.opt.step()
        self.ema_unet.update(self.unet)
        self.ema_text.update(self.text_encoder)
        self.step_count += 1
        return loss.item()

    def run(self, until: int, progress: Progress | None = None) -> Iterator[int]:
        """Train up to step ``until``; yields after every step (so the caller can stop at checkpoints)."""
        while self.step_count < until:
            loss = self.step()
            if progress is not None:
                progress("unet", self.step_count - 1, self.cfg.unet_steps, {"loss": loss})
            yield self.step_count

    def ema_pipeline(self):
        """The EMA weights as a stock pipeline (copies: training can go on afterwards)."""
        return assemble_pipeline(
            copy.deepcopy(self.vae), copy.deepcopy(self.ema_text.model), copy.deepcopy(self.ema_unet.model)
        )
