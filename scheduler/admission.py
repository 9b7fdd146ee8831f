"""Admission control under overload (issue 11, item 5): one rule for the live submit path and the simulator.

After the policy has routed a request, its predicted finish is now + the chosen worker's backlog +
L(K′, 1). If that is past the deadline the request cannot make it where it was sent, and the mode says:

* `queue`: accept it anyway (it will most likely be late; the classic behaviour);
* `degrade`: serve it at a faster level its cached neighbour holds (the least approximation that makes the
  deadline, on the worker that frees up first); if no level makes it, refuse it;
* `shed`: refuse it at once, so the client hears "try later" in milliseconds instead of waiting.

A refused request is a violation (the simulator counts it as dropped; the API answers 503 with
Retry-After). Everything here loops over the levels and calls `soonest_free` once: no per-request work
grows with the history.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .dispatch import soonest_free
from .interface import ClusterView

QUEUE, DEGRADE, SHED = "queue", "degrade", "shed"
ADMISSION_MODES = (QUEUE, DEGRADE, SHED)


@dataclass(frozen=True, slots=True)
class Admission:
    accept: bool
    worker: int
    k_prime: int
    degraded: bool = False
    retry_after_s: float = 0.0  # for a refusal: when the soonest-free worker is expected to be free


def admit(
    mode: str,
    now: float,
    deadline: float,
    worker: int,
    k_prime: int,
    levels_available: tuple[int, ...],
    cluster: ClusterView,
    latency: Callable[[int, int], float],
) -> Admission:
    """The verdict on a request the policy sent to (`worker`, `k_prime`); see the module docstring."""
    if mode == QUEUE or now + cluster.backlog_s(worker, now) + latency(k_prime, 1) <= deadline:
        return Admission(True, worker, k_prime)
    if mode not in ADMISSION_MODES:
        raise ValueError(f"unknown admission mode {mode!r}; choose one of {ADMISSION_MODES}")
    soonest, backlog = soonest_free(list(range(len(cluster.queue_len))), cluster, now)
    if mode == DEGRADE:
        for level in sorted(lv for lv in levels_available if lv > k_prime):
            if now + backlog + latency(level, 1) <= deadline:
                return Admission(True, soonest, level, degraded=True)
    return Admission(False, worker, k_prime, retry_after_s=max(1.0, math.ceil(backlog)))
