"""Build the demo model end to end: scorer, VAE, UNet + text encoder, the adherence curve, the saved folder.

``build_demo_model(out, "default")`` is what ``manage.py build_demo_model`` runs; ``"micro"`` is the same
code path with tiny sizes and a handful of steps, for tests (seconds). The result is a stock
``StableDiffusionPipeline`` folder (DDIM) with the scorer in ``scorer/`` and ``demo_model.json``.

Minutes are reported two ways: CPU minutes (``time.process_time``, all threads summed: comparable on a
loaded machine) and wall minutes. Adherence measurements are not counted as training time.

Django-free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from workers.demo.adherence import DEFAULT_GUIDANCE, AdherenceReport, evaluation_captions, measure_adherence
from workers.demo.architecture import ArchitectureConfig
from workers.demo.marker import scorer_folder, write_marker
from workers.demo.scorer import ScorerConfig, held_out_renders, rule_accuracy, train_scorer
from workers.demo.training import DiffusionTrainer, TrainingConfig, reconstruct, train_vae
from workers.demo.world import (
    IMAGE_SIZE,
    VOCABULARY,
    WORLD_VERSION,
    Attributes,
    canonical_caption,
    vocabulary_words,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class BuildConfig:
    training: TrainingConfig
    scorer: ScorerConfig
    eval_captions: int = 512  # final adherence measurement
    curve_captions: int = 512  # at each checkpoint
    eval_steps: int = 50


_SCORER = ScorerConfig(steps=300, train_images=340 * 12)

# The 15-minute recipe (`fast`; issue 15, part 2; docs/demo_model.md): the shape keeps learning only while the learning
# rate is high, so the rate is held at its peak (warm-up–stable–decay) and decays linearly to 0 over the
# last 15 % only, with a shorter EMA (0.998) than a long cosine run wants. 1900 UNet steps + the 1000-step
# VAE phase fit 15 CPU-minutes at one torch thread (14.0 measured). One checkpoint on 256 captions in between
# (checkpoints cost wall time, not training time, and do not change the weights); the final one is on 512.
_WSD_1750 = BuildConfig(
    training=TrainingConfig(
        name="wsd-1750",
        unet_steps=1750,
        lr_schedule="wsd",
        decay_fraction=0.15,
        final_lr_factor=0.0,
        ema_decay=0.998,
        checkpoints=(1050,),
    ),
    scorer=_SCORER,
    curve_captions=256,
)

_WSD_1900 = replace(
    _WSD_1750, training=replace(_WSD_1750.training, name="wsd-1900", unet_steps=1900, checkpoints=(1050,))
)

CONFIGS: dict[str, BuildConfig] = {
    # The committed, served model (workers/demo/pretrained): 3000-step cosine, EMA 0.999, 96.7 % after
    # 19.7 CPU-min. Kept as the default so that the command reproduces the folder the workers load.
    "default": BuildConfig(
        training=TrainingConfig(name="default", unet_steps=3000, checkpoints=(750, 1500, 2250)),
        scorer=_SCORER,
    ),
    # The 15-minute recipe (issue 15's target): 88.7 % after 14.0 CPU-min.
    "fast": _WSD_1900,
    # The documented runs (docs/demo_model.md, "Reaching 80 % inside 15 minutes"); `fast` ran as
    # `--config wsd-1900`: the same weights, no checkpoint in between.
    "wsd-1900": BuildConfig(training=replace(_WSD_1900.training, checkpoints=()), scorer=_SCORER),
    "wsd-1750": _WSD_1750,  # 83.6 % in 13.5 CPU-min
    "wsd": replace(  # 2100 steps, decay over the last 20 %: 94.3 % but 16.8 CPU-min
        _WSD_1750,
        training=replace(_WSD_1750.training, name="wsd", unet_steps=2100, decay_fraction=0.2, checkpoints=(1050, 1680)),
    ),
    # Seconds, for tests: same code path, tiny networks, a few steps. Its images are not meant to adhere.
    "micro": BuildConfig(
        training=TrainingConfig(
            name="micro",
            arch=ArchitectureConfig(vae_channels=(8, 8, 8), text_hidden=8, text_layers=1, unet_channels=(16, 16, 16)),
            vae_steps=4,
            vae_batch=8,
            vae_images=64,
            latent_pool=64,
            captions_per_combo=2,
            unet_steps=4,
            batch=8,
            warmup_steps=2,
            checkpoints=(2,),
        ),
        scorer=ScorerConfig(channels=(16, 32, 32), hidden=64, steps=200, batch=64, train_images=1360, lr=4e-3),
        eval_captions=8,
        curve_captions=4,
        eval_steps=10,
    ),
}


@dataclass
class CurvePoint:
    step: int
    cpu_minutes: float
    wall_minutes: float
    adherence: AdherenceReport


@dataclass
class BuildResult:
    folder: Path
    scorer_renders: dict[str, float]
    scorer_reconstructions: dict[str, float]
    rule_renders: dict[str, float]
    curve: list[CurvePoint] = field(default_factory=list)
    training_cpu_minutes: float = 0.0
    training_wall_minutes: float = 0.0

    @property
    def final(self) -> AdherenceReport:
        return self.curve[-1].adherence


class _Clock:
    """Accumulates CPU and wall time over the spans it is started and stopped for."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def __enter__(self) -> _Clock:
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu += time.process_time() - self._cpu
        self.wall += time.perf_counter() - self._wall


