"""The demo world: coloured shapes on plain backgrounds, with captions that say exactly what is drawn.

Every caption has an exact ground truth, so a model trained on this world can be *scored*: a classifier
(``workers.demo.scorer``) reads the four attributes back from an image and compares them with the
caption's. The world is small on purpose (it must train on 2 CPU cores in minutes) but compositional:

* attributes: 6 colours × 4 shapes × 5 positions × 3 backgrounds, minus a shape the colour of its
  background (white on white) = 340 combinations;
* captions: a canonical template ("a red circle at the top left on a gray background") and paraphrases
  (other templates and synonyms: "top-left: red disc, grey backdrop"), so that text similarity between
  two prompts is not simply the number of shared attributes;
* renderer: PIL at 4× supersampling, box-filtered down to 32×32, with a small seeded jitter of position,
  size and rotation so that no two renders are identical.

Django-free and torch-free (numpy + PIL only).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

WORLD_VERSION = 1
IMAGE_SIZE = 32
SUPERSAMPLE = 4

# ----------------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------------

COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS = ("gray", "black", "white")
ATTRIBUTE_NAMES = ("colour", "shape", "position", "background")
VOCABULARY: dict[str, tuple[str, ...]] = dict(zip(ATTRIBUTE_NAMES, (COLOURS, SHAPES, POSITIONS, BACKGROUNDS)))

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}

# Synonyms used by the paraphrase templates; the first word of each list is the canonical one.
COLOUR_WORDS = {
    "red": ("red", "scarlet"),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "purple": ("purple", "violet"),
    "white": ("white",),
}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus"),
}
BACKGROUND_WORDS = {"gray": ("gray", "grey"), "black": ("black", "dark"), "white": ("white",)}
# Position phrases: (after "at the"/"in the" in prose, as a bare label).
POSITION_WORDS = {
    "top left": ("top left", "upper left", "top-left"),
    "top right": ("top right", "upper right", "top-right"),
    "bottom left": ("bottom left", "lower left", "bottom-left"),
    "bottom right": ("bottom right", "lower right", "bottom-right"),
    "center": ("center", "middle", "centre"),
}
BACKGROUND_NOUNS = ("background", "backdrop")


@dataclass(frozen=True, order=True)
class Attributes:
    """What one image shows. Values are canonical vocabulary words."""

    colour: str
    shape: str
    position: str
    background: str

    def __post_init__(self) -> None:
        for name, value in zip(ATTRIBUTE_NAMES, self.as_tuple()):
            if value not in VOCABULARY[name]:
                raise ValueError(f"unknown {name} {value!r}; choose one of {VOCABULARY[name]}")
        if self.colour == self.background:
            raise ValueError(f"a {self.colour} shape on a {self.background} background would be invisible")

    def as_tuple(self) -> tuple[str, str, str, str]:
        return (self.colour, self.shape, self.position, self.background)

    def indices(self) -> tuple[int, int, int, int]:
        """Class index of each attribute in its vocabulary (the scorer's labels)."""
        return tuple(VOCABULARY[n].index(v) for n, v in zip(ATTRIBUTE_NAMES, self.as_tuple()))  # type: ignore[return-value]

    @classmethod
    def from_indices(cls, idx: tuple[int, int, int, int] | list[int]) -> Attributes:
        return cls(*(VOCABULARY[n][int(i)] for n, i in zip(ATTRIBUTE_NAMES, idx)))

    def replace(self, **changes: str) -> Attributes:
        values = dict(zip(ATTRIBUTE_NAMES, self.as_tuple()))
        values.update(changes)
        return Attributes(**values)


def all_attributes() -> list[Attributes]:
    """The 340 valid combinations, in a fixed order."""
    return [Attributes(c, s, p, b) for c in COLOURS for s in SHAPES for p in POSITIONS for b in BACKGROUNDS if c != b]


# ----------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------


def _prose_position(phrase: str) -> str:
    """'top left' -> 'at the top left'; 'center' -> 'in the center'."""
    return f"in the {phrase}" if phrase in POSITION_WORDS["center"] else f"at the {phrase}"


@dataclass(frozen=True)
class Wording:
    """How a caption is worded, apart from what it says: the template and a synonym choice per slot.

    Keeping the wording while changing an attribute is how a user edits a prompt ("…red circle…" →
    "…blue circle…"); keeping the attributes while changing the wording is a paraphrase. Choices are
    taken modulo the number of synonyms, so one wording fits every combination."""

    template: int = 0
    colour: int = 0
    shape: int = 0
    position: int = 0
    background: int = 0
    noun: int = 0

    @classmethod
    def random(cls, rng: random.Random, template: int | None = None) -> Wording:
        index = rng.randrange(len(TEMPLATES)) if template is None else template
        return cls(index, *(rng.randrange(6) for _ in range(5)))


def _pick(options: tuple[str, ...], choice: int) -> str:
    return options[choice % len(options)]


def caption(a: Attributes, wording: Wording = Wording()) -> str:
    """``a`` in the given wording (the default wording is the canonical caption)."""
    prose_positions = tuple(p for p in POSITION_WORDS[a.position] if "-" not in p)  # "at the top-left" reads oddly
    position = _pick(prose_positions, wording.position)
    words = {
        "colour": _pick(COLOUR_WORDS[a.colour], wording.colour),
        "shape": _pick(SHAPE_WORDS[a.shape], wording.shape),
        "position": position,
        "at_position": _prose_position(position),
        "label_position": _pick(POSITION_WORDS[a.position], wording.position),
        "background": _pick(BACKGROUND_WORDS[a.background], wording.background),
        "noun": _pick(BACKGROUND_NOUNS, wording.noun),
    }
    return TEMPLATES[wording.template].format(**words)


# Template 0 is the canonical caption. Each template names the colour right before the shape and the
# background word right before "background"/"backdrop" or after a final "on", so one parser reads all.
TEMPLATES = (
    "a {colour} {shape} {at_position} on a {background} background",
    "{label_position}: {colour} {shape}, {background} {noun}",
    "a {background} {noun} with a {colour} {shape} {at_position}",
    "{colour} {shape}, {position}, {background} {noun}",
    "there is a {colour} {shape} {at_position} against a {background} {noun}",
    "a small {colour} {shape} {at_position}, on {background}",
)


def canonical_caption(a: Attributes) -> str:
    """'a red circle at the top left on a gray background'."""
    return caption(a)


def paraphrase(a: Attributes, rng: random.Random, template: int | None = None) -> str:
    """A random wording of ``a``: a random template (or the given one) with random synonyms."""
    return caption(a, Wording.random(rng, template))


def _lookup(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {word: key for key, words in table.items() for word in words}


_COLOUR_OF = _lookup(COLOUR_WORDS)
_SHAPE_OF = _lookup(SHAPE_WORDS)
_BACKGROUND_OF = _lookup(BACKGROUND_WORDS)
_POSITION_PHRASES = sorted(((p, key) for key, ps in POSITION_WORDS.items() for p in ps), key=lambda x: -len(x[0]))


def attributes_of(caption: str) -> Attributes | None:
    """The attributes a caption of this grammar names, or None when it is not one (any template, any
    synonym). The colour is the word right before the shape; the background is the other colour word."""
    text = caption.lower().replace(",", " ").replace(":", " ")
    position = next((key for phrase, key in _POSITION_PHRASES if phrase in text), None)
    words = text.split()
    shape_at = [i for i, w in enumerate(words) if w in _SHAPE_OF]
    if position is None or len(shape_at) != 1 or shape_at[0] == 0:
        return None
    i = shape_at[0]
    colour = _COLOUR_OF.get(words[i - 1])
    backgrounds = [_BACKGROUND_OF[w] for j, w in enumerate(words) if j != i - 1 and w in _BACKGROUND_OF]
    if colour is None or len(backgrounds) != 1:
        return None
    try:
        return Attributes(colour, _SHAPE_OF[words[i]], position, backgrounds[0])
    except ValueError:
        return None


def vocabulary_words() -> list[str]:
    """Every content word the grammar uses (for the app's "words the demo model knows")."""
    words: set[str] = set()
    for table in (COLOUR_WORDS, SHAPE_WORDS, BACKGROUND_WORDS, POSITION_WORDS):
        for options in table.values():
            for option in options:
                words.update(option.replace("-", " ").split())
    return sorted(words | set(BACKGROUND_NOUNS))


# ----------------------------------------------------------------------------------------------------------
# Renderer
# ----------------------------------------------------------------------------------------------------------

# Centre of each position as a fraction of the image side; the shape's radius likewise.
CENTRES = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.5, 0.5),
}
RADIUS = 0.19
JITTER_SHIFT = 0.035  # ± fraction of the side (about ±1 px at 32 px)
JITTER_SCALE = 0.1  # ± fraction of the radius
JITTER_ROTATION = 10.0  # ± degrees


