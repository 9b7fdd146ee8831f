"""Two hosts, one object store (issue 17): GPU workers that share no filesystem share the latent cache and the
images through an S3-compatible bucket (moto's standalone server on loopback, started by the test session).

Host A and host B are each a real Celery worker process (its own queue, MEDIA_ROOT, T2I_CACHE_DIR and data
directory) with T2I_STORAGE=s3. A request served on A fills the cache; a similar request, routed at submit
to B, resumes from A's latent (K′ > 0 on B) although B's disk never held it; the web tier (this process,
also on S3) streams both images, to their owner only.
"""

from __future__ import annotations

import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from tests.helpers import make_request, wait_for_status
from webapp.cache import store as cache_store
from webapp.cache.latent_storage import latent_store
from webapp.cache.models import CacheEntry, CacheLevel
from webapp.ledger.models import BatchRecord, GenerationRequest, ServingConfig, Status
from webapp.ledger.publishing import publish
from webapp.serving.routing import route_request

pytestmark = pytest.mark.django_db(transaction=True)  # real worker processes read these rows

URL = "/api/v1/generations/"
HOSTS = {"A": 5, "B": 6}  # GPU slots no other test's workers consume (session workers 0, 1; crash test 7)
STEPS = 30  # cache levels 5…25 all lie below N


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def routed_to(owner, prompt: str, slot: int, seed: int) -> GenerationRequest:
    """Route like submit does (nearest cached neighbour, K*, the active policy's K′) and run it on `slot`:
    which worker the policy picks depends on live load, which a test must not assume (test_worker_e2e)."""
    now = timezone.now()
    deadline = now + timedelta(minutes=5)
    embedding = cache_store.embed([prompt])[0]
    routing = route_request(
        config=ServingConfig.current(),
        owner=owner,
        request_id=str(uuid.uuid4()),
        prompt=prompt,
        embedding=embedding,
        arrival=now.timestamp(),
        deadline=deadline.timestamp(),
        width=64,
        height=64,
        steps=STEPS,
    )
    row = make_request(
        owner,
        prompt=prompt,
        seed=seed,
        steps=STEPS,
        worker=slot,
        deadline=deadline,
        embedding=embedding,
        k_star=routing.k_star,
        k_served=routing.k_prime,
        similarity=routing.similarity,
        cache_neighbor_id=routing.neighbor_id,
    )
    publish(row.id, slot)
    return row


@pytest.mark.slow
def test_a_latent_cached_on_host_a_is_resumed_on_host_b_and_both_images_download(
    api, user, other_user, start_worker, s3_storage, nirvana_policy, tmp_path
):
    # Two "hosts": their own directories, nothing shared but PostgreSQL, Redis and the bucket.
    dirs = {host: {"media": tmp_path / host / "media", "cache": tmp_path / host / "cache"} for host in HOSTS}
    envs = {
        host: {
            **s3_storage,
            "MEDIA_ROOT": str(dirs[host]["media"]),
            "T2I_CACHE_DIR": str(dirs[host]["cache"]),
            "T2I_DATA_DIR": str(tmp_path / host / "data"),
        }
        for host in HOSTS
    }
    with ThreadPoolExecutor(len(HOSTS)) as pool:  # both start at once: each loads torch and the model
        workers = dict(zip(HOSTS, pool.map(lambda h: start_worker(HOSTS[h], env=envs[h]), HOSTS)))
    try:
        # Host A: a miss, served from K = 0; its latents go to the bucket.
        first = routed_to(user, "a watercolor painting of a lighthouse on a cliff at sunset", HOSTS["A"], seed=3)
        assert first.k_served == 0 and first.cache_neighbor_id is None
        first = wait_for_status(first.id, {Status.SUCCEEDED, Status.FAILED}, timeout=120)
        assert first.status == Status.SUCCEEDED, first.error
        entry = CacheEntry.objects.get(prompt=first.prompt)
        keys_of_a = set(CacheLevel.objects.filter(entry=entry).values_list("file", flat=True))
        assert sorted(entry.levels) == [5, 10, 15, 20, 25]
        assert keys_of_a <= {name for name, _ in latent_store().listing()}

        # Host B: a near-duplicate, routed at submit to A's entry with K′ > 0, resumed from A's latent.
        near = routed_to(
            user, "a watercolor painting of a lighthouse on a cliff at sunset, highly detailed", HOSTS["B"], seed=3
        )
        assert near.cache_neighbor_id == entry.pk and near.k_served > 0
        near = wait_for_status(near.id, {Status.SUCCEEDED, Status.FAILED}, timeout=120)
        assert near.status == Status.SUCCEEDED, near.error
        assert near.k_served > 0  # B read the latent: had it not, it would have served (and recorded) K = 0
        # B's batch record is written just after the row succeeds: wait for it, never assume it is there.
        until(lambda: BatchRecord.objects.filter(worker=HOSTS["B"], k_prime=near.k_served).exists())
        entry.refresh_from_db()
        assert entry.hits == 1

        # No host's disk holds anything: latents and images live in the bucket only. So B never held A's
        # latent (nor A B's image): it could only have read it from the bucket.
        for host in HOSTS:
            assert files_under(dirs[host]["media"]) == [] and files_under(dirs[host]["cache"]) == []

        # The web tier streams each image (and thumbnail) from the bucket, to its owner only.
        for row in (first, near):
            row.refresh_from_db()
            assert row.image.name == f"images/{row.id}.png"
            body = api.get(f"{URL}{row.id}/").json()
            download = api.get(body["image_url"])
            assert download.status_code == 200 and download["Content-Type"] == "image/png"
            data = b"".join(download.streaming_content)
            with row.image.storage.open(row.image.name, "rb") as stored:
                assert data == stored.read()
            assert Image.open(io.BytesIO(data)).size == (64, 64)
            thumb = api.get(f"{body['image_url']}?thumbnail=1")
            assert thumb.status_code == 200 and b"".join(thumb.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
        stranger = APIClient()
        stranger.force_authenticate(other_user)
        assert stranger.get(f"{URL}{near.id}/image/").status_code == 404  # someone else's image: not found
    finally:
        for worker in workers.values():
            worker.stop()


@pytest.mark.django_db  # plain: no worker reads these rows
def test_an_image_missing_from_storage_is_a_404_and_an_unreachable_store_a_503(
    api, user, settings, monkeypatch, tmp_path
):
    """The image view answers a storage problem with a clear 4xx/5xx, never a 500."""
    from webapp.cache.loopback_s3 import ACCESS_KEY, SECRET_KEY
    from webapp.settings import s3_storages
    from webapp.stack.services import free_port

    settings.MEDIA_ROOT = str(tmp_path)  # local storage, where the row's file does not exist
    row = make_request(user, status=Status.SUCCEEDED, image="images/gone.png", thumbnail="thumbs/gone.png")
    missing = api.get(f"{URL}{row.id}/image/")
    assert missing.status_code == 404 and "missing from storage" in missing.json()["detail"]

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)  # boto3 wants credentials before it finds no server
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    settings.STORAGES = s3_storages("t2i-test", "nowhere", f"http://127.0.0.1:{free_port()}", "us-east-1")
    down = api.get(f"{URL}{row.id}/image/?thumbnail=1")  # nothing listens on that port
    assert down.status_code == 503 and down["Retry-After"] == "5"
    assert "storage is unavailable" in down.json()["detail"]
