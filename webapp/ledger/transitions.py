"""State transitions of a GenerationRequest, each one conditional UPDATE.

Every transition names the states it may leave from, so two processes racing on one row
cannot both win and a terminal state is never overwritten (a database trigger enforces
the latter too, see migration 0002). Functions return whether they changed the row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import ACTIVE_STATES, GenerationRequest, Priority, Status

# The fair order of one batch group's queued rows (see claim_batch). `turn` numbers each owner's rows
# of one class oldest first; owners take turns, the one whose latest start is oldest (or who has never
# started anything) first. Only rows that can make this batch are sorted (turn ≤ limit), plus the head.
_FAIR_BATCH_SQL = """
WITH ranked AS (
    SELECT id, owner_id, created_at,
           CASE WHEN priority = %(batch)s THEN 1 ELSE 0 END AS class_rank,
           row_number() OVER (PARTITION BY owner_id, priority ORDER BY created_at, id) AS turn
    FROM {table}
    WHERE status = 'queued' AND {group}
),
candidates AS MATERIALIZED (
    SELECT * FROM ranked WHERE turn <= %(limit)s OR id = %(head)s
),
owners AS MATERIALIZED (
    SELECT o.owner_id,
           (SELECT max(s.started_at) FROM {table} s WHERE s.owner_id = o.owner_id) AS last_started
    FROM (SELECT DISTINCT owner_id FROM candidates) o
)
SELECT r.id
FROM candidates c
JOIN owners o ON o.owner_id = c.owner_id
JOIN {table} r ON r.id = c.id
WHERE r.status = 'queued'
ORDER BY c.class_rank, c.turn, o.last_started ASC NULLS FIRST, c.created_at, c.id
LIMIT %(limit)s
FOR UPDATE OF r SKIP LOCKED
"""
_GROUP_FIELDS = ("worker", "k_served", "width", "height", "steps")


def fair_batch_sql(head: GenerationRequest, limit: int) -> tuple[str, dict]:
    """The claim query for the batch group of `head` (same worker, K′ and shape) and its parameters."""
    params: dict = {"batch": Priority.BATCH.value, "limit": limit, "head": head.pk}
    group = []
    for name in _GROUP_FIELDS:
        value = getattr(head, name)
        # `=` (not IS NOT DISTINCT FROM) so the partial index queued_claim_group is usable.
        group.append(f"{name} IS NULL" if value is None else f"{name} = %({name})s")
        params[name] = value
    sql = _FAIR_BATCH_SQL.format(table=GenerationRequest._meta.db_table, group=" AND ".join(group))
    return sql, params


def claim_batch(request_id: uuid.UUID, worker: int, lease_seconds: float) -> list[uuid.UUID]:
    """Claim one batch for the message of `request_id` (the head): up to the head's batch limit of
    queued rows from the head's batch group (same worker, K′ and shape, so they share one call), in
    the fair order, and mark them running. Returns their ids in that order.

    Fair order (issue 13 item 7): interactive rows before batch rows; within a class, owners take
    turns, round-robin: each owner's oldest row first, the owner served least recently first (the
    latest `started_at` of any of the owner's rows, over the index owner_last_started; an owner never
    served goes first), ties by arrival. So one user's 10 queued rows do not hold back another's 2:
    claims alternate A, B, A, B, then the rest of A. The simulator's workers stay FIFO.

    Guarantees, as before: every change is a conditional UPDATE of locked rows; rows locked by another
    claim are skipped (`FOR UPDATE SKIP LOCKED`), so no row is ever claimed twice; a message whose row
    is claimed, terminal, or locked by another claim is a no-op (returns []); a claim whose head is
    queued claims at least one row (the head is a candidate and already locked by this transaction).

    Nothing is lost. Every queued row has a message of its own (submit, the reconciler) and a message
    runs a batch *of its head's group*, which need not contain the head: the message of X may run Y
    (Y's owner was served less recently). Then X is still queued and its message is spent, while Y's
    message is still in the broker. The caller hands X a new message once this transaction has
    committed (`publishing.claim_for_message`, which the generate task uses); Y's message later finds
    Y claimed and is a no-op. So after every claim each queued row again has a message waiting, each
    message either claims a row or does nothing, and every queued row eventually runs (or expires).
    If the process dies between the commit and the new message, X is queued with an old publish time
    and the reconciler republishes it, as for any lost message. A message for X that arrives while
    another claim holds X as *its* head is a no-op: that claim runs X or republishes it.
    """
    now = timezone.now()
    with transaction.atomic():
        head = (
            GenerationRequest.objects.select_for_update(skip_locked=True)
            .filter(pk=request_id, status=Status.QUEUED)
            .first()
        )
        if head is None:
            return []
        sql, params = fair_batch_sql(head, max(1, head.batch_limit or 1))
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            ids = [row[0] for row in cursor.fetchall()]
        GenerationRequest.objects.filter(pk__in=ids).update(
            status=Status.RUNNING,
            worker=worker,
            started_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=F("attempts") + 1,
        )
    return ids


def renew_lease(request_ids: Iterable[uuid.UUID], lease_seconds: float, worker: int | None = None) -> int:
    """Extend the lease of those rows that are still running (on `worker`, if given); returns how many.
    Fewer than asked means the reconciler took some back (the worker was presumed dead)."""
    rows = GenerationRequest.objects.filter(pk__in=list(request_ids), status=Status.RUNNING)
    if worker is not None:
        rows = rows.filter(worker=worker)
    return rows.update(lease_until=timezone.now() + timedelta(seconds=lease_seconds))


def succeed(request_id: uuid.UUID, **fields) -> bool:
    """End the row `succeeded` unless it is already terminal. From `queued` too: a worker that froze past
    its lease finishes an image after the reconciler requeued the row; that image is kept, not thrown
    away (a copy already running elsewhere then finds the row terminal)."""
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status__in=ACTIVE_STATES).update(
            status=Status.SUCCEEDED, finished_at=timezone.now(), lease_until=None, error="", **fields
        )
    )


def fail(request_id: uuid.UUID, reason: str, from_states=(Status.QUEUED, Status.RUNNING)) -> bool:
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status__in=from_states).update(
            status=Status.FAILED, finished_at=timezone.now(), lease_until=None, error=reason[:4000]
        )
    )


def shed(request_id: uuid.UUID, reason: str) -> bool:
    """A claimed row that would finish after its deadline even if it ran now ends `expired` (a violation)
    instead of holding a GPU that requests which can still make theirs are waiting for."""
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status=Status.RUNNING).update(
            status=Status.EXPIRED, finished_at=timezone.now(), lease_until=None, error=reason[:4000]
        )
    )


def release(request_ids: Iterable[uuid.UUID], worker: int) -> list[uuid.UUID]:
    """Give claimed rows back to the queue before they ran (the batch cut: they make their deadline in the
    next batch, not in this one); the claim's attempt is taken back. Returns the ids released, which need
    a new message (`publishing.publish`): their own may have been spent as no-ops while they were claimed."""
    ids = list(request_ids)
    with transaction.atomic():
        released = list(
            GenerationRequest.objects.select_for_update()
            .filter(pk__in=ids, status=Status.RUNNING, worker=worker)
            .values_list("pk", flat=True)
        )
        GenerationRequest.objects.filter(pk__in=released).update(
            status=Status.QUEUED, started_at=None, lease_until=None, attempts=F("attempts") - 1
        )
    return released


def cancel(request_id: uuid.UUID) -> bool:
    """End a queued or running row `cancelled`. A running row's batch goes on for its other rows: the worker's
    progress reporter sees the row has ended (it polls the batch's states, at most every 0.5 s) and the
    engine drops it from the batch between steps (workers/engine.py); nothing is written for it (no image,
    no cache entry), and a batch whose rows have all ended stops."""
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status__in=ACTIVE_STATES).update(
            status=Status.CANCELLED, finished_at=timezone.now(), lease_until=None
        )
    )


def requeue(request_id: uuid.UUID, reason: str) -> bool:
    """Put a running row whose lease expired back in the queue (the reconciler republishes it)."""
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status=Status.RUNNING).update(
            status=Status.QUEUED, lease_until=None, started_at=None, error=reason[:4000]
        )
    )


def expire_overdue(before, batch_before=None, accepted_before=None) -> int:
    """Queued rows that arrived before `before` (batch rows: before `batch_before`, by default the
    same) can no longer be useful: end them as expired. Rows accepted (written) after `accepted_before`
    are spared: their arrival was long before their insert (a slow start), and they get one SLO."""
    batch_before = before if batch_before is None else batch_before
    overdue = Q(priority=Priority.BATCH, created_at__lt=batch_before) | (
        ~Q(priority=Priority.BATCH) & Q(created_at__lt=before)
    )
    if accepted_before is not None:
        overdue &= Q(accepted_at__isnull=True) | Q(accepted_at__lt=accepted_before)
    return GenerationRequest.objects.filter(overdue, status=Status.QUEUED).update(
        status=Status.EXPIRED, finished_at=timezone.now(), error="Expired: not started within twice the SLO."
    )


def mark_published(request_id: uuid.UUID) -> None:
    GenerationRequest.objects.filter(pk=request_id).update(
        published_at=timezone.now(), publish_count=F("publish_count") + 1
    )