def build_config(name: str, seed: int = 0, **overrides) -> BuildConfig:
    """A named config with its seed set (scorer and training) and any training fields overridden."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}")
    base = CONFIGS[name]
    return replace(
        base, training=replace(base.training, seed=seed, **overrides), scorer=replace(base.scorer, seed=seed)
    )


def build_demo_model(
    out: Path | str,
    config: BuildConfig,
    log: Callable[[str], None] = print,
    progress: bool = True,
    threads: int | None = None,
) -> BuildResult:
    """Train everything, measure, and save the folder ``out``. ``threads``: torch intra-op threads (the
    trained weights are reproducible for a given seed, thread count and torch build)."""
    out = Path(out)
    if threads is not None:
        torch.set_num_threads(threads)
    bar = _ProgressBar(config, enabled=progress)
    cfg = config.training

    log(f"[1/3] scorer: {config.scorer.steps} steps on {config.scorer.train_images} renders")
    scorer = train_scorer(config.scorer, progress=lambda step, loss: bar.advance("scorer", loss))
    held_out = held_out_renders()
    scorer_renders = scorer.accuracy(held_out.images, held_out.labels)
    rule_renders = rule_accuracy(held_out.images, held_out.labels)
    log(f"      scorer on held-out renders: {_fmt(scorer_renders)}")
    log(f"      rule check on the same renders: {_fmt(rule_renders)}")

    clock = _Clock()
    log(f"[2/3] VAE: {cfg.vae_steps} steps")
    with clock:
        vae = train_vae(cfg, progress=lambda phase, step, total, v: bar.advance("vae", v["loss"]))
    scorer_recon = scorer.accuracy(reconstruct(vae, held_out.images), held_out.labels)
    log(f"      scorer on VAE reconstructions of held-out renders: {_fmt(scorer_recon)}")

    log(f"[3/3] UNet + text encoder: {cfg.unet_steps} steps, adherence measured at {_checkpoints(cfg)}")
    result = BuildResult(out, scorer_renders, scorer_recon, rule_renders)
    with clock:
        trainer = DiffusionTrainer(cfg, vae)
    for checkpoint in _checkpoints(cfg):
        with clock:
            for _ in trainer.run(checkpoint, lambda phase, step, total, v: bar.advance("unet", v["loss"])):
                pass
        n = config.eval_captions if checkpoint == cfg.unet_steps else config.curve_captions
        bar.pause()
        report = measure_adherence(trainer.ema_pipeline(), scorer, n=n, steps=config.eval_steps)
        point = CurvePoint(checkpoint, clock.cpu / 60, clock.wall / 60, report)
        result.curve.append(point)
        log(
            f"      step {checkpoint:5d}  {point.cpu_minutes:5.1f} CPU-min  {point.wall_minutes:5.1f} wall-min  "
            f"({n} captions) {report.line()}"
        )
    bar.close()
    result.training_cpu_minutes, result.training_wall_minutes = clock.cpu / 60, clock.wall / 60
    save_folder(out, trainer, scorer, config, result)
    log(f"saved to {out}")
    return result


def save_folder(out: Path, trainer: DiffusionTrainer, scorer, config: BuildConfig, result: BuildResult) -> None:
    """The EMA pipeline (stock folder), the scorer beside it, and the marker file."""
    pipe = trainer.ema_pipeline()
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out)
    scorer.report = {"accuracy_renders": result.scorer_renders, "accuracy_vae": result.scorer_reconstructions}
    scorer.save(scorer_folder(out))
    write_marker(out, _marker(config, result))


def _marker(config: BuildConfig, result: BuildResult) -> dict:
    return {
        "demo_model": True,
        "world_version": WORLD_VERSION,
        "image_size": IMAGE_SIZE,
        "scheduler": "ddim",
        "steps": config.eval_steps,
        "guidance_scale": DEFAULT_GUIDANCE,
        "vocabulary": VOCABULARY,
        "words": vocabulary_words(),
        "example_prompts": [canonical_caption(Attributes("red", "circle", "top left", "gray"))]
        + [c for c, _ in evaluation_captions(6, seed=7)],
        "adherence": asdict(result.final),
        "adherence_curve": [
            {"step": p.step, "cpu_minutes": round(p.cpu_minutes, 2), "wall_minutes": round(p.wall_minutes, 2)}
            | {"captions": p.adherence.captions, **p.adherence.accuracy}
            for p in result.curve
        ],
        "scorer": {"renders": result.scorer_renders, "vae_reconstructions": result.scorer_reconstructions},
        "training_cpu_minutes": round(result.training_cpu_minutes, 2),
        "training_wall_minutes": round(result.training_wall_minutes, 2),
        "torch_threads": torch.get_num_threads(),
        "training": config.training.to_json(),
        "note": "trained offline on procedurally drawn shapes; it draws only what its vocabulary names",
    }


def _checkpoints(cfg: TrainingConfig) -> list[int]:
    return sorted({c for c in cfg.checkpoints if 0 < c < cfg.unet_steps} | {cfg.unet_steps})


def _fmt(acc: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.1%}" for k, v in acc.items())


class _ProgressBar:
    """One tqdm bar over every training step of the build (scorer, VAE, UNet); no-op when disabled."""

    def __init__(self, config: BuildConfig, enabled: bool):
        total = config.scorer.steps + config.training.vae_steps + config.training.unet_steps
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=1.0)

    def advance(self, phase: str, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_description(phase, refresh=False)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update(1)

    def pause(self) -> None:
        if self.bar is not None:
            self.bar.set_description("measuring adherence")
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
