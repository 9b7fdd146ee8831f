"""The reconciler: nothing accepted is ever lost (DESIGN §4, step 4; issue 11).

Run by beat on the control queue, with a period derived from the SLO (scheduler/recovery.py). Each pass:
1. running rows whose lease expired (their worker died or froze) go back to queued and are sent at once
   to a live worker, or end as failed with the reason once they have used up their attempts;
2. queued rows older than 2 × their class's SLO end as expired (they count as SLO violations), except
   rows accepted less than one SLO ago (a slow start must not expire what was just accepted);
3. queued rows held by a worker whose heartbeat stopped are moved to a live worker;
4. queued rows whose message is not waiting in their queue (never published, lost with Redis, taken by a
   worker that died before claiming) are published again once that has lasted the republish delay.
   A duplicate message is harmless: claiming is conditional.
One bad row never stops the pass (healthchecks' lesson).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from . import transitions
from .models import GenerationRequest, ServingConfig, Status
from .publishing import publish, waiting_request_ids

log = logging.getLogger(__name__)
NEVER_PUBLISHED_GRACE_S = 2.0  # submit publishes right after its commit; give it that long
BATCH = 1000  # rows handled per step and pass: a huge backlog is worked off over several passes


@dataclass
class ReconcileReport:
    requeued: int = 0
    failed: int = 0
    expired: int = 0
    moved: int = 0
    republished: int = 0


@dataclass(frozen=True)
class ReconcileContext:
    """What a pass needs from outside the ledger: given by the caller, so the ledger stays below serving."""

    republish_s: float
    live_workers: set[int]
    planned_levels: list[int]  # the current plan's level per worker ([] if none)


def reconcile(context: ReconcileContext, now=None) -> ReconcileReport:
    now = now or timezone.now()
    report = ReconcileReport()
    config = ServingConfig.current()
    redispatch = _Redispatcher(context)

    stale = GenerationRequest.objects.filter(status=Status.RUNNING, lease_until__lt=now)
    for row in stale.only("id", "attempts", "worker", "k_served")[:BATCH]:
        try:
            if row.attempts >= settings.T2I_MAX_ATTEMPTS:
                reason = (
                    f"Failed: the worker running it stopped responding {row.attempts} times "
                    f"(worker {row.worker}); giving up after {settings.T2I_MAX_ATTEMPTS} attempts."
                )
                report.failed += transitions.fail(row.id, reason, from_states=(Status.RUNNING,))
            elif transitions.requeue(row.id, f"Worker {row.worker} lost the request (lease expired); retrying."):
                report.requeued += 1
                redispatch.send(row)
        except Exception:
            log.exception("reconcile: could not recover %s", row.id)

    report.expired = transitions.expire_overdue(
        now - timedelta(seconds=2 * config.slo_seconds),
        now - timedelta(seconds=2 * config.batch_slo_seconds),
        accepted_before=now - timedelta(seconds=config.slo_seconds),
    )

    if context.live_workers:
        orphans = GenerationRequest.objects.filter(status=Status.QUEUED).exclude(worker__in=context.live_workers)
        for row in orphans.only("id", "worker", "k_served")[:BATCH]:
            try:
                report.moved += redispatch.send(row)
            except Exception:
                log.exception("reconcile: could not move %s", row.id)

    report.republished = _republish_lost(now, context, redispatch.sent)
    if any(vars(report).values()):
        log.info("reconcile: %s", report)
    return report


def _republish_lost(now, context: ReconcileContext, just_sent: set) -> int:
    waiting = waiting_request_ids(range(settings.T2I_WORKERS))
    lost = GenerationRequest.objects.filter(status=Status.QUEUED).filter(
        Q(published_at__isnull=True, created_at__lt=now - timedelta(seconds=NEVER_PUBLISHED_GRACE_S))
        | Q(published_at__lt=now - timedelta(seconds=context.republish_s))
    )
    count = 0
    for row in lost.only("id", "worker")[: 10 * BATCH]:
        if str(row.id) in waiting or row.id in just_sent:
            continue
        try:
            count += publish(row.id, row.worker or 0)
        except Exception:
            log.exception("reconcile: could not republish %s", row.id)
    return count


class _Redispatcher:
    """Sends a queued row to a live worker: one at the row's K′ in the current plan if any is live, else
    any live one; the one with the fewest queued rows (counted once per pass, then kept up to date)."""

    def __init__(self, context: ReconcileContext) -> None:
        self.context = context
        self.sent: set = set()
        self._queued: dict[int, int] | None = None

    def _queue_lengths(self) -> dict[int, int]:
        if self._queued is None:
            counts = (
                GenerationRequest.objects.filter(status=Status.QUEUED, worker__in=self.context.live_workers)
                .values("worker")
                .annotate(n=Count("id"))
            )
            self._queued = dict.fromkeys(self.context.live_workers, 0) | {c["worker"]: c["n"] for c in counts}
        return self._queued

    def target_for(self, row: GenerationRequest) -> int | None:
        live = self.context.live_workers
        if not live:
            return None
        if row.worker in live:
            return row.worker
        levels = self.context.planned_levels
        same_level = [w for w in live if w < len(levels) and levels[w] == (row.k_served or 0)]
        queued = self._queue_lengths()
        return min(same_level or sorted(live), key=lambda w: (queued.get(w, 0), w))

    def send(self, row: GenerationRequest) -> bool:
        target = self.target_for(row)
        if target is None:  # nobody alive: the lost-message step republishes it to its own queue
            return False
        if target != row.worker:
            moved = GenerationRequest.objects.filter(pk=row.pk, status=Status.QUEUED).update(worker=target)
            if not moved:
                return False
            queued = self._queue_lengths()
            queued[target] = queued.get(target, 0) + 1
        self.sent.add(row.id)
        return publish(row.id, target)
