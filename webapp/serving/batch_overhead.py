"""The seconds a live batch holds its worker beyond the engine's denoising loop, as the workers measured them.

A latency profile times the model alone. A live worker also claims the batch, loads the cached latents,
saves every image and writes the ledger before the user sees "succeeded": tens to hundreds of
milliseconds per batch (about 70 ms median, 110 ms 90th percentile with 16 emulated workers on 2 cores).
Routing that plans with the bare profile sees a worker free that is still saving, so a request sent with
little slack ends just after its deadline. Each worker stores that extra time on its BatchRecord
(`overhead_seconds`, shown in the admin). With T2I_MEASURED_OVERHEAD=1 the live scheduler adds the 90th
percentile of the recent ones to every batch of the profile it plans, routes, sheds and admits with
(live_config.scheduler_config); with the median, a request planned to finish just in time would still be
late about every other time. The simulator's profile stays the model's own. Off by default: on 16 emulated
workers it moved no violation beyond run-to-run noise and doubled the redirect rate (docs/loadgen.md,
"Per-batch overhead").

Rounded up to OVERHEAD_STEP_S, kept until a reading leaves it by more than a step, and read at most every
OVERHEAD_REFRESH_S per process: the value is part of the policy's configuration key, so a jitter of a few
milliseconds must not rebuild the policy, and routing must not pay a query per request for it.
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
_in_use: float | None = None  # the value routing plans with
_read_at = -math.inf  # monotonic time of the last reading


def measured_overhead_s() -> float:
    """The value in use: the OVERHEAD_PERCENTILE-th percentile of the last OVERHEAD_SAMPLE batches' overheads,
    rounded up to OVERHEAD_STEP_S, moved only when a reading leaves it by more than a step (`settle`);
    0 before any batch, and with T2I_MEASURED_OVERHEAD off."""
    global _in_use, _read_at
    if not settings.T2I_MEASURED_OVERHEAD:
        return 0.0
    now = time.monotonic()
    with _lock:
        if _in_use is not None and now - _read_at < OVERHEAD_REFRESH_S:
            return _in_use
    recent = list(
        BatchRecord.objects.filter(overhead_seconds__isnull=False)
        .order_by("-id")
        .values_list("overhead_seconds", flat=True)[:OVERHEAD_SAMPLE]
    )
    reading = 0.0
    if recent:
        reading = (
            math.ceil(float(np.percentile(recent, OVERHEAD_PERCENTILE)) / OVERHEAD_STEP_S - 1e-9) * OVERHEAD_STEP_S
        )
    with _lock:
        _in_use, _read_at = settle(_in_use, round(reading, 3)), now
        return _in_use


def settle(in_use: float | None, reading: float) -> float:
    """Hysteresis: a reading within one step of the value in use keeps it. A p90 over 50 batches flickers
    between neighbouring steps every few readings (11 changes in 15 minutes of a fidelity run, none with this
    rule), and every change rebuilds the policy, which forgets its similarity ranks and upgrade budget."""
    if in_use is None or abs(reading - in_use) > OVERHEAD_STEP_S + 1e-9:
        return reading
    return in_use


def forget_measured_overhead() -> None:
    """Read the ledger again on the next call, with no value in use (tests; a deployment reads every
    OVERHEAD_REFRESH_S)."""
    global _in_use, _read_at
    with _lock:
        _in_use, _read_at = None, -math.inf
