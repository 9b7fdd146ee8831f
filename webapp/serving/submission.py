"""Accepting a generation request: idempotency, in-flight cap, routing, insert, publish.

Order matters (DESIGN §4): the broker is pinged *before* the row is written, so "Redis is
down" answers 503 and leaves no row behind; the message is sent only after the row is
committed, so a worker never receives an id it cannot see. If the send itself fails after
the commit (Redis died in between) the row stays queued with no publish time and the
reconciler republishes it.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scheduler.embedding_batcher import embed_prompt
from webapp.ledger.models import (
    ACTIVE_STATES,
    BATCH_USERS_GROUP,
    SEED_MAX,
    GenerationRequest,
    Priority,
    ServingConfig,
)
from webapp.ledger.publishing import check_broker, publish

from .live_config import serving_config
from .probing import check_near_duplicates
from .routing import find_neighbour, route_request


class InFlightCapReached(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(
            f"You already have {cap} requests queued or running (the per-user cap). "
            "Wait for some to finish, or cancel queued ones."
        )
        self.cap = cap


class IdempotencyKeyReused(Exception):
    """The key names an earlier request whose parameters differ from this body's (the API answers 422)."""

    def __init__(self, key: str, fields: list[str]) -> None:
        super().__init__(
            f"The Idempotency-Key {key!r} was already used for a different request (it differs in "
            f"{', '.join(fields)}). Retry with the original body, or use a new key for a new request."
        )
        self.fields = fields


class Overloaded(Exception):
    """Admission control refused the request: it could not finish by its deadline (scheduler/admission.py)."""

    def __init__(self, retry_after_s: float, slo_s: float) -> None:
        super().__init__(
            f"The service is overloaded: this request could not finish within its {slo_s:g}-second deadline, so "
            f"it was not accepted (nothing was stored). Retry in about {retry_after_s:.0f} s."
        )
        self.retry_after = max(1, round(retry_after_s))


# Serialises routing and the insert across web processes (see submit): a transaction-scoped advisory lock,
# released at commit, so the next router sees this row in the queues.
_ROUTE_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, %s)"
_ROUTE_LOCK_CLASS = 0x7432  # "t2": the first key of the pair, so other advisory locks never collide
_ROUTE_LOCK_KEY = 0


@dataclass
class Submission:
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float = 7.5
    idempotency_key: str | None = None
    priority: str | None = None  # None: the owner's default (default_priority)


def default_priority(owner) -> str:
    """A user's class when a request does not name one: `batch` for members of the Django group
    `batch-users` (created by migration; add users to it in the admin), `interactive` otherwise.
    Kept in the user's `remembered_facts` when the API's cached token lookup gave it one (webapp/api/auth.py:
    forgotten with that lookup, at once when a user or a group changes in this process)."""
    remembered = getattr(owner, "remembered_facts", None)
    if remembered is not None and "default_priority" in remembered:
        return remembered["default_priority"]
    batch = owner.groups.filter(name=BATCH_USERS_GROUP).exists()
    priority = Priority.BATCH if batch else Priority.INTERACTIVE
    if remembered is not None:
        remembered["default_priority"] = priority
    return priority


def existing_for_key(owner, key: str | None) -> GenerationRequest | None:
    if not key:
        return None
    return GenerationRequest.objects.filter(owner=owner, idempotency_key=key).first()


# Fields a body always states (the serializer fills their defaults), and fields the server fills when a body
# leaves them out (a random seed, the configured size and steps, the owner's class): a retry that leaves one
# of those out matches whatever the original got.
_STATED_FIELDS = ("prompt", "negative_prompt", "guidance_scale")
_SERVER_FILLED_FIELDS = ("seed", "width", "height", "steps", "priority")


def stated_fields(sub: Submission) -> str:
    """The server-filled fields `sub` states, as stored on the row (`GenerationRequest.stated_fields`)."""
    return ",".join(name for name in _SERVER_FILLED_FIELDS if getattr(sub, name) is not None)


def replay_of(original: GenerationRequest, sub: Submission) -> GenerationRequest:
    """The original row if `sub` asks for the same request; else IdempotencyKeyReused naming what differs:
    a value, or a server-filled field stated in one body and left out of the other (by the row's record of
    what its body stated; a row from before that record compares values only)."""
    differing = [name for name in _STATED_FIELDS if getattr(sub, name) != getattr(original, name)]
    differing += [
        name
        for name in _SERVER_FILLED_FIELDS
        if getattr(sub, name) is not None and getattr(sub, name) != getattr(original, name)
    ]
    if original.stated_fields is not None and not differing:
        then, now = (
            set(filter(None, original.stated_fields.split(","))),
            set(filter(None, stated_fields(sub).split(","))),
        )
        differing = [
            f"{name} (stated in one body, left out of the other)"
            for name in _SERVER_FILLED_FIELDS
            if name in then ^ now
        ]
    if differing:
        raise IdempotencyKeyReused(sub.idempotency_key or "", differing)
    return original


