"""The seconds a live batch holds its worker beyond the engine's denoising loop, as the workers measured them.

A latency profile times the model alone. A live worker also claims the batch, loads the cached latents,
saves every image and writes the ledger before the user sees "succeeded": tens to hundreds of
milliseconds per batch (65 ms median, 100 ms 90th percentile with 16 emulated workers on 2 cores).
Routing that plans with the bare profile sees a worker free that is still saving, so a request sent with
little slack ends just after its deadline. Each worker stores that extra time on its BatchRecord
(`overhead_seconds`); the live scheduler adds the 90th percentile of the recent ones to every batch of
the profile it plans, routes and sheds with (live_config.scheduler_config): with the median, a request
planned to finish just in time would still be late about every other time. The simulator's profile stays
the model's own. T2I_MEASURED_OVERHEAD=0 plans with the bare profile live too.

Rounded up to OVERHEAD_STEP_S and read at most every OVERHEAD_REFRESH_S per process: the value is part of
the policy's configuration key, so a jitter of a few milliseconds must not rebuild the policy, and routing
must not pay a query per request for it.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
from django.conf import settings

from webapp.ledger.models import BatchRecord

OVERHEAD_SAMPLE = 50  # the last batches whose overhead is measured
OVERHEAD_PERCENTILE = 90
OVERHEAD_STEP_S = 0.05
OVERHEAD_REFRESH_S = 10.0

_lock = threading.Lock()
_cached: tuple[float, float] | None = None  # (value, monotonic time read)


def measured_overhead_s() -> float:
    """The OVERHEAD_PERCENTILE-th percentile of the last OVERHEAD_SAMPLE batches' overheads, rounded up to
    OVERHEAD_STEP_S; 0 before any, and with T2I_MEASURED_OVERHEAD off."""
    global _cached
    if not settings.T2I_MEASURED_OVERHEAD:
        return 0.0
    now = time.monotonic()
    with _lock:
        if _cached is not None and now - _cached[1] < OVERHEAD_REFRESH_S:
            return _cached[0]
    recent = list(
        BatchRecord.objects.filter(overhead_seconds__isnull=False)
        .order_by("-id")
        .values_list("overhead_seconds", flat=True)[:OVERHEAD_SAMPLE]
    )
    value = 0.0
    if recent:
        steps = math.ceil(float(np.percentile(recent, OVERHEAD_PERCENTILE)) / OVERHEAD_STEP_S - 1e-9)
        value = round(steps * OVERHEAD_STEP_S, 3)
    with _lock:
        _cached = (value, now)
    return value


def forget_measured_overhead() -> None:
    """Read the ledger again on the next call (tests; a deployment waits OVERHEAD_REFRESH_S)."""
    global _cached
    with _lock:
        _cached = None
