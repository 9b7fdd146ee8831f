"""Event-triggered re-planning in the live system (issue 13, lever 1).

Beat runs the controller every period (the floor). Between periods, routing asks the policy whether the
arrivals since the current plan depart from its demand (`Policy.replan_due`, the same rule the simulator
runs); if so, it asks for one controller run now. Each web process sees only its share of the arrivals,
so the count comes from the ledger, at most once a second per process; a Redis key that lives for the
policy's minimum gap deduplicates the requests of all processes, so the controller runs once.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import redis

from scheduler.policies import Policy
from webapp.celery import app
from webapp.ledger.models import GenerationRequest
from webapp.ledger.publishing import broker
from webapp.ledger.queues import CONTROL_QUEUE, CONTROL_TASK

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
DEDUPE_KEY = "t2i:replan-requested"

_lock = threading.Lock()
_checked_at = 0.0


def maybe_request_replan(policy: Policy, now: float) -> bool:
    """Ask for a controller run if the policy's trigger fires; True when this call sent the request."""
    global _checked_at
    replan_due = getattr(policy, "replan_due", None)
    if replan_due is None or not policy.config.event_replan:
        return False
    with _lock:
        if time.monotonic() - _checked_at < CHECK_EVERY_S:
            return False
        _checked_at = time.monotonic()
    since = datetime.fromtimestamp(policy.current.time, UTC)
    arrivals = GenerationRequest.objects.filter(created_at__gte=since).count()
    if not replan_due(now, arrivals=arrivals):
        return False
    return _send_once(policy.config.replan_min_gap_s)


def _send_once(gap_s: float) -> bool:
    try:
        if not broker().set(DEDUPE_KEY, "1", nx=True, ex=max(1, round(gap_s))):
            return False  # another process asked within the gap
        app.send_task(CONTROL_TASK, queue=CONTROL_QUEUE, retry=False, expires=max(1.0, gap_s))
    except (redis.RedisError, OSError):  # the period still re-plans; nothing is lost
        log.warning("could not request an early re-plan", exc_info=True)
        return False
    log.info("arrivals departed from the plan's demand: early re-plan requested")
    return True


def reset() -> None:
    """Forget when this process last checked (tests)."""
    global _checked_at
    _checked_at = 0.0