def submit(owner, sub: Submission) -> tuple[GenerationRequest, bool]:
    """Create and queue a request; returns (row, created). A repeated idempotency key returns
    the original row with created=False, or raises IdempotencyKeyReused when the body differs from it. Raises
    InFlightCapReached, NearDuplicateLimit, Overloaded or BrokerUnavailable. The cap holds under concurrency:
    the count, the routing decision and the insert share one lock."""
    original = existing_for_key(owner, sub.idempotency_key)
    if original is not None:
        return replay_of(original, sub), False

    config = serving_config()
    _check_in_flight(owner, config)  # fail fast before the costly embedding; checked again under the lock
    check_broker()

    now = timezone.now()
    request_id = uuid.uuid4()
    width = sub.width or config.default_size
    height = sub.height or config.default_size
    steps = sub.steps or config.default_steps
    priority = sub.priority or default_priority(owner)
    deadline = now + timedelta(seconds=config.slo_for(priority))  # the class's SLO
    embedding = embed_prompt(sub.prompt)  # batched with the process's concurrent submits
    # The probing limit (probing.py) before routing: a refused request must not count as an arrival for
    # the policy (demand trigger, similarity ranks, upgrade budget).
    check_near_duplicates(owner, sub.prompt, embedding, now)
    # The nearest cached prompt is looked up outside the lock below (pgvector, the slow part of routing).
    found = find_neighbour(config, owner, sub.prompt, embedding, steps=steps, width=width, height=height)
    try:
        with transaction.atomic():
            # One router at a time, from the read of the queues to the committed insert: two requests routed
            # at once would otherwise both see the same idle worker and queue behind each other (measured:
            # the cause of most expired requests at load 0.6). The lock also makes the in-flight cap atomic.
            with connection.cursor() as cursor:
                cursor.execute(_ROUTE_LOCK_SQL, [_ROUTE_LOCK_CLASS, _ROUTE_LOCK_KEY])
            _check_in_flight(owner, config)
            routing = route_request(
                config=config,
                owner=owner,
                request_id=str(request_id),
                prompt=sub.prompt,
                embedding=embedding,
                arrival=now.timestamp(),
                deadline=deadline.timestamp(),
                width=width,
                height=height,
                steps=steps,
                found=found,
            )
            if routing.refused:
                raise Overloaded(routing.retry_after_s, config.slo_for(priority))
            row = _new_row(request_id, now, owner, sub, width, height, steps, deadline, priority, routing, embedding)
            # The message goes out right after the commit, so its send time is recorded in the insert
            # instead of a second UPDATE; publish() clears it again if the send fails.
            row.accepted_at = row.published_at = timezone.now()
            row.publish_count = 1
            row.save(force_insert=True)
            transaction.on_commit(lambda: publish(row.id, row.worker, recorded=True))
    except IntegrityError:
        # A concurrent POST with the same idempotency key won the race.
        original = existing_for_key(owner, sub.idempotency_key)
        if original is None:
            raise
        return replay_of(original, sub), False
    return row, True


def _new_row(request_id, now, owner, sub: Submission, width, height, steps, deadline, priority, routing, embedding):
    return GenerationRequest(
        id=request_id,
        created_at=now,
        owner=owner,
        idempotency_key=sub.idempotency_key or None,
        stated_fields=stated_fields(sub) if sub.idempotency_key else None,
        prompt=sub.prompt,
        negative_prompt=sub.negative_prompt,
        seed=sub.seed if sub.seed is not None else secrets.randbelow(SEED_MAX + 1),
        width=width,
        height=height,
        steps=steps,
        guidance_scale=sub.guidance_scale,
        deadline=deadline,
        priority=priority,
        worker=routing.worker,
        k_star=routing.k_star,
        k_served=routing.k_prime,
        plan_version=routing.plan_version,
        batch_limit=routing.batch_limit,
        redirected=routing.redirected,
        similarity=routing.similarity,
        cache_neighbor_id=routing.neighbor_id,
        queue_first_neighbor_id=routing.queue_first_neighbor_id,
        cache_neighbor_prompt=routing.neighbor_prompt,
        cache_neighbor_same_owner=routing.neighbor_same_owner,
        quality=routing.quality,
        embedding=embedding,
    )


def _check_in_flight(owner, config: ServingConfig) -> None:
    if config.max_in_flight:
        active = GenerationRequest.objects.filter(owner=owner, status__in=ACTIVE_STATES).count()
        if active >= config.max_in_flight:
            raise InFlightCapReached(config.max_in_flight)
