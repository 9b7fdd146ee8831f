"""The reconciler: nothing accepted is ever lost (DESIGN §4, step 4).

Run by beat every few seconds on the control queue. Each pass:
1. running rows whose lease expired (their worker died) go back to queued, or end as
   failed with the reason once they have used up their attempts;
2. queued rows older than 2 × their class's SLO end as expired (they count as SLO violations);
3. queued rows whose message may have been lost (never published, or published long ago)
   are published again. A duplicate message is harmless: claiming is conditional.
One bad row never stops the pass (healthchecks' lesson).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from . import transitions
from .models import GenerationRequest, ServingConfig, Status
from .publishing import publish

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    requeued: int = 0
    failed: int = 0
    expired: int = 0
    republished: int = 0


def reconcile(now=None) -> ReconcileReport:
    now = now or timezone.now()
    report = ReconcileReport()
    config = ServingConfig.current()

    stale = GenerationRequest.objects.filter(status=Status.RUNNING, lease_until__lt=now)
    for row in stale.only("id", "attempts", "worker"):
        try:
            if row.attempts >= settings.T2I_MAX_ATTEMPTS:
                reason = (
                    f"Failed: the worker running it stopped responding {row.attempts} times "
                    f"(worker {row.worker}); giving up after {settings.T2I_MAX_ATTEMPTS} attempts."
                )
                report.failed += transitions.fail(row.id, reason, from_states=(Status.RUNNING,))
            else:
                report.requeued += transitions.requeue(
                    row.id, f"Worker {row.worker} lost the request (lease expired); retrying."
                )
        except Exception:
            log.exception("reconcile: could not recover %s", row.id)

    report.expired = transitions.expire_overdue(
        now - timedelta(seconds=2 * config.slo_seconds), now - timedelta(seconds=2 * config.batch_slo_seconds)
    )

    lost_before = now - timedelta(seconds=settings.T2I_REPUBLISH_AFTER_SECONDS)
    lost = GenerationRequest.objects.filter(status=Status.QUEUED).filter(
        Q(published_at__isnull=True, created_at__lt=now - timedelta(seconds=2)) | Q(published_at__lt=lost_before)
    )
    for row in lost.only("id", "worker")[:1000]:
        try:
            report.republished += publish(row.id, row.worker or 0)
        except Exception:
            log.exception("reconcile: could not republish %s", row.id)
    if any(vars(report).values()):
        log.info("reconcile: %s", report)
    return report
