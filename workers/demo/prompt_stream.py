"""Prompt streams of the demo world that behave like real users, for approximate-caching experiments.

Real text-to-image traffic (DiffusionDB and the like) is made of *sessions*: a user writes a prompt, then
refines it a word or two at a time, sometimes resubmits the very same prompt, sometimes rewords it; other
users do the same in parallel, and now and then someone starts afresh. :func:`prompt_stream` produces such a
stream over the demo world (several sessions interleaved, seeded); :func:`neighbour_pairs` produces
(prompt, earlier similar prompt) pairs spread over every kind of relation, from an exact repeat to an
unrelated prompt, so that a quality measurement covers the whole range of text similarity.

Django-free and torch-free.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from workers.demo.world import ATTRIBUTE_NAMES, VOCABULARY, Attributes, Wording, all_attributes, caption

KINDS = ("fresh", "refine", "repeat", "paraphrase")


@dataclass(frozen=True)
class StreamConfig:
    """Probabilities of what a session's next prompt is (they need not sum to 1: they are weights)."""

    refine: float = 0.55  # change one attribute (or two, with ``two_changes``) keeping the wording
    repeat: float = 0.15  # resubmit one of the session's earlier prompts, word for word
    paraphrase: float = 0.15  # same attributes, new wording
    new_session: float = 0.15  # a fresh prompt from a new user
    two_changes: float = 0.3  # share of refinements that change two attributes
    concurrent_sessions: int = 4  # sessions interleaved at any time
    session_end: float = 0.12  # chance a session ends after each of its prompts


@dataclass(frozen=True)
class StreamPrompt:
    caption: str
    attributes: Attributes
    kind: str  # one of KINDS
    session: int
    changed: tuple[str, ...] = ()  # attributes changed from the session's previous prompt (refine)


@dataclass
class _Session:
    ident: int
    attributes: Attributes
    wording: Wording
    history: list[tuple[str, Attributes, Wording]] = field(default_factory=list)  # the session's prompts so far


def change_attributes(a: Attributes, names: tuple[str, ...], rng: random.Random) -> Attributes:
    """``a`` with each named attribute set to a different value (keeping shape and background apart)."""
    for _ in range(100):
        changes = {n: rng.choice([v for v in VOCABULARY[n] if v != getattr(a, n)]) for n in names}
        values = dict(zip(ATTRIBUTE_NAMES, a.as_tuple())) | changes
        if values["colour"] != values["background"]:
            return Attributes(**values)
    raise AssertionError("unreachable: some change of any attribute is always valid")


def _fresh(rng: random.Random, ident: int) -> _Session:
    return _Session(ident, rng.choice(all_attributes()), Wording.random(rng))


def stream_prompts(
    n: int | None = None, seed: int = 0, config: StreamConfig = StreamConfig()
) -> Iterator[StreamPrompt]:
    """A seeded stream of ``n`` prompts (endless with None) from interleaved user sessions."""
    rng = random.Random(seed)
    sessions: list[_Session] = []
    next_ident = 0
    produced = 0
    kinds, weights = ("refine", "repeat", "paraphrase"), (config.refine, config.repeat, config.paraphrase)
    while n is None or produced < n:
        if len(sessions) < config.concurrent_sessions or rng.random() < config.new_session:
            session = _fresh(rng, next_ident)
            next_ident += 1
            sessions.append(session)
            text = caption(session.attributes, session.wording)
            prompt = StreamPrompt(text, session.attributes, "fresh", session.ident)
        else:
            session = rng.choice(sessions)
            prompt = _follow_up(session, rng.choices(kinds, weights)[0], rng, config)
        session.history.append((prompt.caption, session.attributes, session.wording))
        yield prompt
        produced += 1
        if rng.random() < config.session_end and len(session.history) > 1:
            sessions.remove(session)


def _follow_up(session: _Session, kind: str, rng: random.Random, config: StreamConfig) -> StreamPrompt:
    """The session's next prompt of the given kind; the session moves on to it."""
    if kind == "repeat":
        text, session.attributes, session.wording = rng.choice(session.history)  # the user goes back to it
        return StreamPrompt(text, session.attributes, "repeat", session.ident)
    if kind == "paraphrase":
        wording = Wording.random(rng)
        while caption(session.attributes, wording) == session.history[-1][0]:
            wording = Wording.random(rng)
        session.wording = wording
        return StreamPrompt(caption(session.attributes, wording), session.attributes, "paraphrase", session.ident)
    count = 2 if rng.random() < config.two_changes else 1
    names = tuple(sorted(rng.sample(ATTRIBUTE_NAMES, count), key=ATTRIBUTE_NAMES.index))
    session.attributes = change_attributes(session.attributes, names, rng)
    return StreamPrompt(
        caption(session.attributes, session.wording), session.attributes, "refine", session.ident, changed=names
    )


def prompt_stream(n: int | None = None, seed: int = 0, config: StreamConfig = StreamConfig()):
    """(caption, attributes) pairs of :func:`stream_prompts`."""
    for p in stream_prompts(n, seed, config):
        yield p.caption, p.attributes


# ----------------------------------------------------------------------------------------------------------
# Pairs across the range of similarity
# ----------------------------------------------------------------------------------------------------------

# Relations, from most to least similar text. "k changed" keeps the wording and changes k attributes;
# "+ reworded" also changes the wording.
RELATIONS = (
    "repeat",
    "paraphrase",
    "1 changed",
    "1 changed + reworded",
    "2 changed",
    "2 changed + reworded",
    "3 changed",
    "4 changed",
)


@dataclass(frozen=True)
class NeighbourPair:
    prompt: str
    attributes: Attributes
    neighbour: str  # the earlier, cached prompt the request would resume from
    neighbour_attributes: Attributes
    relation: str  # one of RELATIONS
    changed: tuple[str, ...]  # attributes that differ between the two


def neighbour_pairs(n: int, seed: int = 0, relations: tuple[str, ...] = RELATIONS) -> list[NeighbourPair]:
    """``n`` (prompt, neighbour) pairs, the relations in turn (so each gets n / len(relations)), and the
    changed attributes of the "k changed" relations spread evenly over the attributes. Seeded."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        relation = relations[i % len(relations)]
        base, wording = rng.choice(all_attributes()), Wording.random(rng)
        count = int(relation[0]) if relation[0].isdigit() else 0
        names = tuple(sorted(rng.sample(ATTRIBUTE_NAMES, count), key=ATTRIBUTE_NAMES.index))
        other = change_attributes(base, names, rng) if names else base
        other_wording = wording
        if relation == "paraphrase" or relation.endswith("reworded"):
            while caption(other, other_wording) == caption(other, wording):
                other_wording = Wording.random(rng)
        pairs.append(NeighbourPair(caption(other, other_wording), other, caption(base, wording), base, relation, names))
    return pairs
