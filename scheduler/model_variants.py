"""Model variants for PROTEUS as published (`proteus_models`): each worker runs one of several models.

Each variant has a latency profile per batch size, a quality and a load time (what switching a worker to it
costs: the worker serves nothing meanwhile). Sources (docs/baselines.md has the table with citations):

* latency, ms per batch on an A100, 50 steps for the full models: DiffServe's profiles
  (`../shared/data/profiles/diffserve/*.csv`, qizhengyang98/DiffServe @ 7f2e4d7; Ahmad et al., arXiv
  2411.15381), copied here as presets so that no data folder is needed;
* load time: the Argus paper's measurements (Argus, Middleware 2025, arXiv 2511.06724): SDXL 47.0 s and
  SD 1.5 21.7 s measured; SDXL-Lightning (SDXL's UNet) = 47.0 s, SD-Turbo (an SD-2.1-size UNet) = 21.7 s
  and SDXS (a tiny UNet) = SD-tiny's 12.0 s are **assumptions** by architecture size;
* quality, relative to SDXL-base = 1: **assumptions** (no published table gives one yardstick for all five
  on our scale); `SENSITIVITY_QUALITY` is the harsher set the sensitivity row runs.

Levels: a `LatencyProfile` whose "levels" are variant indices 0 … V − 1, best quality first, so the
controller's MILP (scheduler.planner) chooses workers per variant exactly as it chooses them per K′ level.
"""

from __future__ import annotations

from dataclasses import dataclass

from .profiles import LatencyProfile


@dataclass(frozen=True)
class ModelVariant:
    name: str
    batch_ms: dict[int, float]  # ms per batch, by batch size
    quality: float  # relative to SDXL-base 50 steps = 1.0
    load_s: float  # seconds to load it onto a worker


VARIANTS: tuple[ModelVariant, ...] = (
    ModelVariant("sdxl", {1: 6100.0, 2: 10650.0, 4: 20920.0, 8: 40230.0, 16: 79110.0}, 1.00, 47.0),
    ModelVariant("sdxl_lightning", {1: 550.0, 2: 980.0, 4: 1850.0, 8: 3580.0, 16: 7100.0}, 0.95, 47.0),
    ModelVariant("sd15", {1: 1780.0, 2: 2160.0, 4: 3680.0, 8: 6790.0, 16: 12880.0, 32: 25350.0}, 0.90, 21.7),
    ModelVariant("sd_turbo", {1: 100.0, 2: 150.0, 4: 220.0, 8: 410.0, 16: 770.0, 32: 1560.0}, 0.88, 21.7),
    ModelVariant("sdxs", {1: 50.0, 2: 60.0, 4: 80.0, 8: 130.0, 16: 240.0, 32: 480.0}, 0.80, 12.0),
)
# The sensitivity row: distilled models judged harsher (an assumption too).
SENSITIVITY_QUALITY: dict[str, float] = {
    "sdxl": 1.00,
    "sdxl_lightning": 0.90,
    "sd15": 0.85,
    "sd_turbo": 0.80,
    "sdxs": 0.70,
}


def with_quality(variants: tuple[ModelVariant, ...], quality: dict[str, float]) -> tuple[ModelVariant, ...]:
    """The variants with some qualities replaced (names not given keep theirs)."""
    return tuple(ModelVariant(v.name, v.batch_ms, quality.get(v.name, v.quality), v.load_s) for v in variants)


def parse_quality(text: str) -> dict[str, float]:
    """`name=q,name=q` → {name: q} (the `--variant-quality` flag)."""
    out = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, _, value = item.partition("=")
        if name not in {v.name for v in VARIANTS}:
            raise ValueError(f"unknown model variant {name!r}; choose from {', '.join(v.name for v in VARIANTS)}")
        out[name] = float(value)
    return out


def ordered(variants: tuple[ModelVariant, ...]) -> tuple[ModelVariant, ...]:
    """Best quality first (index 0), the order of the variant "levels"."""
    return tuple(sorted(variants, key=lambda v: -v.quality))


def scaled(variants: tuple[ModelVariant, ...], factor: float) -> tuple[ModelVariant, ...]:
    """The variants in the wall-clock seconds of emulated workers that sleep L × `factor`: batch latencies and
    load times × factor (the live system's T2I_TIME_FACTOR; 1 = as measured)."""
    if factor == 1.0:
        return variants
    return tuple(
        ModelVariant(v.name, {b: ms * factor for b, ms in v.batch_ms.items()}, v.quality, v.load_s * factor)
        for v in variants
    )


def configured(quality: dict[str, float] | None = None, time_factor: float = 1.0) -> tuple[ModelVariant, ...]:
    """The variants a deployment runs, best first: the defaults with `quality` overrides, in its time scale.
    ProteusModels (the controller and the dispatcher) and the live workers build them the same way."""
    return ordered(scaled(with_quality(VARIANTS, quality or {}), time_factor))


def variant_profile(variants: tuple[ModelVariant, ...]) -> LatencyProfile:
    """A latency profile over variant indices (0 = the best), on the batch sizes every variant measured."""
    sizes = sorted(set.intersection(*(set(v.batch_ms) for v in variants)))
    table = {i: tuple(v.batch_ms[b] / 1000.0 for b in sizes) for i, v in enumerate(variants)}
    return LatencyProfile(
        levels=tuple(range(len(variants))), batch_sizes=tuple(sizes), table_s=table, name="model-variants"
    )


def held_variant_profile(profile: LatencyProfile, index: int, name: str) -> LatencyProfile:
    """Variant `index`'s row of `variant_profile` as a one-level profile (level 0: a full generation with that
    model): what an emulated worker holding the variant sleeps, the same L(v, b) the controller planned with."""
    return LatencyProfile(levels=(0,), batch_sizes=profile.batch_sizes, table_s={0: profile.table_s[index]}, name=name)


@dataclass
class VariantSlot:
    """The model one live worker holds (its bookkeeping; the simulator keeps the same per worker as
    `ready_at`). A worker starts holding variant 0, the initial plan's (every worker on the best model, loaded
    before serving starts, as in the simulator); a switch holds the new variant once its load time has passed,
    counted from when the previous load ends (a switch during a load waits for it)."""

    held: int = 0
    ready_at: float = 0.0  # clock time (the caller's clock) at which the held variant is loaded
    unrecorded_load_s: float = 0.0  # seconds spent loading since a batch last recorded them

    def take_unrecorded_load(self) -> float:
        """The loading seconds not yet recorded on a batch, and forget them (the batch that records them is
        the first one served after the load, whichever message the load happened on)."""
        seconds, self.unrecorded_load_s = self.unrecorded_load_s, 0.0
        return seconds

    def switch_to(self, target: int, load_s: float, now: float) -> bool:
        """Start loading `target` unless it is held already; True when that is a switch."""
        if target == self.held:
            return False
        self.held, self.ready_at = target, max(now, self.ready_at) + load_s
        return True

    def wait_s(self, now: float) -> float:
        """Seconds until the held variant is loaded (0: it serves now)."""
        return max(0.0, self.ready_at - now)
