"""Measured adherence of served images (issue 15, part 5): when a worker serves the demo model, each image is
read back by the model's scorer and compared with the attributes its prompt names.

The value stored on the request row (``GenerationRequest.measured_adherence``) is the share of the prompt's
four attributes (colour, shape, position, background) that the scorer reads back: 1.0 means the image
adheres (the measure of docs/demo_model.md and docs/quality.md), 0.75 one attribute wrong, and so on. It is
None for a prompt the world's grammar does not parse (``attributes_of``), for a model that is not a demo
model, and for an image that failed to be made.

The scorer is loaded once per worker process (a few hundred kB, milliseconds per batch on the CPU).
Images of another size than the world's are box-filtered to it first (the scorer reads 32×32 images).

Django-free: the worker passes its model folder and engine kind.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from workers.demo.marker import is_demo_model, scorer_folder
from workers.demo.scorer import Scorer, has_scorer, load_scorer
from workers.demo.world import IMAGE_SIZE, attributes_of

_lock = threading.Lock()
_scorers: dict[str, Scorer | None] = {}  # model folder → its scorer (None: not a demo model)


def scorer_for(model_folder: str | Path) -> Scorer | None:
    """The scorer saved beside a demo model, loaded once per process; None for any other model."""
    key = str(Path(model_folder).resolve())
    if key not in _scorers:
        with _lock:
            if key not in _scorers:
                folder = scorer_folder(key)
                _scorers[key] = load_scorer(folder) if is_demo_model(key) and has_scorer(folder) else None
    return _scorers[key]


def adherence_scores(
    model_folder: str | Path, prompts: Sequence[str], images: Sequence[Image.Image | None]
) -> list[float | None]:
    """For each (prompt, image): the share of the prompt's four attributes the scorer reads back, or None
    (not a demo model, a prompt outside the world's grammar, or no image)."""
    out: list[float | None] = [None] * len(prompts)
    judge = scorer_for(model_folder)
    if judge is None:
        return out
    wanted = [(i, attributes_of(p)) for i, (p, im) in enumerate(zip(prompts, images)) if im is not None]
    wanted = [(i, a) for i, a in wanted if a is not None]
    if not wanted:
        return out
    pictures = [_world_size(images[i]) for i, _ in wanted]
    read = judge.predict_indices(pictures)
    for (i, attributes), row in zip(wanted, read):
        out[i] = float(np.mean(np.asarray(attributes.indices()) == row))
    return out


def _world_size(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return image
