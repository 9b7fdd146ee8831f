"""Per-process state of a GPU worker: which slot it is, and its lazily loaded engine.

The pipeline is loaded by a thread that the worker's start-up hook starts (Celery kills a child whose
init takes longer than 4 s), or else by the first task, and then kept for the life of the process.

proteus_models: the model variant this process holds (`variant_slot`, kept in step with the plan by
workers/tasks.py) and the emulated engine of a variant (`variant_engine`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from scheduler.model_variants import ModelVariant, VariantSlot, held_variant_profile, variant_profile
from webapp.ledger.models import ServingConfig
from webapp.serving.live_config import scheduler_config

from .demo.marker import is_demo_model
from .tiny_model import is_tiny_random_model

log = logging.getLogger(__name__)
_lock = threading.Lock()


def worker_index() -> int:
    """This process's GPU slot (its queue is gpu.<index>); set by `make run` / compose."""
    return int(os.environ.get("T2I_WORKER_INDEX", "0"))


def model_label(model_path: Path) -> str:
    if settings.T2I_ENGINE == "emulated":
        return "emulated (no diffusion run)"
    if is_tiny_random_model(model_path):
        return "tiny random model (noise-like by design)"
    if is_demo_model(model_path):
        return "demo model (trained offline on coloured shapes; knows only their words)"
    return Path(model_path).name


_engine = None


def engine():
    """The engine for this process, built once: ApproxC on a diffusers pipeline, or the
    emulated engine that sleeps L(K', b) from the latency profile (T2I_ENGINE=emulated)."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = _build_engine()
    return _engine


def warming_engine():
    """The engine `warm_cache` fills the cache with: emulated workers' warm-up does not sleep."""
    return emulated_engine(sleep=False) if settings.T2I_ENGINE == "emulated" else engine()


def preload_in_background(then: Callable[[], object]) -> None:
    """Load the engine while the worker is idle, so the first request does not pay for it, and call `then`
    once it is loaded (not if the load fails: the error is logged, and the worker stays unable to serve)."""

    def load() -> None:
        try:
            engine()
        except Exception:
            log.exception("the engine did not load; this worker will not announce itself as live")
            return
        then()

    threading.Thread(target=load, name="engine-preload", daemon=True).start()


def _build_engine():
    if settings.T2I_ENGINE == "emulated":
        return emulated_engine()
    from .engine import ApproxCEngine, load_pipeline  # torch and diffusers: loaded on first use

    pipe = load_pipeline(
        settings.T2I_MODEL_PATH, device=settings.T2I_DEVICE or None, scheduler=settings.T2I_SCHEDULER or None
    )
    if pipe.device.type == "cpu":
        _share_cpu_cores()
    return ApproxCEngine(pipe, cache_levels=settings.T2I_CACHE_LEVELS)


def emulated_engine(sleep: bool = True):
    from .emulated_engine import EmulatedEngine  # torch

    # The scheduler's profile is already in wall-clock seconds (time factor applied).
    profile = scheduler_config(ServingConfig.current()).profile
    return EmulatedEngine(profile, time_factor=1.0, cache_levels=settings.T2I_CACHE_LEVELS, sleep=sleep)


_variant_slot = VariantSlot()


def variant_slot() -> VariantSlot:
    """The model variant this worker process holds (proteus_models); it starts with variant 0, the initial
    plan's. One per process: a replaced process starts again from variant 0."""
    return _variant_slot


def variant_engine(variants: tuple[ModelVariant, ...], index: int):
    """The emulated engine of a worker holding `variants[index]` (already in wall-clock seconds): it sleeps
    that variant's L(v, b), the table the controller planned with, and captures no cache latents."""
    from .emulated_engine import EmulatedEngine  # torch

    variant = variants[index]
    profile = held_variant_profile(variant_profile(variants), index, variant.name)
    return EmulatedEngine(profile, time_factor=1.0, cache_levels=(), label=variant.name)


def variant_label(variant: ModelVariant) -> str:
    """The request's `model_label` when a model variant served it (the API answer shows it)."""
    return f"emulated {variant.name} (model variant, quality {variant.quality:g}; no diffusion run)"


def _share_cpu_cores() -> None:
    """CPU-only hosts run several worker processes: split the cores instead of every process
    starting one thread per core and thrashing."""
    import torch

    threads = int(os.environ.get("T2I_TORCH_THREADS", 0)) or max(
        1, (os.cpu_count() or 1) // max(1, settings.T2I_WORKERS)
    )
    torch.set_num_threads(threads)
