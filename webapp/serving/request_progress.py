"""What a person watching one request wants to know right now: how far it is, where it waits, when it ends.

- **progress** (0–1), **step** of **steps_to_run**: a request served at K′ of N runs N − K′ steps; its
  batch's step i (reported by the worker, webapp/ledger/progress.py) means i − K′ of them are done (a late
  joiner with K′ > i has done none yet).
- **queue_position** (1 = next): among the rows queued on the same worker, in the order a worker claims
  them as far as it can be told from one row: interactive before batch, then by arrival. The claim's
  owner round-robin (webapp/ledger/transitions.py) may move a row ahead of another owner's earlier rows,
  so this is an approximation that errs on the late side for light users.
- **eta_seconds**: running: the steps left at this batch's own measured pace (time since it started over
  the steps done), or the profile's batch time before the first step is reported; queued: what is left of
  the worker's running batch, plus one batch time per batch ahead (⌈position / batch limit⌉ batches,
  including its own) from the plan's latency profile L(K′, b), scaled by pixels and steps as the
  worker's time limits are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.db.models import Q

from webapp.ledger.models import GenerationRequest, Priority, Status
from webapp.ledger.progress import StepSnapshot, read_step

from .live_config import scheduler_config, serving_config


@dataclass(frozen=True)
class LiveProgress:
    progress: float | None = None
    step: int | None = None
    steps_to_run: int | None = None
    queue_position: int | None = None
    eta_seconds: float | None = None


def steps_to_run(row: GenerationRequest) -> int:
    return max(1, row.steps - (row.k_served or 0))


def row_progress(row: GenerationRequest) -> LiveProgress:
    """What the row alone says, without asking Redis or the queue (cheap; for responses to a POST)."""
    total = steps_to_run(row)
    if row.status == Status.SUCCEEDED:
        return LiveProgress(1.0, total, total, None, 0.0)
    if row.status == Status.QUEUED:
        return LiveProgress(0.0, 0, total)
    if row.status == Status.RUNNING:
        return LiveProgress(None, None, total)
    return LiveProgress(None, None, total)


def live_progress(row: GenerationRequest, now: float | None = None) -> LiveProgress:
    """Progress, queue position and ETA of one row (a Redis read and a few indexed queries when active)."""
    now = time.time() if now is None else now
    if row.status == Status.RUNNING:
        return _running(row, read_step(row.id), now)
    if row.status == Status.QUEUED and row.worker is not None:
        return _queued(row, now)
    return row_progress(row)


def _running(row: GenerationRequest, snap: StepSnapshot | None, now: float) -> LiveProgress:
    total = steps_to_run(row)
    done = 0 if snap is None else min(total, max(0, snap.step - (row.k_served or 0)))
    return LiveProgress(done / total, done, total, None, _running_eta(row, done, total, snap, now))


def _running_eta(row: GenerationRequest, done: int, total: int, snap: StepSnapshot | None, now: float) -> float:
    started = row.started_at.timestamp() if row.started_at else now
    if snap is not None and done > 0 and snap.at > started:
        per_step = (snap.at - started) / done  # this batch's own pace, set-up included (errs late)
        return max(0.0, (total - done) * per_step - (now - snap.at))
    return max(0.0, batch_seconds(row, row.batch_size or 1) - (now - started))


def _queued(row: GenerationRequest, now: float) -> LiveProgress:
    position = queue_position(row)
    limit = max(1, row.batch_limit or 1)
    batches = math.ceil(position / limit)
    running = (
        GenerationRequest.objects.filter(worker=row.worker, status=Status.RUNNING)
        .only("id", "steps", "k_served", "width", "height", "started_at", "batch_size", "status")
        .first()
    )
    ahead_s = 0.0  # what is left of the batch the worker is running now
    if running is not None:
        ahead_s = live_progress(running, now).eta_seconds or 0.0
    eta = ahead_s + batches * batch_seconds(row, min(limit, position))
    return LiveProgress(0.0, 0, steps_to_run(row), position, eta)


def queue_position(row: GenerationRequest) -> int:
    """1 + the queued rows on the same worker that a claim takes first (see the module docstring)."""
    waiting = GenerationRequest.objects.filter(worker=row.worker, status=Status.QUEUED).exclude(pk=row.pk)
    earlier = Q(created_at__lt=row.created_at) | Q(created_at=row.created_at, pk__lt=row.pk)
    if row.priority == Priority.BATCH:
        ahead = waiting.filter(~Q(priority=Priority.BATCH) | earlier)
    else:
        ahead = waiting.filter(earlier, ~Q(priority=Priority.BATCH))
    return ahead.count() + 1


def batch_seconds(row: GenerationRequest, batch: int) -> float:
    """The plan's profile time of a batch of `batch` rows at this row's K′, scaled to its pixels and steps."""
    config = serving_config()  # the process's cached copy (live_config)
    profile = scheduler_config(config).profile
    k_prime = row.k_served or 0
    if k_prime not in profile.levels:
        k_prime = 0
    scale = (row.width * row.height) / max(1, config.default_size**2) * row.steps / max(1, config.default_steps)
    return profile.latency(k_prime, batch) * scale
