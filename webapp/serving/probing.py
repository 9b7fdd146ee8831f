"""The probing limit: a user may not send many near-duplicate prompts in a short window.

Approximate caches leak through hits (Sun, Jie, Liu, USENIX Security 2026): an attacker who sends many
small variations of a guessed prompt and watches similarity, K* or latency learns which variation is
close to someone else's cached prompt. This check makes that search slow. It runs at submit, after
routing has embedded the prompt, and compares the new prompt with the owner's own requests of the last
T2I_PROBE_WINDOW_SECONDS (at most T2I_PROBE_HISTORY of them, newest first, read by the (owner,
-created_at) index). Another prompt is a near-duplicate when, after normalising both (case folded,
punctuation dropped, whitespace collapsed), either

- their Levenshtein distance is at most T2I_PROBE_EDIT_DISTANCE × the longer one's length, or
- their MiniLM cosine similarity (the embedding routing computed; the ledger keeps each row's) is at
  least T2I_PROBE_SIMILARITY.

An identical prompt is not a near-duplicate: asking for more seeds of one prompt probes nothing. When
T2I_PROBE_LIMIT near-duplicates are already in the window the request is refused (the API answers 429
with Retry-After, the form shows the message) until enough of them have left the window. Staff are
exempt; T2I_PROBE_LIMIT = 0 turns the check off. Refused prompts leave no row, so they do not count.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from rapidfuzz.distance import Levenshtein

from webapp.ledger.models import GenerationRequest

_NON_WORD = re.compile(r"[^\w\s]+")


class NearDuplicateLimit(Exception):
    """Too many near-duplicates of a prompt in the window; `retry_after` is in whole seconds."""

    def __init__(self, count: int, limit: int, window_s: float, retry_after: int) -> None:
        super().__init__(
            f"Too many near-duplicate prompts: {count} of your requests in the last {window_s:g} s differ "
            f"from this prompt by only a few characters or mean almost the same, and at most {limit} such "
            f"prompts are accepted per {window_s:g} s (a limit against probing the shared image cache). "
            f"Retry in {retry_after} s, or send a prompt that differs more. Repeating the very same prompt "
            f"(for other seeds) is not limited."
        )
        self.count, self.limit, self.window_s, self.retry_after = count, limit, window_s, retry_after


def normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


def is_near_duplicate(a: str, a_embedding, b: str, b_embedding) -> bool:
    """Whether normalised prompts `a` and `b` (with their L2-normalised embeddings, or None) are near-duplicates."""
    if a == b:
        return False
    if (
        a_embedding is not None
        and b_embedding is not None
        and float(np.dot(np.asarray(a_embedding), np.asarray(b_embedding))) >= settings.T2I_PROBE_SIMILARITY
    ):
        return True
    cutoff = math.floor(settings.T2I_PROBE_EDIT_DISTANCE * max(len(a), len(b)))
    return Levenshtein.distance(a, b, score_cutoff=cutoff) <= cutoff


def check_near_duplicates(owner, prompt: str, embedding, now: datetime) -> None:
    """Raise NearDuplicateLimit if `owner` already sent T2I_PROBE_LIMIT near-duplicates of `prompt`
    within the window ending at `now`."""
    limit = settings.T2I_PROBE_LIMIT
    if limit <= 0 or owner.is_staff:
        return
    window = timedelta(seconds=settings.T2I_PROBE_WINDOW_SECONDS)
    recent = list(
        GenerationRequest.objects.filter(owner=owner, created_at__gt=now - window)
        .order_by("-created_at")
        .values_list("prompt", "embedding", "created_at")[: settings.T2I_PROBE_HISTORY]
    )
    if len(recent) < limit:
        return
    text = normalise(prompt)
    matches = [
        created
        for other, other_emb, created in recent
        if is_near_duplicate(text, embedding, normalise(other), other_emb)
    ]
    if len(matches) < limit:
        return
    # Newest first: accepted again once the limit-th newest near-duplicate has left the window.
    wait = (matches[limit - 1] + window - now).total_seconds()
    raise NearDuplicateLimit(len(matches), limit, window.total_seconds(), max(1, math.ceil(wait)))
