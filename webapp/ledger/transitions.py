"""State transitions of a GenerationRequest, each one conditional UPDATE.

Every transition names the states it may leave from, so two processes racing on one row
cannot both win and a terminal state is never overwritten (a database trigger enforces
the latter too, see migration 0002). Functions return whether they changed the row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import GenerationRequest, Status


def claim_batch(request_id: uuid.UUID, worker: int, lease_seconds: float) -> list[uuid.UUID]:
    """Claim this request plus other queued rows for the same worker and K′ (and the same
    shape, so they can share one call), oldest first, up to the batch limit routing gave it.

    Empty if the request is already claimed or finished: its message is then a no-op.
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
        ids = [head.pk]
        limit = max(1, head.batch_limit or 1)
        if limit > 1:
            ids += list(
                GenerationRequest.objects.select_for_update(skip_locked=True)
                .filter(
                    status=Status.QUEUED,
                    worker=head.worker,
                    k_served=head.k_served,
                    width=head.width,
                    height=head.height,
                    steps=head.steps,
                )
                .exclude(pk=head.pk)
                .order_by("created_at")
                .values_list("pk", flat=True)[: limit - 1]
            )
        GenerationRequest.objects.filter(pk__in=ids).update(
            status=Status.RUNNING,
            worker=worker,
            started_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=F("attempts") + 1,
        )
    return ids


def renew_lease(request_ids: Iterable[uuid.UUID], lease_seconds: float) -> int:
    return GenerationRequest.objects.filter(pk__in=list(request_ids), status=Status.RUNNING).update(
        lease_until=timezone.now() + timedelta(seconds=lease_seconds)
    )


def succeed(request_id: uuid.UUID, **fields) -> bool:
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status=Status.RUNNING).update(
            status=Status.SUCCEEDED, finished_at=timezone.now(), lease_until=None, error="", **fields
        )
    )


def fail(request_id: uuid.UUID, reason: str, from_states=(Status.QUEUED, Status.RUNNING)) -> bool:
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status__in=from_states).update(
            status=Status.FAILED, finished_at=timezone.now(), lease_until=None, error=reason[:4000]
        )
    )


def cancel(request_id: uuid.UUID) -> bool:
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status=Status.QUEUED).update(
            status=Status.CANCELLED, finished_at=timezone.now()
        )
    )


def requeue(request_id: uuid.UUID, reason: str) -> bool:
    """Put a running row whose lease expired back in the queue (the reconciler republishes it)."""
    return bool(
        GenerationRequest.objects.filter(pk=request_id, status=Status.RUNNING).update(
            status=Status.QUEUED, lease_until=None, started_at=None, error=reason[:4000]
        )
    )


def expire_overdue(before) -> int:
    """Queued rows that arrived before `before` can no longer be useful: end them as expired."""
    return GenerationRequest.objects.filter(status=Status.QUEUED, created_at__lt=before).update(
        status=Status.EXPIRED, finished_at=timezone.now(), error="Expired: not started within twice the SLO."
    )


def mark_published(request_id: uuid.UUID) -> None:
    GenerationRequest.objects.filter(pk=request_id).update(
        published_at=timezone.now(), publish_count=F("publish_count") + 1
    )
