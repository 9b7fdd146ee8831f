"""ApproxC engine: batched text-to-image generation that can resume from cached intermediate latents.

NIRVANA's approximate caching (DESIGN §2, §6): a request whose prompt is close to a cached prompt starts
from that prompt's latent at level K′ and runs only the denoising steps K′…N−1, conditioned on its own
prompt. This module is the numerical part only (no Django): the Celery worker loads a pipeline with
:func:`load_pipeline`, wraps it in :class:`ApproxCEngine` and calls :meth:`ApproxCEngine.generate` once
per claimed batch.

Definitions used throughout:

* **level K** of a run with N steps is the latent *before* denoising step index K, i.e. after K steps.
  Level 0 is the initial noise; resuming at K from a run's own level-K latent and running steps K…N−1
  reproduces that run exactly (DDIM and Euler are one-step, deterministic samplers).
* **captured latents**: while running, the engine copies the latent at each cache level L (> K′, < N)
  to the CPU, shape ``(1, C, H/8, W/8)``, in the pipeline's dtype, so that the worker can store them.

Choices (see docs/engine.md for the reasoning):

* Mixed K′ in one batch is supported by *late joining*: all requests of a batch share the same timestep
  schedule, so a request at K′ simply joins the running batch at step index K′ and every active sample
  is always at the same step. No per-sample timesteps are needed and the scheduler's own ``step`` is used.
  Requests that cannot share a schedule or a tensor shape (different N, size, or CFG on/off) run as
  separate sub-batches inside one ``generate`` call.
* Resumed runs contribute their later levels (> K′) by default (``capture_after_resume``).
* Only DDIM and Euler (``EulerDiscreteScheduler``) are accepted; multistep or stochastic schedulers
  (DPM-Solver++, PNDM, LMS, Heun, ancestral…) are refused because a cached latent does not carry their
  history, so a resumed run would not reproduce the full one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # local folders only; never reach for the model hub

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# Scheduler class name -> short name used in cache keys. Exact class names on purpose: a subclass may
# add state that a cached latent does not carry.
from scheduler.cache_keys import RESUMABLE_SCHEDULERS  # noqa: E402

DEFAULT_CACHE_LEVELS: tuple[int, ...] = (5, 10, 15, 20, 25)


# (step index, steps): called before each denoising step. It may return the positions (in the list given to
# `generate`) of items to drop from the batch — requests cancelled while it runs. Return the *same* object
# until the set changes: the loop compares identities, so an unchanged answer costs nothing per step.
StepHook = Callable[[int, int], "Collection[int] | None"]
# (level, latent batch, positions): called after each denoising step with the batch's current latent, whose
# rows are the items at positions[: len(latent)]. For a live preview; it must only keep a reference or copy.
LatentHook = Callable[[int, torch.Tensor, list[int]], None]

log = logging.getLogger(__name__)

# Latent channels → RGB: the linear approximation ComfyUI's and A1111's cheap previews use (a 4 × 3 matrix
# and, for SDXL, a bias), a few µs instead of a VAE decode. Rough colours and shapes, one pixel per latent cell.
LATENT_RGB_SD = (
    ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177)),
    (0.0, 0.0, 0.0),
)
LATENT_RGB_SDXL = (
    ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188)),
    (0.1084, -0.0175, -0.0011),
)


class UnsupportedSchedulerError(ValueError):
    """The pipeline's scheduler cannot resume exactly from a cached latent."""


# ----------------------------------------------------------------------------------------------------------
# Public data types
# ----------------------------------------------------------------------------------------------------------


@dataclass
class GenItem:
    """One request of a batch.

    ``start_level`` is K′: 0 for a full generation (``start_latent`` must be None), or K′ > 0 with the
    neighbour's cached latent at level K′ (shape ``(1, C, H/8, W/8)`` or ``(C, H/8, W/8)``, any device or
    dtype). ``width``/``height`` default to the model's native size. ``seed`` only matters at K′ = 0: the
    supported samplers add no noise after the initial latent, so a resumed run is fully determined by
    its start latent and its prompt.
    """

    prompt: str
    seed: int = 0
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int = 50
    guidance_scale: float = 7.5
    start_level: int = 0
    start_latent: torch.Tensor | None = None


