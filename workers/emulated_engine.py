"""An engine that pretends to be a GPU: it sleeps L(K′, b) from a latency profile.

With ENGINE=emulated a paper-scale cluster (16 SDXL workers on A100s) runs on a CPU machine:
everything else stays real (database, queues, embeddings, cache lookup and growth, plan,
batching). Images are placeholders clearly labelled "emulated"; captured latents are small
zero tensors, so the cache index grows exactly as it would (its quality is the yardstick
Q(s, K′), not these pixels).

For proteus_models a worker holds one model variant at a time: its engine is an EmulatedEngine over that
variant's one-level profile (`scheduler.model_variants.held_variant_profile`), with no cache levels (it
captures nothing) and the variant's name on its placeholders; the load time on a switch is slept by the
worker task before it claims (workers/tasks.py), not here.
"""

from __future__ import annotations

import time
from itertools import groupby

import torch
from PIL import Image, ImageDraw

from scheduler.profiles import LatencyProfile

from .engine import DEFAULT_CACHE_LEVELS, GenItem, GenResult, GenTimings, LatentHook, StepHook

LATENT_SHAPE = (1, 4, 8, 8)  # tiny stand-ins: only their presence and levels matter


def placeholder_image(width: int, height: int, k_prime: int, label: str | None = None) -> Image.Image:
    image = Image.new("RGB", (width, height), (225, 228, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, width - 1, height - 1], outline=(120, 120, 140))
    draw.text((4, 4), "emulated\n" + (label or f"K'={k_prime}"), fill=(40, 40, 60))
    return image


class EmulatedEngine:
    """Same call as ApproxCEngine.generate; sleeps instead of denoising."""

    def __init__(
        self,
        profile: LatencyProfile,
        time_factor: float = 1.0,
        cache_levels: tuple[int, ...] = DEFAULT_CACHE_LEVELS,
        sleep: bool = True,
        label: str | None = None,
    ) -> None:
        self.profile = profile
        self.label = label  # what placeholders say instead of K′ (a model variant's name)
        self.time_factor = time_factor
        self.cache_levels = tuple(sorted(cache_levels))
        self.sleep = sleep
        self.default_size = (64, 64)

    def service_seconds(self, k_prime: int, batch_size: int) -> float:
        return self.profile.latency(k_prime, batch_size) * self.time_factor

    def generate(
        self, items: list[GenItem], on_step: StepHook | None = None, on_latent: LatentHook | None = None
    ) -> list[GenResult | None]:
        """As ApproxCEngine.generate: items whose positions `on_step` returns are dropped from their batch
        (result None), and the rest of the batch then takes the profile's time for the smaller batch. There is no
        latent to preview: `on_latent` is never called."""
        t_call = time.perf_counter()
        results: list[GenResult | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: items[i].start_level)
        for k_prime, members in groupby(order, key=lambda i: items[i].start_level):
            members = list(members)
            t0 = time.perf_counter()
            if self.sleep:
                steps = max(items[i].steps for i in members)
                members = self._sleep_through_steps(k_prime, members, steps, on_step)
            spent = time.perf_counter() - t0
            for i in members:
                item = items[i]
                latents = {k: torch.zeros(LATENT_SHAPE) for k in self.cache_levels if k_prime < k < item.steps}
                results[i] = GenResult(
                    image=placeholder_image(item.width or 64, item.height or 64, k_prime, self.label),
                    latents=latents,
                    final_latent=torch.zeros(LATENT_SHAPE),
                    start_level=k_prime,
                    timings=GenTimings(
                        encode_s=0.0,
                        denoise_s=spent,
                        decode_s=0.0,
                        batch_s=0.0,
                        batch_size=len(members),
                        steps_run=item.steps - k_prime,
                    ),
                )
        batch_s = time.perf_counter() - t_call
        for r in results:
            if r is not None:
                r.timings.batch_s = batch_s
        return results

    def _sleep_through_steps(self, first: int, members: list[int], steps: int, on_step: StepHook | None) -> list[int]:
        """Sleep L(K′, b) as the steps first…steps−1 would take, calling `on_step` before each, like the real
        loop (so progress, stopping and dropping behave the same). Sleeps to absolute times, so calls add no
        drift, but after a stop of the process it goes on from then (a lease keeper must be able to stop it).
        Returns the members not dropped; after a drop the remaining steps go at the smaller batch's pace."""
        if on_step is None or steps <= first:
            time.sleep(self.service_seconds(first, len(members)))
            return members
        per_step = self.service_seconds(first, len(members)) / (steps - first)
        due, handled = time.perf_counter(), None
        for i in range(first, steps):
            drop = on_step(i, steps)
            if drop and drop is not handled:
                handled = drop
                members = [m for m in members if m not in drop]
                if not members:
                    return members
                per_step = self.service_seconds(first, len(members)) / (steps - first)
            due += per_step
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -per_step:  # the process was stopped (SIGSTOP, a pause): a GPU would not catch up
                due = time.perf_counter()  # the lost time, it runs the remaining steps at their pace
        return members
