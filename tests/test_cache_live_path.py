"""ApproxC on the live path: a near-duplicate of a cached prompt is served from the cache
(K* > 0, neighbour recorded, fewer steps run); an unrelated prompt is a miss at K = 0."""

from __future__ import annotations

import pytest

from tests.helpers import wait_for_status
from webapp.cache.models import CacheEntry
from webapp.ledger.models import BatchRecord, GenerationRequest, Status

pytestmark = pytest.mark.django_db(transaction=True)  # real worker processes read these rows

URL = "/api/v1/generations/"


def served(api, prompt: str, seed: int = 3) -> GenerationRequest:
    rid = api.post(URL, {"prompt": prompt, "seed": seed}, format="json").json()["id"]
    row = wait_for_status(rid, {Status.SUCCEEDED, Status.FAILED}, timeout=120)
    assert row.status == Status.SUCCEEDED, row.error
    return row


def test_near_duplicate_resumes_from_the_cache_and_a_miss_does_not(api, gpu_workers, nirvana_policy):
    first = served(api, "a watercolor painting of a lighthouse on a cliff at sunset")
    assert first.k_star == 0 and first.k_served == 0 and first.similarity is None
    entry = CacheEntry.objects.get(prompt=first.prompt)
    assert sorted(entry.levels) == [5, 10, 15, 20, 25]

    near = served(api, "a watercolor painting of a lighthouse on a cliff at sunset, highly detailed")
    assert near.similarity > 0.9 and near.k_star >= 20
    assert near.k_served == near.k_star  # NIRVANA: its own K*
    assert near.cache_neighbor_id == entry.pk and near.cache_neighbor_prompt == first.prompt
    body = api.get(f"{URL}{near.id}/").json()
    assert body["k_star"] == near.k_star and body["cache_neighbor_prompt"] == first.prompt
    assert body["similarity"] == pytest.approx(near.similarity)
    entry.refresh_from_db()
    assert entry.hits == 1

    miss = served(api, "quarterly tax spreadsheet for a bakery")
    assert miss.k_served == 0 and miss.k_star == 0 and miss.cache_neighbor_id is None

    # The worker ran that request as a resumed batch at its K′ (timing is the benchmark's job:
    # python -m workers.bench_resume / bench_workload — wall time is too noisy for a test).
    assert BatchRecord.objects.filter(k_prime=near.k_served, batch_size=1).exists()
    # Every batch also records what it held the worker for besides generating (claim, saving: batch_overhead).
    assert not BatchRecord.objects.filter(overhead_seconds__isnull=True).exists()
    assert BatchRecord.objects.filter(overhead_seconds__gt=0).exists()