def _rotate90(points: list[tuple[float, float]], times: int) -> list[tuple[float, float]]:
    for _ in range(times):
        points = [(-y, x) for x, y in points]
    return points


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a square, triangle or cross of circumradius-ish ``r``, rotated by ``angle`` radians."""
    if shape == "square":
        h = r * 0.85
        points = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        t = r * 1.2  # a triangle covers less of its circle than the other shapes
        points = [(t * math.cos(a), t * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        points = [(x, y + t * 0.15) for x, y in points]  # centre the triangle's bounding box
    elif shape == "cross":
        a, b = r, r * 0.36
        quarter = [(-b, -a), (b, -a), (b, -b)]  # one arm's end and the inner corner after it
        points = [p for k in range(4) for p in _rotate90(quarter, k)]
    else:
        raise ValueError(f"no polygon for {shape!r}")
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def render(a: Attributes, rng: random.Random | None = None, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw ``a`` as an RGB image of ``size``×``size``; ``rng`` adds the small jitter (None: exact)."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), RGB[a.background])
    draw = ImageDraw.Draw(image)
    fx, fy = CENTRES[a.position]
    scale, angle = 1.0, 0.0
    if rng is not None:
        fx += rng.uniform(-JITTER_SHIFT, JITTER_SHIFT)
        fy += rng.uniform(-JITTER_SHIFT, JITTER_SHIFT)
        scale += rng.uniform(-JITTER_SCALE, JITTER_SCALE)
        angle = math.radians(rng.uniform(-JITTER_ROTATION, JITTER_ROTATION))
    cx, cy, r = fx * big, fy * big, RADIUS * big * scale
    if a.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=RGB[a.colour])
    else:
        draw.polygon(_polygon(a.shape, cx, cy, r, angle), fill=RGB[a.colour])
    return image.resize((size, size), Image.Resampling.BOX)


# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    images: np.ndarray  # (N, size, size, 3) uint8
    labels: np.ndarray  # (N, 4) int64: class index per attribute (ATTRIBUTE_NAMES order)
    captions: list[str]

    def attributes(self) -> list[Attributes]:
        return [Attributes.from_indices(row) for row in self.labels]


def balanced_attributes(n: int, rng: random.Random) -> list[Attributes]:
    """``n`` combinations, class-balanced: whole shuffled passes over all 340, then a random remainder."""
    combos = all_attributes()
    out: list[Attributes] = []
    while len(out) < n:
        batch = combos[:]
        rng.shuffle(batch)
        out += batch[: n - len(out)]
    return out


def make_dataset(n: int, seed: int = 0, paraphrases: bool = True, size: int = IMAGE_SIZE) -> Dataset:
    """``n`` jittered renders with captions (paraphrased, or canonical), class-balanced, seeded."""
    rng = random.Random(seed)
    attrs = balanced_attributes(n, rng)
    images = np.stack([np.asarray(render(a, rng, size)) for a in attrs]) if attrs else np.zeros((0, size, size, 3))
    captions = [paraphrase(a, rng) if paraphrases else canonical_caption(a) for a in attrs]
    labels = np.array([a.indices() for a in attrs], dtype=np.int64).reshape(-1, 4)
    return Dataset(images.astype(np.uint8), labels, captions)
