"""The attribute scorer: a small CNN that reads colour, shape, position and background back from an image.

It is trained on renders of the world (``workers.demo.world``) only, never on model outputs, so it is an
independent judge of a generated image: an image *adheres* to its caption when the scorer reads all four
attributes of the caption back. Saved as ``scorer.safetensors`` + ``scorer.json`` beside the model.

Renders are augmented with light blur and noise while training, so that the slightly soft images a
VAE decodes are read as reliably as crisp renders (both accuracies are printed by the build).

:func:`rule_attributes` is a second, hand-written judge (border colour → background, foreground colour →
colour, foreground centroid → position) used as a cross-check of the CNN; it does not read shapes.

Django-free.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from workers.demo.world import (
    ATTRIBUTE_NAMES,
    BACKGROUNDS,
    CENTRES,
    COLOURS,
    IMAGE_SIZE,
    POSITIONS,
    RGB,
    VOCABULARY,
    WORLD_VERSION,
    Attributes,
    make_dataset,
)

WEIGHTS_FILE = "scorer.safetensors"
CONFIG_FILE = "scorer.json"
HEAD_SIZES = tuple(len(VOCABULARY[name]) for name in ATTRIBUTE_NAMES)


@dataclass(frozen=True)
class ScorerConfig:
    channels: tuple[int, int, int] = (32, 64, 64)
    hidden: int = 128
    steps: int = 600
    batch: int = 128
    lr: float = 2e-3
    train_images: int = 340 * 24
    seed: int = 0


class AttributeNet(nn.Module):
    """Three conv blocks (32 → 16 → 8 → 4 px), a shared hidden layer, one linear head per attribute.
    Flattening the 4×4 map (instead of pooling it away) keeps *where* things are."""

    def __init__(self, channels: Sequence[int] = (32, 64, 64), hidden: int = 128, image_size: int = IMAGE_SIZE):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(channels)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in HEAD_SIZES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.hidden(self.features(x))
        return [head(h) for head in self.heads]


# ----------------------------------------------------------------------------------------------------------
# Image conversion
# ----------------------------------------------------------------------------------------------------------


def to_tensor(images: np.ndarray | torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
    """uint8 arrays (N, H, W, 3), PIL images, or float tensors (N, 3, H, W) in [0, 1] → float (N, 3, H, W)."""
    if isinstance(images, torch.Tensor):
        return images.float()
    if not isinstance(images, np.ndarray):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light blur on half of the batch and a little Gaussian noise on all of it (renders → VAE-like)."""
    n = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(n, 1, 1, 1, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) < 0.5)
    x = x + mix * (blurred - x)
    return (x + torch.randn(x.shape, generator=gen) * 0.03 * torch.rand(n, 1, 1, 1, generator=gen)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------------------


class Scorer:
    """A trained :class:`AttributeNet` in eval mode."""

    def __init__(self, net: AttributeNet, config: ScorerConfig, report: dict | None = None):
        self.net = net.eval()
        self.config = config
        self.report = report or {}

    @torch.inference_mode()
    def predict_indices(self, images, batch: int = 256) -> np.ndarray:
        """(N, 4) class indices, ATTRIBUTE_NAMES order."""
        x = to_tensor(images)
        out = []
        for i in range(0, x.shape[0], batch):
            logits = self.net(x[i : i + batch])
            out.append(torch.stack([lg.argmax(1) for lg in logits], 1))
        return torch.cat(out).numpy() if out else np.zeros((0, 4), dtype=np.int64)

    def predict(self, images) -> list[Attributes | None]:
        """The attributes read from each image; None where the reading is not a valid combination (a
        shape the colour of its background)."""
        rows = self.predict_indices(images)
        out: list[Attributes | None] = []
        for row in rows:
            try:
                out.append(Attributes.from_indices(row))
            except ValueError:
                out.append(None)
        return out

    def accuracy(self, images, labels: np.ndarray) -> dict[str, float]:
        """Per-attribute accuracy and ``all`` (all four right) against (N, 4) labels."""
        return attribute_accuracy(self.predict_indices(images), labels)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, folder / WEIGHTS_FILE)
        meta = {"world_version": WORLD_VERSION, "config": asdict(self.config), "vocabulary": VOCABULARY}
        meta.update(self.report)
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def attribute_accuracy(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    right = predicted == labels
    out = {name: float(right[:, i].mean()) for i, name in enumerate(ATTRIBUTE_NAMES)}
    out["all"] = float(right.all(1).mean())
    return out


def load_scorer(folder: Path | str) -> Scorer:
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    config = ScorerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    net = AttributeNet(config.channels, config.hidden)
    net.load_state_dict(load_file(folder / WEIGHTS_FILE))
    report = {k: v for k, v in meta.items() if k not in ("config", "vocabulary", "world_version")}
    return Scorer(net, config, report)


def has_scorer(folder: Path | str) -> bool:
    return (Path(folder) / WEIGHTS_FILE).is_file() and (Path(folder) / CONFIG_FILE).is_file()


def train_scorer(config: ScorerConfig = ScorerConfig(), progress: Callable[[int, float], None] | None = None) -> Scorer:
    """Train on ``config.train_images`` jittered renders (seeded); ``progress(step, loss)`` each step."""
    torch.manual_seed(config.seed)
    data = make_dataset(config.train_images, seed=config.seed, paraphrases=False)
    x_all, y_all = to_tensor(data.images), torch.from_numpy(data.labels)
    net = AttributeNet(config.channels, config.hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(config.seed)
    net.train()
    for step in range(config.steps):
        idx = torch.randint(0, x_all.shape[0], (config.batch,), generator=gen)
        logits = net(augment(x_all[idx], gen))
        loss = sum(F.cross_entropy(lg, y_all[idx, i]) for i, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step, loss.item())
    return Scorer(net, config)


# ----------------------------------------------------------------------------------------------------------
# The rule-based cross-check
# ----------------------------------------------------------------------------------------------------------


def _nearest(rgb: np.ndarray, names: Sequence[str]) -> int:
    palette = np.array([RGB[n] for n in names], dtype=np.float32)
    return int(np.argmin(((palette - rgb) ** 2).sum(1)))


def rule_attributes(image: np.ndarray) -> dict[str, str]:
    """Colour, position and background of one (H, W, 3) uint8 image by hand-written rules (no shape).

    Background: median of the border pixels. Foreground: pixels far from that colour; colour is their
    median, position the nearest centre to their centroid.
    """
    img = image.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = BACKGROUNDS[_nearest(bg_rgb, BACKGROUNDS)]
    distance = np.sqrt(((img - bg_rgb) ** 2).sum(-1))
    mask = distance > 60
    if not mask.any():
        return {"background": background}
    colour = COLOURS[_nearest(np.median(img[mask], axis=0), COLOURS)]
    ys, xs = np.nonzero(mask)
    side = image.shape[0]
    cx, cy = (xs.mean() + 0.5) / side, (ys.mean() + 0.5) / side
    position = min(POSITIONS, key=lambda p: (CENTRES[p][0] - cx) ** 2 + (CENTRES[p][1] - cy) ** 2)
    return {"colour": colour, "position": position, "background": background}


def rule_accuracy(images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy of :func:`rule_attributes` for colour, position and background."""
    hits = {"colour": 0, "position": 0, "background": 0}
    for image, row in zip(images, labels):
        truth = Attributes.from_indices(row)
        read = rule_attributes(image)
        for name in hits:
            hits[name] += read.get(name) == getattr(truth, name)
    return {name: n / max(len(labels), 1) for name, n in hits.items()}


def held_out_renders(n: int = 1020, seed: int = 10_001):
    """Renders never seen in training (another seed), for the accuracies the build prints."""
    return make_dataset(n, seed=seed, paraphrases=False)
