"""Choosing the worker (and K') for a new request.

Until the scheduler's policies are wired in, requests go round-robin across the worker
queues at K' = 0. The counter lives in Redis so every web process shares one rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from .publishing import broker

ROUND_ROBIN_KEY = "t2i:dispatch:round-robin"


@dataclass(frozen=True)
class Decision:
    worker: int
    k_served: int | None = None
    k_star: int | None = None
    plan_version: int | None = None


def decide(prompt: str) -> Decision:
    worker = (int(broker().incr(ROUND_ROBIN_KEY)) - 1) % settings.T2I_WORKERS
    return Decision(worker=worker, k_served=0)
