"""The whole request path on real parts: API → Redis → a real Celery worker process →
diffusers (tiny model) → PNG on disk → API shows succeeded. Plus crash recovery."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import make_request, wait_for_status
from webapp.ledger import transitions
from webapp.ledger.models import GenerationRequest, Status
from webapp.serving.recovery import reconcile_now as reconcile

# Plain `db` (rolled back) unless a real worker process must read the rows: those tests say so.
pytestmark = pytest.mark.django_db

URL = "/api/v1/generations/"


@pytest.mark.django_db(transaction=True)  # a real worker process reads these rows
def test_submit_to_png(api, gpu_workers, settings):
    resp = api.post(URL, {"prompt": "a lighthouse at dusk, oil painting", "seed": 42}, format="json")
    assert resp.status_code == 202
    rid = resp.json()["id"]
    row = wait_for_status(rid, {Status.SUCCEEDED, Status.FAILED}, timeout=90)
    assert row.status == Status.SUCCEEDED, row.error
    body = api.get(f"{URL}{rid}/").json()
    assert body["status"] == "succeeded" and body["image_url"].endswith(f"{rid}/image/")
    assert body["k_served"] == 0 and body["started_at"] and body["finished_at"]
    assert "tiny random" in body["model_label"]
    path = Path(settings.MEDIA_ROOT) / row.image.name
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (row.width, row.height)
    download = api.get(body["image_url"])
    assert download.status_code == 200 and download["Content-Type"] == "image/png"
    assert b"".join(download.streaming_content) == path.read_bytes()


@pytest.mark.django_db(transaction=True)  # a real worker process reads these rows
def test_same_seed_same_image(user, gpu_workers, settings):
    """The same request on each of the two worker processes gives the same pixels. Each row is placed on
    its worker by hand: where routing sends a request depends on the load, which a test must not assume."""
    from webapp.ledger.publishing import publish

    twins = [make_request(user, prompt="twin", seed=5, steps=20, worker=w) for w in (0, 1)]
    for row in twins:
        publish(row.id, row.worker)
    rows = [wait_for_status(r.id, {Status.SUCCEEDED}, timeout=90) for r in twins]
    assert {r.worker for r in rows} == {0, 1}  # both processes, same pixels
    # Pixels, not file bytes: each PNG's `parameters` chunk names its own request id.
    data = [Image.open(Path(settings.MEDIA_ROOT) / r.image.name).tobytes() for r in rows]
    assert data[0] == data[1]


@pytest.mark.django_db(transaction=True)  # a real worker process reads these rows
def test_duplicate_message_is_a_no_op(api, gpu_workers):
    from webapp.ledger.publishing import publish

    rid = api.post(URL, {"prompt": "only once"}, format="json").json()["id"]
    row = wait_for_status(rid, {Status.SUCCEEDED}, timeout=90)
    finished = row.finished_at
    publish(row.id, row.worker)  # a redelivered/duplicate message
    time.sleep(1.5)
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED and row.finished_at == finished and row.attempts == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # a real worker process reads these rows
def test_worker_killed_mid_request_is_not_lost(api, user, start_worker, settings):
    """SIGKILL the worker process running a request; its slot restarts (as a process
    supervisor would), the lease expires, the reconciler requeues and republishes it, and it
    finishes exactly once."""
    from webapp.ledger.publishing import publish

    slot = 7  # a slot of its own, so no session worker picks the request up first
    victim = start_worker(slot)
    row = make_request(user, prompt="slow one", steps=150, worker=slot)
    publish(row.id, slot)

    wait_for_status(row.id, {Status.RUNNING}, timeout=60)
    for pid in victim.child_pids() + [victim.proc.pid]:
        os.kill(pid, signal.SIGKILL)
    victim.proc.wait(10)
    start_worker(slot)

    row = wait_for_status(row.id, {Status.SUCCEEDED, Status.FAILED}, timeout=120, tick=reconcile)
    assert row.status == Status.SUCCEEDED, row.error
    assert row.attempts == 2  # the killed attempt, then the successful one
    assert row.image


def test_lease_expiry_gives_up_after_max_attempts(user, embedded_services, settings):
    rid = make_request(user, prompt="doomed").id
    for _ in range(settings.T2I_MAX_ATTEMPTS):
        GenerationRequest.objects.filter(pk=rid).update(status=Status.QUEUED)
        assert transitions.claim_batch(rid, worker=0, lease_seconds=-1)  # lease already expired
        reconcile()
    row = GenerationRequest.objects.get(pk=rid)
    assert row.status == Status.FAILED
    assert "stopped responding" in row.error and row.attempts == settings.T2I_MAX_ATTEMPTS


def test_overdue_queued_request_expires(user, embedded_services):
    from datetime import timedelta

    from django.utils import timezone

    rid = make_request(user, prompt="too late", created_at=timezone.now() - timedelta(hours=1)).id
    reconcile()
    row = GenerationRequest.objects.get(pk=rid)
    assert row.status == Status.EXPIRED and row.on_time is False
