"""The demo world: vocabulary, caption grammar and paraphrases, renderer, datasets, prompt streams.

Pure Python + numpy/PIL: no database, no torch.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from workers.demo import prompt_stream as ps
from workers.demo import world as w


def test_vocabulary_has_340_valid_combinations():
    combos = w.all_attributes()
    assert len(combos) == len(set(combos)) == 6 * 4 * 5 * 3 - 4 * 5  # no white shape on white
    assert all(a.colour != a.background for a in combos)
    with pytest.raises(ValueError, match="invisible"):
        w.Attributes("white", "circle", "center", "white")
    with pytest.raises(ValueError, match="unknown shape"):
        w.Attributes("red", "hexagon", "center", "gray")


def test_class_indices_round_trip():
    for a in w.all_attributes():
        assert w.Attributes.from_indices(a.indices()) == a


def test_canonical_caption_and_a_paraphrase():
    a = w.Attributes("red", "circle", "top left", "gray")
    assert w.canonical_caption(a) == "a red circle at the top left on a gray background"
    assert w.caption(a, w.Wording(template=1, shape=1, position=2, background=1, noun=1)) == (
        "top-left: red disc, grey backdrop"
    )
    assert w.canonical_caption(a.replace(position="center")) == "a red circle in the center on a gray background"


def test_every_wording_of_every_combination_parses_back():
    rng = random.Random(0)
    for a in w.all_attributes():
        for template in range(len(w.TEMPLATES)):
            text = w.paraphrase(a, rng, template)
            assert w.attributes_of(text) == a, text


def test_parser_rejects_text_outside_the_grammar():
    assert w.attributes_of("a photo of a cat") is None
    assert w.attributes_of("a red circle and a blue square at the top left on gray") is None  # two shapes
    assert w.attributes_of("a white circle at the top left on a white background") is None  # invisible


def test_paraphrases_vary_wording_not_meaning():
    rng = random.Random(1)
    a = w.Attributes("purple", "cross", "bottom right", "black")
    texts = {w.paraphrase(a, rng) for _ in range(200)}
    assert len(texts) >= 30  # templates × synonyms: text similarity is not a function of the attributes
    assert {w.attributes_of(t) for t in texts} == {a}
    assert any("violet" in t for t in texts) and any("plus" in t for t in texts) and any("dark" in t for t in texts)


def test_changing_an_attribute_keeps_the_wording():
    wording = w.Wording(template=4, colour=1, shape=2, position=1, background=1, noun=1)
    a = w.Attributes("red", "circle", "top left", "gray")
    before, after = w.caption(a, wording), w.caption(a.replace(colour="blue"), wording)
    diff = [(x, y) for x, y in zip(before.split(), after.split()) if x != y]
    assert diff == [("scarlet", "blue")]


def test_vocabulary_words_cover_every_caption():
    known = set(w.vocabulary_words())
    rng = random.Random(2)
    filler = {"a", "at", "the", "on", "in", "with", "there", "is", "against", "small"}
    for a in rng.sample(w.all_attributes(), 50):
        words = w.paraphrase(a, rng).replace(",", " ").replace(":", " ").replace("-", " ").split()
        assert set(words) - filler <= known


# ----------------------------------------------------------------------------------------------------------
# Renderer and datasets
# ----------------------------------------------------------------------------------------------------------


def _foreground(image: np.ndarray, background: str) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(w.RGB[background])).sum(-1) > 60


@pytest.mark.parametrize("a", random.Random(3).sample(w.all_attributes(), 40), ids=str)
def test_render_draws_the_shape_in_its_place_and_colour(a):
    image = np.asarray(w.render(a, random.Random(4)))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == w.RGB[a.background] and tuple(image[-1, -1]) == w.RGB[a.background]
    mask = _foreground(image, a.background)
    assert 40 < mask.sum() < 250  # a shape of a sensible size, not the whole image
    ys, xs = np.nonzero(mask)
    centre = ((xs.mean() + 0.5) / 32, (ys.mean() + 0.5) / 32)
    nearest = min(w.POSITIONS, key=lambda p: sum((c - e) ** 2 for c, e in zip(w.CENTRES[p], centre)))
    assert nearest == a.position
    colour = np.median(image[mask & (np.abs(image.astype(int) - w.RGB[a.colour]).sum(-1) < 30)], axis=0)
    assert np.abs(colour - w.RGB[a.colour]).max() <= 2


def test_the_four_shapes_have_clearly_different_outlines():
    draw = lambda shape: _foreground(np.asarray(w.render(w.Attributes("red", shape, "center", "black"))), "black")
    masks = {shape: draw(shape) for shape in w.SHAPES}
    for i, first in enumerate(w.SHAPES):
        for second in w.SHAPES[i + 1 :]:
            a, b = masks[first], masks[second]
            assert (a ^ b).sum() >= 20, (first, second)  # pixels in one shape but not the other


def test_render_is_deterministic_and_jitter_is_small_but_real():
    a = w.Attributes("green", "triangle", "center", "white")
    exact = np.asarray(w.render(a))
    assert np.array_equal(exact, np.asarray(w.render(a)))
    one, again = np.asarray(w.render(a, random.Random(5))), np.asarray(w.render(a, random.Random(5)))
    other = np.asarray(w.render(a, random.Random(6)))
    assert np.array_equal(one, again) and not np.array_equal(one, other)
    assert (np.abs(one.astype(int) - other).sum(-1) > 0).mean() < 0.25  # jitter moves edges, not the shape


def test_dataset_is_class_balanced_and_seeded():
    data = w.make_dataset(680, seed=7)
    assert data.images.shape == (680, 32, 32, 3) and data.labels.shape == (680, 4)
    assert set(Counter(data.attributes()).values()) == {2}  # every combination exactly twice
    assert all(w.attributes_of(c) == a for c, a in zip(data.captions, data.attributes()))
    again = w.make_dataset(680, seed=7)
    assert np.array_equal(data.images, again.images) and data.captions == again.captions
    assert data.captions != w.make_dataset(680, seed=8).captions


# ----------------------------------------------------------------------------------------------------------
# Prompt streams
# ----------------------------------------------------------------------------------------------------------


def _differing(a: w.Attributes, b: w.Attributes) -> tuple[str, ...]:
    return tuple(n for n in w.ATTRIBUTE_NAMES if getattr(a, n) != getattr(b, n))


def test_prompt_stream_is_seeded_and_parses():
    first = list(ps.prompt_stream(300, seed=1))
    assert first == list(ps.prompt_stream(300, seed=1)) and first != list(ps.prompt_stream(300, seed=2))
    assert all(w.attributes_of(text) == a for text, a in first)


def test_prompt_stream_behaves_like_sessions():
    stream = list(ps.stream_prompts(3000, seed=3))
    kinds = Counter(p.kind for p in stream)
    assert set(kinds) == set(ps.KINDS)
    assert 0.45 < kinds["refine"] / len(stream) < 0.65 and kinds["fresh"] > 100
    last: dict[int, ps.StreamPrompt] = {}
    seen: dict[int, set[str]] = {}
    for p in stream:
        prev = last.get(p.session)
        if p.kind == "fresh":
            assert prev is None
        elif p.kind == "refine":
            assert _differing(p.attributes, prev.attributes) == p.changed and len(p.changed) in (1, 2)
        elif p.kind == "repeat":
            assert p.caption in seen[p.session]
        else:
            assert p.attributes == prev.attributes and p.caption != prev.caption
        last[p.session] = p
        seen.setdefault(p.session, set()).add(p.caption)
    assert len(last) > 100 and max(Counter(p.session for p in stream).values()) > 10  # many sessions, some long


def test_repeats_are_exact_so_a_cache_hits():
    stream = list(ps.prompt_stream(1000, seed=4))
    repeated = sum(count - 1 for count in Counter(text for text, _ in stream).values())
    assert 0.1 < repeated / len(stream) < 0.4


def test_neighbour_pairs_span_every_relation():
    pairs = ps.neighbour_pairs(160, seed=5)
    assert Counter(p.relation for p in pairs) == dict.fromkeys(ps.RELATIONS, 20)
    changed = Counter()
    for p in pairs:
        differing = tuple(
            n for n in w.ATTRIBUTE_NAMES if getattr(p.attributes, n) != getattr(p.neighbour_attributes, n)
        )
        assert differing == p.changed
        assert w.attributes_of(p.prompt) == p.attributes and w.attributes_of(p.neighbour) == p.neighbour_attributes
        if p.relation == "repeat":
            assert p.prompt == p.neighbour
        elif p.relation == "paraphrase":
            assert p.prompt != p.neighbour and not p.changed
        else:
            assert len(p.changed) == int(p.relation[0])
        changed.update(p.changed)
    assert all(changed[n] >= 20 for n in w.ATTRIBUTE_NAMES)  # every attribute gets changed
    assert ps.neighbour_pairs(160, seed=5) == pairs
