"""The live cluster as the policies see it: per-worker queues, running batches, backlog."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Min

from scheduler.interface import ClusterView
from scheduler.policies import Policy
from webapp.ledger.models import GenerationRequest, Status


def cluster_view(policy: Policy, now: float) -> ClusterView:
    """Per-worker queue length, running batch and expected backlog, from the ledger."""
    n_workers = settings.T2I_WORKERS
    levels = list(policy.current.worker_levels[:n_workers])
    view = ClusterView.idle(levels + [0] * (n_workers - len(levels)))
    profile = policy.config.profile
    caps = policy.caps
    rows = (
        GenerationRequest.objects.filter(status__in=(Status.QUEUED, Status.RUNNING), worker__isnull=False)
        .values("worker", "status", "k_served")
        .annotate(n=Count("id"), started=Min("started_at"))
    )
    for row in rows:
        worker = row["worker"]
        if worker is None or worker >= n_workers:
            continue
        k_prime = row["k_served"] or 0
        k_prime = k_prime if k_prime in caps else 0
        if row["status"] == Status.QUEUED:
            view.queue_len[worker] += row["n"]
            full, rest = divmod(row["n"], caps[k_prime])
            view.queued_s[worker] += full * profile.latency(k_prime, caps[k_prime]) + (
                profile.latency(k_prime, rest) if rest else 0.0
            )
        else:
            view.running[worker] += row["n"]
            started = row["started"].timestamp() if row["started"] else now
            view.busy_until[worker] = max(view.busy_until[worker], started + profile.latency(k_prime, row["n"]))
    return view
