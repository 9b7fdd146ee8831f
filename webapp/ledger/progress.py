"""Denoising progress of running requests: a short-lived Redis key per request, not a row field.

The row stays the source of truth for the state; progress changes several times a second and is
worthless once the row ends, so it lives in Redis with a TTL. The GPU worker writes the batch's step
(workers/progress.py, at most a few times a second, off the denoising loop's thread); the web reads one
key per request (webapp/serving/request_progress.py). A missing key means "no step reported yet".
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from .models import ACTIVE_STATES, GenerationRequest
from .publishing import broker

log = logging.getLogger(__name__)

KEY_PREFIX = "t2i:progress:"
PREVIEW_PREFIX = "t2i:preview:"  # a small PNG of the request's current latent (workers/progress.py)
TTL_S = 300  # outlives any batch's last report by far; a stale key is ignored once the row is no longer running


@dataclass(frozen=True)
class StepSnapshot:
    """The batch reached denoising step `step` (0-based index of the step about to run) of `steps`."""

    step: int
    steps: int
    at: float  # time.time() of the report


def progress_key(request_id: uuid.UUID | str) -> str:
    return f"{KEY_PREFIX}{request_id}"


def write_steps(request_ids: Iterable[uuid.UUID | str], step: int, steps: int, at: float | None = None) -> None:
    """Record the batch's step for each of its requests, in one round trip. Raises RedisError."""
    value = json.dumps({"step": step, "steps": steps, "at": time.time() if at is None else at})
    pipe = broker().pipeline(transaction=False)
    for request_id in request_ids:
        pipe.set(progress_key(request_id), value, ex=TTL_S)
    pipe.execute()


def write_previews(pngs: dict[uuid.UUID, bytes]) -> None:
    """Replace each request's live preview, in one round trip. Raises RedisError."""
    pipe = broker().pipeline(transaction=False)
    for request_id, png in pngs.items():
        pipe.set(f"{PREVIEW_PREFIX}{request_id}", png, ex=TTL_S)
    pipe.execute()


def read_preview(request_id: uuid.UUID | str) -> bytes | None:
    """The request's latest live preview (PNG bytes), or None (none yet, expired, Redis unreachable)."""
    try:
        return broker().get(f"{PREVIEW_PREFIX}{request_id}")
    except redis.RedisError:
        log.warning("could not read the preview of %s", request_id, exc_info=True)
        return None


def ended_rows(request_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The rows of a running batch that are no longer active (cancelled, or deleted by their owner): the
    worker drops them from the batch. Requeued rows stay active: losing a lease is the lease keeper's."""
    return set(
        GenerationRequest.objects.filter(pk__in=request_ids)
        .exclude(status__in=ACTIVE_STATES)
        .values_list("pk", flat=True)
    )


def read_step(request_id: uuid.UUID | str) -> StepSnapshot | None:
    """The last reported step of one request, or None (none yet, expired, or Redis unreachable: progress is
    a nicety, so a read problem shows no progress rather than an error)."""
    try:
        raw = broker().get(progress_key(request_id))
    except redis.RedisError:
        log.warning("could not read progress of %s", request_id, exc_info=True)
        return None
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return StepSnapshot(int(data["step"]), int(data["steps"]), float(data["at"]))
    except (ValueError, KeyError, TypeError):
        return None
