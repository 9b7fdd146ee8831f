"""Soft and hard time limits for one batch (issue 11, item 8).

A batch that runs far past what its profile predicts (a wedged GPU, a pathological input) must not hold
the worker and its rows for ever. The soft limit raises `BatchTimedOut` in the task (SIGALRM in the
process's main thread, where Celery's prefork child runs tasks), which ends the rows `failed` with the
reason; the hard limit, for code that does not return to Python, records the failure from a watchdog
thread and ends the process, which Celery's pool replaces.

Limits: expected = L(K′, b) of the profile (or the slowest recent measurement of that K′ and batch size,
if slower), scaled up by the batch's pixels and steps relative to the defaults; soft = max(floor, 4 ×
expected); hard = soft + max(30 s, expected). The floor (T2I_TASK_TIME_LIMIT_FLOOR_S, default 120 s)
covers engines slower than their profile, such as a real model on a CPU.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
SOFT_MULTIPLE = 4.0
HARD_EXTRA_MIN_S = 30.0
HARD_EXIT_CODE = 70


class BatchTimedOut(Exception):
    pass


@dataclass(frozen=True)
class TimeLimits:
    soft_s: float
    hard_s: float


def limits_for(expected_s: float, floor_s: float, scale: float = 1.0) -> TimeLimits:
    """The limits of the module docstring for a batch expected to take `expected_s` at the profile's
    shape, `scale` times more work (pixels × steps ratio, at least 1)."""
    expected = max(0.0, expected_s) * max(1.0, scale)
    soft = max(floor_s, SOFT_MULTIPLE * expected)
    return TimeLimits(soft_s=soft, hard_s=soft + max(HARD_EXTRA_MIN_S, expected))


class BatchTimeLimit:
    """Context manager enforcing `limits` on the enclosed block; `on_hard()` runs before the process ends."""

    def __init__(self, limits: TimeLimits, on_hard: Callable[[], None]) -> None:
        self.limits = limits
        self.on_hard = on_hard
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="batch-hard-limit", daemon=True)
        self._soft_armed = False

    def _watch(self) -> None:
        if self._done.wait(self.limits.hard_s):
            return
        log.error("batch passed its hard time limit of %.0f s; ending this worker process", self.limits.hard_s)
        try:
            self.on_hard()
        finally:
            os._exit(HARD_EXIT_CODE)

    @staticmethod
    def _on_alarm(signum, frame) -> None:
        raise BatchTimedOut()

    def __enter__(self) -> BatchTimeLimit:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.limits.soft_s)
            self._soft_armed = True
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._soft_armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
