"""Reporting a batch's denoising progress without slowing the denoising loop.

The engine calls its step hook before every step. `StepReporter` is that hook: it only notes the step
in memory and calls the next hook (the lease keeper's `stop_if_lost`); a background thread writes the
latest step to Redis (webapp/ledger/progress.py), at most once per `interval_s`. So the loop never waits
on the network, however slow Redis is, and a fast model does not write on every step.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import redis

from webapp.ledger.progress import write_steps

log = logging.getLogger(__name__)

StepHook = Callable[[int, int], None]
REPORT_INTERVAL_S = 0.25  # at most four writes a second per batch


class StepReporter:
    def __init__(
        self, request_ids: list[uuid.UUID], next_hook: StepHook | None = None, interval_s: float = REPORT_INTERVAL_S
    ) -> None:
        self.request_ids = request_ids
        self.next_hook = next_hook
        self.interval_s = interval_s
        self.writes = 0
        self._latest: tuple[int, int] | None = None
        self._written: tuple[int, int] | None = None
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="step-reporter", daemon=True)

    def __call__(self, step: int, steps: int) -> None:
        """The engine's step hook: note the step (a tuple assignment and an Event.set), then chain."""
        self._latest = (step, steps)
        self._changed.set()
        if self.next_hook is not None:
            self.next_hook(step, steps)

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
        while not self._stop.is_set():
            self._changed.wait()
            self._changed.clear()
            if self._stop.is_set():
                return
            self.flush()
            self._stop.wait(self.interval_s)  # coalesce the steps of the next interval into one write

    def __enter__(self) -> StepReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join()
