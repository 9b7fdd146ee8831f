"""Reporting a batch's denoising progress, and its cancelled rows, without slowing the denoising loop.

The engine calls its step hook before every step. `StepReporter` is that hook: it only notes the step
in memory, calls the next hook (the lease keeper's `stop_if_lost`) and returns the positions of the rows
that ended while the batch ran (cancelled, or deleted by their owner), which the engine then drops from its
batch. A background thread writes the latest step to Redis (webapp/ledger/progress.py), at most once per
`interval_s`, and asks the ledger which rows ended, at most once per `cancel_check_s`. So the loop never
waits on the network, however slow Redis or PostgreSQL is, and a fast model does not write on every step.

Live preview: `preview` is the engine's latent hook. At most once per `PREVIEW_INTERVAL_S` it copies the batch's
current latent (the one cost on the denoising thread); the background thread turns it into one small PNG per
request with the engine's linear latent → RGB approximation (`to_rgb`, no VAE) and writes them to Redis.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import redis
from django.db import DatabaseError, connection

from webapp.ledger.progress import ended_rows, write_previews, write_steps

log = logging.getLogger(__name__)

StepHook = Callable[[int, int], "Collection[int] | None"]
EndedRows = Callable[[list[uuid.UUID]], "Collection[uuid.UUID]"]
REPORT_INTERVAL_S = 0.25  # at most four writes a second per batch
CANCEL_CHECK_S = 0.5  # a cancelled row leaves its batch within about this long (plus one step)
PREVIEW_INTERVAL_S = 1.0  # at most one latent copy a second per batch


def preview_pngs(rgb: Any) -> list[bytes]:
    """One PNG per item of a uint8 (b, h, w, 3) tensor: a latent's size (a 512² image gives 64 × 64 pixels)."""
    from PIL import Image

    out = []
    for item in rgb.numpy():
        buffer = io.BytesIO()
        Image.fromarray(item).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


class StepReporter:
    def __init__(
        self,
        request_ids: list[uuid.UUID],
        next_hook: StepHook | None = None,
        interval_s: float = REPORT_INTERVAL_S,
        ended: EndedRows | None = ended_rows,
        cancel_check_s: float = CANCEL_CHECK_S,
    ) -> None:
        self.request_ids = request_ids
        self.next_hook = next_hook
        self.interval_s = interval_s
        self.ended = ended
        self.cancel_check_s = cancel_check_s
        # Positions (in request_ids, which is the engine's item order) of rows that ended while the batch
        # ran. Replaced, never mutated, by the thread: the engine compares it by identity on every step.
        self.dropped: frozenset[int] = frozenset()
        self._checked_at = 0.0
        self.writes = 0
        # The preview: the engine's latent → RGB (the worker sets it once it has the engine; None: no previews).
        self.to_rgb: Callable[[Any], Any] | None = None
        self.preview_interval_s = PREVIEW_INTERVAL_S
        self.previews = 0
        self._want_preview = True
        self._preview: tuple[Any, list[uuid.UUID]] | None = None
        self._preview_at = 0.0
        self._latest: tuple[int, int] | None = None
        self._written: tuple[int, int] | None = None
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="step-reporter", daemon=True)

    def __call__(self, step: int, steps: int) -> frozenset[int]:
        """The engine's step hook: note the step (a tuple assignment and an Event.set), chain, and answer
        which items to drop (an attribute read: the ledger was asked on the reporter's thread)."""
        self._latest = (step, steps)
        self._changed.set()
        if self.next_hook is not None:
            self.next_hook(step, steps)
        return self.dropped

    def preview(self, level: int, latent: Any, positions: list[int]) -> None:
        """The engine's latent hook: when the thread wants a preview, copy the latent for it (and nothing else)."""
        if not self._want_preview or self.to_rgb is None:
            return
        self._want_preview = False
        self._preview = (latent.to("cpu", copy=True), [self.request_ids[p] for p in positions[: latent.shape[0]]])
        self._changed.set()

    def write_preview(self) -> None:
        """Turn the copied latent into PNGs and write them; then ask for the next one after the interval."""
        pending, self._preview = self._preview, None
        if pending is not None:
            latent, ids = pending
            try:
                write_previews(dict(zip(ids, preview_pngs(self.to_rgb(latent)))))
                self.previews += 1
            except Exception:  # a preview is a nicety: never let it end this thread (progress, cancels)
                if not self._warned:
                    log.warning("could not write the preview of batch %s", self.request_ids, exc_info=True)
                    self._warned = True
            self._preview_at = time.monotonic()
        elif not self._want_preview and time.monotonic() - self._preview_at >= self.preview_interval_s:
            self._want_preview = True

    def check_ended(self) -> None:
        """Ask the ledger which rows of the batch ended (one indexed query) and publish their positions."""
        if self.ended is None:
            return
        try:
            gone = self.ended(self.request_ids)
        except DatabaseError:
            log.warning("could not check batch %s for cancelled rows", self.request_ids, exc_info=True)
            return
        dropped = frozenset(i for i, request_id in enumerate(self.request_ids) if request_id in gone)
        if dropped != self.dropped:
            log.info("rows %s ended while their batch ran: the engine drops them", sorted(gone))
            self.dropped = dropped

    def flush(self) -> None:
        """Write the latest step now if it was not written yet."""
        latest = self._latest
        if latest is None or latest == self._written:
            return
        try:
            write_steps(self.request_ids, *latest)
            self._written = latest
            self.writes += 1
        except redis.RedisError:
            if not self._warned:  # once per batch: progress is a nicety, the batch goes on
                log.warning("could not report progress of batch %s", self.request_ids, exc_info=True)
                self._warned = True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._changed.wait()
                self._changed.clear()
                if self._stop.is_set():
                    return
                self.flush()
                if self.to_rgb is not None:
                    self.write_preview()
                if time.monotonic() - self._checked_at >= self.cancel_check_s:
                    self._checked_at = time.monotonic()
                    self.check_ended()
                self._stop.wait(self.interval_s)  # coalesce the steps of the next interval into one write
        finally:
            if self.ended is not None:
                connection.close()  # this thread's own database connection

    def __enter__(self) -> StepReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join()
