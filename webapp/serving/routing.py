"""Routing a new request at submit (DESIGN §4 step 1): where it runs and at which K′.

Given the prompt's embedding (submit computes it first, for the probing check), finds its nearest cached
neighbour among the entries the cache scope lets this owner reuse (ServingConfig.cache_scope: everyone's,
its tenant's, or none), lets the active policy's predictor decide K* (the one K* rule, NIRVANA's thresholds
capped at the levels held), and asks the policy (scheduler/, the same objects the simulator runs) for a
worker, K′ and batch limit given the live queues. A request with no neighbour runs at K′ = 0.

proteus_models (PROTEUS as published) has no cache: no lookup, K′ is the model variant of the worker it
chose, the quality that variant's, and no admission rule (as in the simulator: it queues).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scheduler.admission import Admission, admit
from scheduler.interface import RequestView
from scheduler.policies import MODEL_VARIANT_POLICIES
from webapp.cache import store as cache_store
from webapp.cache.keys import model_key_for
from webapp.cache.tenants import lookup_tenants
from webapp.ledger.models import CacheScope, ServingConfig

from .cluster_state import cluster_view, live_workers_and_marks
from .live_policy import live_policy
from .replan import (
    QUEUE_FIRST_END_KEY,
    defer_requeue,
    end_queue_first_if_ended,
    maybe_request_replan,
    publish_queue_first_end,
    queue_first_end_from,
    request_requeue,
)


@dataclass(frozen=True)
class Routing:
    """What submit records on the row: the policy's decision plus what it was based on."""

    worker: int
    k_prime: int
    k_star: int
    plan_version: int | None
    batch_limit: int
    redirected: bool
    similarity: float | None
    neighbor_id: int | None
    # The neighbour's prompt only when the owner created that entry; "" for anyone else's (never stored).
    neighbor_prompt: str
    neighbor_same_owner: bool
    quality: float | None
    refused: bool = False  # admission control: it cannot meet its deadline (scheduler/admission.py)
    retry_after_s: float = 0.0
    # Queue-first put it at K′ = 0 although it has a neighbour: the re-plan ending the mode may re-route it.
    queue_first_neighbor_id: int | None = None


def find_neighbour(
    config: ServingConfig, owner, prompt: str, embedding: np.ndarray, *, steps: int, width: int, height: int
) -> tuple | None:
    """(nearest cache entry this owner may reuse, its similarity), or None: the pgvector part of routing."""
    if config.cache_scope == CacheScope.OFF or config.policy in MODEL_VARIANT_POLICIES:
        return None
    return cache_store.nearest(
        cache_store.query_vector(prompt, embedding),
        model_key_for(steps, width, height),
        lookup_tenants(config.cache_scope, owner),
    )


_LOOK_UP = object()


def route_request(
    *,
    config: ServingConfig,
    owner,
    request_id: str,
    prompt: str,
    embedding: np.ndarray,
    arrival: float,
    deadline: float,
    width: int,
    height: int,
    steps: int,
    found=_LOOK_UP,
) -> Routing:
    """The routing decision; `found` is find_neighbour's answer when the caller looked it up already."""
    if found is _LOOK_UP:
        found = find_neighbour(config, owner, prompt, embedding, steps=steps, width=width, height=height)
    neighbor, similarity = found if found else (None, None)
    same_owner = neighbor is not None and neighbor.creator_id is not None and neighbor.creator_id == owner.pk
    levels_held = tuple(sorted(neighbor.levels)) if neighbor else ()
    policy, plan_version = live_policy.get(config)
    k_star = policy.config.predictor.k_star(similarity, levels_held) if neighbor else 0
    request = RequestView(
        id=request_id,
        arrival=arrival,
        deadline=deadline,
        similarity=similarity,
        k_star=k_star,
        levels_available=levels_held,
    )
    # Another process may have ended queue-first: its mark comes in the heartbeats' round trip.
    marks = (QUEUE_FIRST_END_KEY,) if getattr(policy, "in_queue_first", False) else ()
    live, values = live_workers_and_marks(marks)
    if marks:
        end_queue_first_if_ended(policy, queue_first_end_from(values[0]))
    cluster = cluster_view(policy, arrival, live)
    decision = policy.dispatch(request, cluster, arrival)
    take_requeue = getattr(policy, "take_requeue", None)
    if take_requeue is not None and take_requeue():
        publish_queue_first_end(policy.queue_first_ended_at)
        if policy.config.event_replan:
            request_requeue(policy.config.replan_min_gap_s)
        else:  # no run between periods: the period's run re-routes
            defer_requeue()
    maybe_request_replan(policy, arrival)
    if getattr(policy, "serves_models", False):  # K′: the chosen worker's model variant
        verdict = Admission(True, decision.worker_index, decision.k_prime)
    else:
        verdict = admit(
            policy.config.admission,
            arrival,
            deadline,
            decision.worker_index,
            decision.k_prime if neighbor else 0,
            levels_held,
            cluster,
            policy.config.profile.latency,
        )
    k_prime = verdict.k_prime
    batch_limit = 1 if verdict.degraded else max(1, decision.batch_size)
    quality = policy.quality(similarity, k_prime)
    return Routing(
        worker=verdict.worker,
        k_prime=k_prime,
        k_star=k_star,
        plan_version=plan_version,
        batch_limit=batch_limit,
        redirected=decision.redirected or verdict.degraded,
        similarity=similarity,
        neighbor_id=neighbor.pk if neighbor and k_prime > 0 else None,
        neighbor_prompt=neighbor.prompt if same_owner else "",
        neighbor_same_owner=same_owner,
        quality=None if quality is None or math.isnan(quality) else quality,
        refused=not verdict.accept,
        retry_after_s=verdict.retry_after_s,
        queue_first_neighbor_id=neighbor.pk if neighbor and decision.queue_first and k_prime == 0 else None,
    )
