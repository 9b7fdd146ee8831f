"""Event-triggered re-planning in the live system (issue 13, lever 1).

Beat runs the controller every period (the floor). Between periods, routing asks the policy whether the
arrivals since the current plan depart from its demand (`Policy.replan_due`, the same rule the simulator
runs); if so, it asks for one controller run now. Each web process sees only its share of the arrivals,
so the count comes from the ledger, at most once a second per process; a Redis key that lives for the
policy's minimum gap deduplicates the requests of all processes, so the controller runs once.

When prompt_aware's queue-first mode ends in a process (`PromptAware.take_requeue`), routing asks for a
controller run that also re-routes the rows the mode queued (`request_requeue`), deduplicated the same way.
With early re-plans switched off it only leaves a mark in Redis (`defer_requeue`), and the next controller run
of the period re-routes them (`take_deferred_requeue`), as the simulator does at its next tick. Either way it
writes when the mode ended (`publish_queue_first_end`); every other process that routes queue-first reads that
time and ends its own mode too (`end_queue_first_if_ended`; routing reads the time with the heartbeats, a
rebuilt policy through `follow_queue_first_end`), so the web processes leave the mode together, as the
simulator's single dispatcher does.
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
REQUEUE_KEY = "t2i:requeue-requested"
REQUEUE_PENDING_KEY = "t2i:requeue-pending"
QUEUE_FIRST_END_KEY = "t2i:queue-first-ended-at"

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


def request_requeue(gap_s: float) -> bool:
    """Queue-first has ended in this process (a request the queues could not take at K′ = 0): ask for a
    controller run now that re-plans and re-routes the rows the mode queued (`controller.requeue_queue_first`).
    Deduplicated across processes for the policy's minimum gap, like the early re-plan; True when sent."""
    return _send_once(gap_s, REQUEUE_KEY, requeue=True)


def defer_requeue() -> None:
    """Queue-first has ended with early re-plans off: mark the re-route for the period's controller run."""
    try:
        broker().set(REQUEUE_PENDING_KEY, "1")
    except (redis.RedisError, OSError):  # the rows stay at K′ = 0, as queued
        log.warning("could not mark the re-route of queue-first rows", exc_info=True)


def take_deferred_requeue() -> bool:
    """Whether a re-route was deferred to this controller run (`defer_requeue`); clears the mark."""
    try:
        return broker().getdel(REQUEUE_PENDING_KEY) is not None
    except (redis.RedisError, OSError):
        log.warning("could not read the deferred re-route mark", exc_info=True)
        return False


def publish_queue_first_end(at: float) -> None:
    """Queue-first ended in this process at `at` (epoch seconds): tell the other web processes."""
    try:
        broker().set(QUEUE_FIRST_END_KEY, repr(at))
    except (redis.RedisError, OSError):  # the others end their mode at their own first full queue
        log.warning("could not publish the end of queue-first", exc_info=True)


def queue_first_end() -> float | None:
    """When queue-first last ended in any web process (epoch seconds), or None if never (or Redis is down)."""
    try:
        return queue_first_end_from(broker().get(QUEUE_FIRST_END_KEY))
    except (redis.RedisError, OSError):
        return None


def queue_first_end_from(mark: bytes | str | None) -> float | None:
    """The time in a QUEUE_FIRST_END_KEY value read by the caller (routing reads it with the heartbeats)."""
    return float(mark) if mark is not None else None


def follow_queue_first_end(policy: Policy) -> None:
    """If this process's policy routes queue-first, read when the mode last ended in any process
    (`queue_first_end`: one Redis read, only while the mode is on) and end it here too if it has."""
    if getattr(policy, "in_queue_first", False):
        end_queue_first_if_ended(policy, queue_first_end())


def end_queue_first_if_ended(policy: Policy, ended_at: float | None) -> None:
    """The mode has ended in some process at `ended_at` (None: not yet): end it here too
    (`PromptAware.end_queue_first`: no re-plan or re-route of its own)."""
    if ended_at is not None:
        policy.end_queue_first(ended_at)


def _send_once(gap_s: float, key: str = DEDUPE_KEY, requeue: bool = False) -> bool:
    try:
        if not broker().set(key, "1", nx=True, ex=max(1, round(gap_s))):
            return False  # another process asked within the gap
        app.send_task(
            CONTROL_TASK,
            kwargs={"requeue": True} if requeue else {},
            queue=CONTROL_QUEUE,
            retry=False,
            expires=max(1.0, gap_s),
        )
    except (redis.RedisError, OSError):  # the period still re-plans; a queue-first row stays at K′ = 0
        log.warning("could not request an early re-plan", exc_info=True)
        return False
    if requeue:
        log.info("queue-first ended: re-plan and re-route of its queued rows requested")
    else:
        log.info("arrivals departed from the plan's demand: early re-plan requested")
    return True


def reset() -> None:
    """Forget when this process last checked (tests)."""
    global _checked_at
    _checked_at = 0.0
