"""Re-routing the rows queue-first queued, when the mode ends (issue 13, light load).

prompt_aware's queue-first mode sends every request at K′ = 0 to the worker free soonest while that worker can
still finish it by its deadline (`scheduler.policies.PromptAware`). The first request the queues cannot take
ends the mode, and routing asks for a controller run (`replan.request_requeue`). After that run's plan, every
row the mode queued that is still queued, and has a neighbour (`queue_first_neighbor_id`), takes the level the
new plan gives it (`PromptAware.requeue_level`: its similarity rank within its K* class, resumable from the
neighbour's cached levels): the burst the queues could not absorb is then served as the plan serves it. The
simulator does the same to its queued requests (`scheduler.simulator._requeue_queue_first`).

Each row moves by one conditional UPDATE that names the queued state, so a worker that claims the row first
wins and the row runs at K′ = 0; the row keeps its worker and its place in that worker's queue.
"""

from __future__ import annotations

import logging

from scheduler.interface import RequestView
from scheduler.policies import Policy
from webapp.cache.models import CacheEntry
from webapp.ledger.models import GenerationRequest, Status

log = logging.getLogger(__name__)


def requeue_queue_first(policy: Policy) -> int:
    """Move the queued queue-first rows to the current plan's level for each; returns how many moved."""
    requeue_level = getattr(policy, "requeue_level", None)
    queued = GenerationRequest.objects.filter(status=Status.QUEUED, queue_first_neighbor_id__isnull=False)
    rows = list(queued.values_list("pk", "created_at", "deadline", "similarity", "k_star", "queue_first_neighbor_id"))
    if not rows:
        return 0
    if requeue_level is None:  # the policy changed meanwhile: the rows run at K′ = 0 as queued
        queued.update(queue_first_neighbor_id=None)
        return 0
    held = dict(CacheEntry.objects.filter(pk__in={r[5] for r in rows}).values_list("pk", "levels"))
    moved = 0
    for pk, created, deadline, similarity, k_star, neighbour in rows:
        levels = tuple(sorted(held.get(neighbour) or ()))
        view = RequestView(pk, created.timestamp(), deadline.timestamp(), similarity, k_star or 0, levels)
        k_prime = requeue_level(view) if levels and similarity is not None else 0
        changes = {"queue_first_neighbor_id": None}
        if k_prime:
            changes |= {
                "k_served": k_prime,
                "cache_neighbor_id": neighbour,
                "batch_limit": policy.caps[k_prime],
                "quality": policy.quality(similarity, k_prime),
            }
        updated = GenerationRequest.objects.filter(pk=pk, status=Status.QUEUED).update(**changes)
        if updated and k_prime:
            moved += 1
    log.info("queue-first ended: %d of %d queued rows re-routed to the new plan's levels", moved, len(rows))
    return moved
