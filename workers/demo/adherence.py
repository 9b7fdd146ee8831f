"""Prompt adherence of a demo pipeline: generate from captions of the world, read the images back with the
scorer, count how often each attribute (and all four) comes out as the caption says.

Generation goes through the project's ApproxC engine (``workers.engine``) at K′ = 0, i.e. exactly the
path a served request takes: 50 DDIM steps with classifier-free guidance by default. The captions are a
fixed, class-balanced, paraphrased sample (seeded apart from training), one seed per caption.

Django-free.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

import numpy as np
import torch

from workers.demo.marker import scorer_folder
from workers.demo.scorer import Scorer, attribute_accuracy, load_scorer
from workers.demo.world import Attributes, balanced_attributes, paraphrase
from workers.engine import ApproxCEngine, GenItem, load_pipeline

EVAL_SEED = 20_000
DEFAULT_GUIDANCE = 7.5  # the serving default (GenerationRequest.guidance_scale)


@dataclass
class AdherenceReport:
    captions: int
    steps: int
    guidance: float
    accuracy: dict[str, float]  # colour, shape, position, background, all

    def line(self) -> str:
        a = self.accuracy
        return (
            f"all four {a['all']:6.1%} | colour {a['colour']:6.1%}  shape {a['shape']:6.1%}  "
            f"position {a['position']:6.1%}  background {a['background']:6.1%}"
        )


def evaluation_captions(n: int = 512, seed: int = EVAL_SEED) -> list[tuple[str, Attributes]]:
    """``n`` (caption, attributes): every combination once per 340, then a random remainder; paraphrased."""
    rng = random.Random(seed)
    return [(paraphrase(a, rng), a) for a in balanced_attributes(n, rng)]


def generate(
    pipe, captions: list[str], steps: int = 50, guidance: float = DEFAULT_GUIDANCE, seed: int = 0, batch: int = 128
) -> list:
    """PIL images for ``captions`` at K′ = 0 through the engine; caption i uses seed ``seed + i``."""
    engine = ApproxCEngine(pipe)
    images = []
    for start in range(0, len(captions), batch):
        items = [
            GenItem(prompt=c, seed=seed + start + j, steps=steps, guidance_scale=guidance)
            for j, c in enumerate(captions[start : start + batch])
        ]
        images += [r.image for r in engine.generate(items)]
    return images


def measure_adherence(
    pipe, scorer: Scorer, n: int = 512, steps: int = 50, guidance: float = DEFAULT_GUIDANCE, batch: int = 128
) -> AdherenceReport:
    """Generate ``n`` evaluation captions and score them."""
    pairs = evaluation_captions(n)
    images = generate(pipe, [c for c, _ in pairs], steps=steps, guidance=guidance, batch=batch)
    labels = np.array([a.indices() for _, a in pairs], dtype=np.int64)
    return AdherenceReport(n, steps, guidance, attribute_accuracy(scorer.predict_indices(images), labels))


def main(argv: list[str] | None = None) -> None:
    """``python -m workers.demo.adherence MODEL_FOLDER [--captions 512] [--guidance 2,7.5] [--steps 50]``"""
    parser = argparse.ArgumentParser(description="Prompt adherence of a demo model folder, judged by its scorer.")
    parser.add_argument("model_folder")
    parser.add_argument("--captions", type=int, default=512)
    parser.add_argument("--guidance", default=str(DEFAULT_GUIDANCE), help="comma-separated guidance scales")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model_folder, device="cpu")
    judge = load_scorer(scorer_folder(args.model_folder))
    for guidance in (float(g) for g in args.guidance.split(",")):
        report = measure_adherence(pipe, judge, n=args.captions, steps=args.steps, guidance=guidance)
        print(f"guidance {guidance:4.1f}, {report.captions} captions: {report.line()}", flush=True)


if __name__ == "__main__":
    main()
