"""Choosing the worker and K′ for a new request (DESIGN §4 step 1).

Embeds the prompt, finds its nearest cached neighbour (similarity s, the levels it has),
predicts K*, and asks the active policy (scheduler/, the same objects the simulator runs)
for a worker, a K′ and a batch limit. A request with no neighbour runs at K′ = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scheduler.embeddings import embed_texts
from workers import cache_store

from . import live_scheduler
from .models import ServingConfig


@dataclass(frozen=True)
class Decision:
    worker: int
    k_served: int
    k_star: int
    plan_version: int | None
    batch_limit: int
    redirected: bool
    similarity: float | None
    neighbor_id: int | None
    neighbor_prompt: str
    quality: float | None
    embedding: np.ndarray


def decide(*, config: ServingConfig, request_id: str, prompt: str, arrival: float, deadline: float,
           width: int, height: int, steps: int) -> Decision:
    embedding = embed_texts([prompt])[0]
    found = cache_store.nearest(cache_store.query_vector(prompt, embedding),
                                cache_store.model_key_for(steps, width, height))
    match, similarity = found if found else (None, None)
    available = tuple(sorted(match.levels)) if match else ()
    policy, plan_version = live_scheduler.live_policy.get(config)
    k_star = policy.config.predictor.k_star(similarity, available) if match else 0
    choice = live_scheduler.dispatch(
        policy=policy, request_id=request_id, arrival=arrival, deadline=deadline,
        similarity=similarity, k_star=k_star, levels_available=available)
    k_prime = choice.k_prime if match else 0
    quality = policy.quality(similarity, k_prime)
    return Decision(worker=choice.worker_index, k_served=k_prime, k_star=k_star,
                    plan_version=plan_version, batch_limit=max(1, choice.batch_size),
                    redirected=choice.redirected, similarity=similarity,
                    neighbor_id=match.pk if match and k_prime > 0 else None,
                    neighbor_prompt=match.prompt if match else "",
                    quality=None if quality is None or math.isnan(quality) else quality,
                    embedding=embedding)
