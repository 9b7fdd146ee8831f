"""Sending a request's message to its worker queue, by task name only (webapp never imports workers)."""

from __future__ import annotations

import json
import logging
import re
import uuid

import redis
from django.conf import settings
from django.db import transaction

from webapp.celery import app

from . import transitions
from .models import GenerationRequest, Status
from .queues import GENERATE_TASK, gpu_queue

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """Redis cannot be reached: nothing can be queued right now."""


_redis_client: redis.Redis | None = None


def broker() -> redis.Redis:
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=2)
    return _redis_client


def check_broker() -> None:
    """Raise BrokerUnavailable unless Redis answers a PING."""
    try:
        broker().ping()
    except redis.RedisError as exc:
        raise BrokerUnavailable(str(exc)) from exc


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def waiting_request_ids(workers: range | list[int]) -> set[str]:
    """Ids of the requests whose generate message is waiting in a GPU queue (Redis lists, one round trip).
    A queued row that is not among them has lost its message (Redis restarted, a worker died holding
    it) or is being claimed right now; the reconciler republishes the former after a grace period."""
    pipe = broker().pipeline(transaction=False)
    for worker in workers:
        pipe.lrange(gpu_queue(worker), 0, -1)
    waiting: set[str] = set()
    for messages in pipe.execute():
        for raw in messages:
            try:
                argsrepr = json.loads(raw).get("headers", {}).get("argsrepr", "")
            except (ValueError, AttributeError):
                continue
            waiting.update(_UUID.findall(argsrepr))
    return waiting


def publish(request_id: uuid.UUID, worker: int, recorded: bool = False) -> bool:
    """Send the generate message; record when. False (logged) if the broker is down: the
    row stays queued and the reconciler republishes it. `recorded`: the row was inserted with this send
    already counted (submit), so only a failure writes to it, taking the record back."""
    try:
        app.send_task(GENERATE_TASK, args=[str(request_id)], queue=gpu_queue(worker), retry=False)
    except Exception:  # kombu raises several connection error types
        log.warning(
            "Could not publish %s to %s; the reconciler will retry", request_id, gpu_queue(worker), exc_info=True
        )
        if recorded:
            _unrecord_publish(request_id)
        return False
    if not recorded:
        transitions.mark_published(request_id)
    return True


def _unrecord_publish(request_id: uuid.UUID) -> None:
    """A send counted at insert did not happen: the row looks never published again, as the reconciler
    expects of one whose message was never sent (it republishes it after its grace period)."""
    try:
        GenerationRequest.objects.filter(pk=request_id, publish_count=1).update(published_at=None, publish_count=0)
    except Exception:  # the database may be failing too; the reconciler still republishes it after republish_s
        log.warning("Could not clear the publish time of %s", request_id, exc_info=True)


def claim_for_message(request_id: uuid.UUID, worker: int, lease_seconds: float) -> list[uuid.UUID]:
    """What one generate message does: claim the fair batch of its row's group
    (`transitions.claim_batch`) and, when that batch passed its own row over, send the row a new
    message once the claim has committed, so that every queued row keeps a message (the argument is
    in claim_batch's docstring). Returns the claimed ids; [] for a message that was a no-op."""
    claimed = transitions.claim_batch(request_id, worker, lease_seconds)
    if claimed and request_id not in claimed:
        transaction.on_commit(lambda: _republish_if_queued(request_id))
    return claimed


def _republish_if_queued(request_id: uuid.UUID) -> None:
    slot = (
        GenerationRequest.objects.filter(pk=request_id, status=Status.QUEUED).values_list("worker", flat=True).first()
    )
    if slot is not None:  # claimed since by another batch: nothing to do
        publish(request_id, slot)