@dataclass
class GenTimings:
    """Wall-clock seconds. encode/denoise/decode are those of the sub-batch the item ran in (shared by its
    members); ``batch_s`` is the whole ``generate`` call."""

    encode_s: float
    denoise_s: float
    decode_s: float
    batch_s: float
    batch_size: int  # size of the sub-batch the item ran in
    steps_run: int  # N − K′


@dataclass
class GenResult:
    image: Image.Image
    latents: dict[int, torch.Tensor]  # {level: CPU tensor (1, C, h, w)} for captured cache levels
    final_latent: torch.Tensor  # CPU tensor (1, C, h, w): the latent after step N−1, before the VAE
    start_level: int  # K′ this result was served at (provenance of its captured latents)
    timings: GenTimings


# ----------------------------------------------------------------------------------------------------------
# Loading and scheduler selection
# ----------------------------------------------------------------------------------------------------------


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_scheduler(pipe: Any, name: str) -> None:
    """Replace the pipeline's scheduler by DDIM (``"ddim"``) or Euler (``"euler"``), keeping its noise
    schedule. Real SD 1.x folders ship PNDM, which cannot be resumed; swap it with this."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    config = pipe.scheduler.config
    if name == "ddim":
        # DDIM's defaults clip the predicted x0 to [-1, 1] and set alpha_0 = 1, which suit pixel-space
        # models, not SD latents; SDXL's Euler config does not mention them, so set SD's values here.
        pipe.scheduler = DDIMScheduler.from_config(
            config, clip_sample=False, set_alpha_to_one=config.get("set_alpha_to_one", False)
        )
    elif name == "euler":
        pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    else:
        raise UnsupportedSchedulerError(f"scheduler {name!r} is not resumable; choose 'ddim' or 'euler'")


def load_pipeline(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    scheduler: str | None = None,
    variant: str | None = None,
) -> Any:
    """Load a local diffusers folder (SD 1.x or SDXL), offline.

    Defaults: CUDA and float16 when a GPU is present, else CPU and float32. ``scheduler`` ("ddim" or
    "euler") replaces the folder's scheduler. The safety checker is not loaded: the engine decodes
    latents itself and never calls it, so loading it would only cost memory.
    """
    from diffusers import DiffusionPipeline

    path = Path(path)
    device = torch.device(device) if device is not None else default_device()
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    kwargs: dict[str, Any] = {}
    index = json.loads((path / "model_index.json").read_text())
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if variant:
        kwargs["variant"] = variant
    pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype, local_files_only=True, **kwargs)
    pipe.to(device)
    # SDXL's VAE overflows in float16 (config.force_upcast); keep it in float32 once rather than
    # casting it back and forth on every decode as the stock pipeline does.
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    return pipe


def check_scheduler(scheduler: Any) -> str:
    """Short name of a resumable scheduler, or :class:`UnsupportedSchedulerError` with the reason."""
    name = type(scheduler).__name__
    if name in RESUMABLE_SCHEDULERS:
        return RESUMABLE_SCHEDULERS[name]
    if name.startswith("DPMSolver") or "Multistep" in name or hasattr(scheduler.config, "solver_order"):
        why = (
            f"{name} (DPM-Solver++/multistep) cannot be used with approximate caching: each update uses "
            "the model outputs of earlier steps, and a cached latent does not carry that history, so "
            "resuming at step K would not reproduce the full run"
        )
    else:
        why = (
            f"{name} is not supported for approximate caching: only one-step deterministic samplers "
            "resume exactly from a cached latent"
        )
    raise UnsupportedSchedulerError(
        f"{why}. Use DDIM or Euler (EulerDiscreteScheduler): load_pipeline(path, scheduler='ddim') or "
        "workers.engine.set_scheduler(pipe, 'ddim')."
    )


# ----------------------------------------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Cond:
    """Text conditioning for the items of one sub-batch, in sorted order (CFG: uncond, cond)."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    pooled: torch.Tensor | None = None  # SDXL only
    pooled_uncond: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None  # SDXL only, one row

    def select(self, rows: torch.Tensor) -> _Cond:
        """The conditioning of the items at ``rows`` (a LongTensor of member indices), in that order."""

        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, rows)

        return _Cond(take(self.cond), take(self.uncond), take(self.pooled), take(self.pooled_uncond), self.time_ids)

    def unet_kwargs(self, n: int) -> dict[str, Any]:
        """UNet keyword arguments for the first ``n`` (active) items."""
        cfg = self.uncond is not None
        embeds = torch.cat([self.uncond[:n], self.cond[:n]]) if cfg else self.cond[:n]
        kwargs: dict[str, Any] = {"encoder_hidden_states": embeds}
        if self.pooled is not None:
            pooled = torch.cat([self.pooled_uncond[:n], self.pooled[:n]]) if cfg else self.pooled[:n]
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": self.time_ids.expand(pooled.shape[0], -1)}
        return kwargs


@dataclass
class _Group:
    steps: int
    width: int
    height: int
    cfg: bool
    indices: list[int] = field(default_factory=list)  # positions in the caller's list, sorted by K′


class ApproxCEngine:
    """Batched generation with resume-from-level and capture of cache levels. Not thread-safe: one
    engine per worker process (Celery concurrency 1)."""

    def __init__(
        self, pipe: Any, cache_levels: tuple[int, ...] = DEFAULT_CACHE_LEVELS, capture_after_resume: bool = True
    ) -> None:
        self.pipe = pipe
        self.scheduler_name = check_scheduler(pipe.scheduler)
        self.cache_levels = tuple(sorted({int(k) for k in cache_levels}))
        if any(k <= 0 for k in self.cache_levels):
            raise ValueError(f"cache levels must be positive step counts, got {cache_levels}")
        self.capture_after_resume = capture_after_resume
        self.is_sdxl = hasattr(pipe, "text_encoder_2")
        self.device = pipe.unet.device
        self.dtype = pipe.unet.dtype
        self.vae_scale = int(pipe.vae_scale_factor)
        self.latent_channels = int(pipe.unet.config.in_channels)
        size = int(pipe.unet.config.sample_size) * self.vae_scale
        self.default_size = (size, size)  # (width, height)

    # -- public -------------------------------------------------------------------------------------------

    def latent_shape(self, width: int | None = None, height: int | None = None) -> tuple[int, int, int, int]:
        width, height = width or self.default_size[0], height or self.default_size[1]
        return (1, self.latent_channels, height // self.vae_scale, width // self.vae_scale)

    @torch.inference_mode()
    def latent_rgb(self, latent: torch.Tensor) -> torch.Tensor:
        """A live preview of a (b, C, h, w) latent: uint8 RGB (b, h, w, 3) on the CPU by the linear approximation
        (no VAE). A latent that is not SD/SDXL's 4 channels (the demo model's 8) shows its first three, rescaled."""
        z = latent.detach().float().cpu()
        if z.shape[1] == 4:
            weights, bias = LATENT_RGB_SDXL if self.is_sdxl else LATENT_RGB_SD
            rgb = torch.einsum("bchw,cr->bhwr", z, torch.tensor(weights)) + torch.tensor(bias)
        else:
            rgb = z[:, [c % z.shape[1] for c in range(3)]].permute(0, 2, 3, 1) / 2
        return ((rgb + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    @torch.inference_mode()
    def generate(
        self, items: list[GenItem], on_step: StepHook | None = None, on_latent: LatentHook | None = None
    ) -> list[GenResult | None]:
        """Run every item from its start level to the end; results in the order of ``items``.
        ``on_step(i, n)`` is called before denoising step i of n; an exception it raises ends the call
        (the worker's way to stop a batch whose lease it lost). Items whose positions it returns are
        dropped from the batch there (their rows and conditioning leave the tensors; the others go on)
        and their result is None; without drops every result is a GenResult."""
        t_call = time.perf_counter()
        groups = self._group(items)
        results: list[GenResult | None] = [None] * len(items)
        for group in groups:
            self._run_group(group, items, results, on_step, on_latent)
        batch_s = time.perf_counter() - t_call
        for r in results:
            if r is not None:
                r.timings.batch_s = batch_s
        return results

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C, h, w)`` → float images ``(B, 3, H, W)`` in [0, 1], on the CPU, float32."""
        vae = self.pipe.vae
        z = latents.to(vae.device, vae.dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
            std = torch.tensor(std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
            z = z * std / vae.config.scaling_factor + mean
        else:
            z = z / vae.config.scaling_factor
        image = vae.decode(z, return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1).float().cpu()

    # -- batching -----------------------------------------------------------------------------------------

    def _group(self, items: list[GenItem]) -> list[_Group]:
        """Validate items and split them into sub-batches that share a schedule and a tensor shape."""
        groups: dict[tuple, _Group] = {}
        for i, item in enumerate(items):
            width, height = self._validate(item)
            key = (item.steps, width, height, item.guidance_scale > 1.0)
            groups.setdefault(key, _Group(*key)).indices.append(i)
        for g in groups.values():
            g.indices.sort(key=lambda i: items[i].start_level)  # late joiners last (stable sort)
        return list(groups.values())

    def _validate(self, item: GenItem) -> tuple[int, int]:
        width, height = item.width or self.default_size[0], item.height or self.default_size[1]
        if width % self.vae_scale or height % self.vae_scale:
            raise ValueError(f"width and height must be multiples of {self.vae_scale}, got {width}x{height}")
        if item.steps < 1:
            raise ValueError(f"steps must be >= 1, got {item.steps}")
        if not 0 <= item.start_level < item.steps:
            raise ValueError(f"start_level must be in [0, steps), got {item.start_level} with {item.steps} steps")
        if item.start_level == 0:
            if item.start_latent is not None:
                raise ValueError("start_latent must be None at start_level 0 (the seed makes the noise)")
        else:
            expected = self.latent_shape(width, height)
            if item.start_latent is None:
                raise ValueError(f"start_level {item.start_level} needs a start_latent of shape {expected}")
            if tuple(item.start_latent.reshape(-1, *item.start_latent.shape[-3:]).shape) != expected:
                raise ValueError(f"start_latent has shape {tuple(item.start_latent.shape)}, expected {expected}")
        return width, height

    # -- one sub-batch ------------------------------------------------------------------------------------

    def _run_group(
        self,
        group: _Group,
        items: list[GenItem],
        results: list[GenResult | None],
        on_step: StepHook | None = None,
        on_latent: LatentHook | None = None,
    ) -> None:
        members = [items[i] for i in group.indices]
        self._sync()
        t0 = time.perf_counter()
        cond = self._encode(members, group)
        self._sync()
        t1 = time.perf_counter()
        final, captured, kept = self._denoise(members, group, cond, on_step, on_latent)
        self._sync()
        t2 = time.perf_counter()
        # One image at a time: VAE decoding is compute-bound, so batching gains little, while decoding
        # separately keeps memory flat at large sizes and makes each image independent of its batch.
        pixels = [self.decode(final[j : j + 1]) for j in range(len(kept))]
        t3 = time.perf_counter()
        for j, m in enumerate(kept):  # the members not dropped, in order; a dropped one's result stays None
            i, item = group.indices[m], members[m]
            timings = GenTimings(
                encode_s=t1 - t0,
                denoise_s=t2 - t1,
                decode_s=t3 - t2,
                batch_s=0.0,
                batch_size=len(members),
                steps_run=group.steps - item.start_level,
            )
            results[i] = GenResult(
                image=_to_pil(pixels[j][0]),
                latents=captured[j],
                final_latent=final[j : j + 1].to("cpu", copy=True),
                start_level=item.start_level,
                timings=timings,
            )

    def _encode(self, members: list[GenItem], group: _Group) -> _Cond:
        """Text conditioning, one text-encoder pass over the distinct strings of the sub-batch.

        Each item is conditioned the same way whatever else is in its batch: an empty negative prompt is
        encoded as "" (SD 1.x) or as zeros when the SDXL pipeline says ``force_zeros_for_empty_prompt`` —
        the stock pipelines' behaviour for a request without a negative prompt.
        """
        zero_uncond = self.is_sdxl and bool(getattr(self.pipe.config, "force_zeros_for_empty_prompt", False))
        texts = [m.prompt for m in members]
        if group.cfg:
            texts += [m.negative_prompt for m in members if m.negative_prompt or not zero_uncond]
        unique = list(dict.fromkeys(texts))
        row = {t: i for i, t in enumerate(unique)}
        if self.is_sdxl:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=unique, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        else:
            embeds, _ = self.pipe.encode_prompt(unique, self.device, 1, False)
            pooled = None
        embeds = embeds.to(self.dtype)

        def pick(table: torch.Tensor, strings: list[str], zero_empty: bool) -> torch.Tensor:
            rows = [table[row[s]] if (s or not zero_empty) else torch.zeros_like(table[0]) for s in strings]
            return torch.stack(rows)

        positives = [m.prompt for m in members]
        negatives = [m.negative_prompt for m in members]
        c = _Cond(
            cond=pick(embeds, positives, False), uncond=pick(embeds, negatives, zero_uncond) if group.cfg else None
        )
        if self.is_sdxl:
            pooled = pooled.to(self.dtype)
            c.pooled = pick(pooled, positives, False)
            c.pooled_uncond = pick(pooled, negatives, zero_uncond) if group.cfg else None
            # SDXL micro-conditioning (original size, crop top-left, target size); no cropping here.
            h, w = group.height, group.width
            c.time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=self.device, dtype=self.dtype)
        return c

    def _initial_latent(self, item: GenItem, group: _Group, init_noise_sigma: float) -> torch.Tensor:
        if item.start_level > 0:
            shape = self.latent_shape(group.width, group.height)
            return item.start_latent.reshape(shape).to(self.device, self.dtype)
        # Noise is drawn on the CPU in float32 from the item's own generator, so a seed gives the same
        # initial latent on any device, dtype and batch composition.
        gen = torch.Generator(device="cpu").manual_seed(int(item.seed))
        noise = torch.randn(self.latent_shape(group.width, group.height), generator=gen, dtype=torch.float32)
        # Euler scales the unit noise to its largest sigma; DDIM's init_noise_sigma is 1. Only at K′ = 0:
        # a cached latent is already on the scheduler's scale for its level.
        return (noise * init_noise_sigma).to(self.device, self.dtype)

    def _scheduler(self, n_steps: int, begin: int) -> Any:
        """A fresh scheduler whose first step is step index ``begin``. Fresh per sub-batch: its step index is
        state, and the pipeline's shared instance must not carry one batch's position into the next."""
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(n_steps, device=self.device)
        # Euler tracks its position in the sigma table; start it at the first active step index rather
        # than letting it search the timestep (which is ambiguous when starting mid-schedule).
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        return scheduler

    def _denoise(
        self,
        members: list[GenItem],
        group: _Group,
        cond: _Cond,
        on_step: StepHook | None = None,
        on_latent: LatentHook | None = None,
    ) -> tuple[torch.Tensor | None, list[dict[int, torch.Tensor]], list[int]]:
        """The denoising loop. ``members`` are sorted by K′; item j joins at step index K′_j.

        Returns the final latents and captured levels of the members that were not dropped, and those
        members' indices (in ``members`` order; all of them unless ``on_step`` dropped some).
        """
        pipe, n_steps = self.pipe, group.steps
        starts = [m.start_level for m in members]
        scheduler = self._scheduler(n_steps, starts[0])
        timesteps = scheduler.timesteps
        step_values = timesteps.tolist()  # python scalars for the scheduler: no device sync per step
        init_sigma = float(scheduler.init_noise_sigma)
        pending = [self._initial_latent(m, group, init_sigma) for m in members]
        guidance = torch.tensor([m.guidance_scale for m in members], device=self.device, dtype=self.dtype).view(
            -1, 1, 1, 1
        )
        capture = {k for k in self.cache_levels if k < n_steps}
        captured: list[dict[int, torch.Tensor]] = [{} for _ in members]
        kept = list(range(len(members)))  # member index of each row of x / cond / guidance
        positions = [group.indices[j] for j in kept]  # the same rows' positions in the caller's list
        handled: Collection[int] | None = None  # the last drop set acted on (compared by identity)

        x: torch.Tensor | None = None
        n_active = 0
        i = starts[0]
        while i < n_steps:
            if on_step is not None:
                drop = on_step(i, n_steps)
                if drop and drop is not handled:
                    handled = drop
                    stay = [r for r, p in enumerate(positions) if p not in drop]
                    if len(stay) < len(kept):
                        log.info(
                            "dropping %d of %d items before step %d of %d", len(kept) - len(stay), len(kept), i, n_steps
                        )
                        rows = torch.tensor(stay, device=self.device, dtype=torch.long)
                        active_stay = [r for r in stay if r < n_active]
                        x = x.index_select(0, rows[: len(active_stay)]) if active_stay else None
                        n_active = len(active_stay)
                        cond, guidance = cond.select(rows), guidance.index_select(0, rows)
                        kept, positions = [kept[r] for r in stay], [positions[r] for r in stay]
                        starts, pending = [starts[r] for r in stay], [pending[r] for r in stay]
                        captured = [captured[r] for r in stay]
                        if not kept:  # every item of the sub-batch was dropped: stop now
                            return None, [], []
                        if n_active:
                            unet_kwargs, g = cond.unet_kwargs(n_active), guidance[:n_active]
                        elif starts[0] > i:  # nothing running until the next late joiner: skip ahead
                            i = starts[0]
                            scheduler = self._scheduler(n_steps, i)
                            continue
            # Late join: items whose start level is i enter the batch now. Conditioning is re-sliced only
            # here, not on every step.
            n_join = n_active
            while n_join < len(kept) and starts[n_join] <= i:
                n_join += 1
            if n_join != n_active:
                x = torch.cat(([x] if x is not None else []) + pending[n_active:n_join])
                n_active = n_join
                unet_kwargs = cond.unet_kwargs(n_active)
                g = guidance[:n_active]

            t = timesteps[i]
            model_in = torch.cat([x, x]) if group.cfg else x
            model_in = scheduler.scale_model_input(model_in, step_values[i])
            noise_pred = pipe.unet(model_in, t, return_dict=False, **unet_kwargs)[0]
            if group.cfg:
                noise_uncond, noise_text = noise_pred.chunk(2)
                noise_pred = noise_uncond + g * (noise_text - noise_uncond)
            x = scheduler.step(noise_pred, step_values[i], x, return_dict=False)[0]

            level = i + 1  # x is now the latent after i + 1 steps
            if level in capture:
                for j in range(n_active):
                    # Items that joined at this very level would only copy their own start latent.
                    if starts[j] < level and (starts[j] == 0 or self.capture_after_resume):
                        captured[j][level] = x[j : j + 1].to("cpu", copy=True)
            if on_latent is not None:
                on_latent(level, x, positions)
            i += 1
        return x, captured, kept

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] → RGB PIL image (rounding as diffusers' ``numpy_to_pil``)."""
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)
