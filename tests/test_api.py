"""REST API against the real database and Redis (no worker needed: nothing here runs a task).

Plain `db` tests: no other process reads these rows, so each test's transaction is rolled back."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import make_request, serving_config
from webapp.ledger.models import GenerationRequest, ServingConfig, Status

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations/"


def test_submit_returns_202_with_location_and_queued_row(api, embedded_services, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # publish runs on commit: sets published_at
        resp = api.post(URL, {"prompt": "a red fox in the snow", "seed": 7}, format="json")
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["status"] == "queued"
    assert resp["Location"] == body["url"]
    row = GenerationRequest.objects.get(pk=body["id"])
    assert row.seed == 7 and row.worker in (0, 1) and row.published_at is not None
    config = ServingConfig.current()
    assert (row.deadline - row.created_at).total_seconds() == pytest.approx(config.slo_seconds, abs=0.5)


def test_idle_cluster_spreads_requests_over_worker_queues(api, embedded_services):
    workers = {api.post(URL, {"prompt": f"p{i}"}, format="json").json()["worker"] for i in range(4)}
    assert workers == {0, 1}


@pytest.mark.parametrize(
    "payload, field, fragment",
    [
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   \t "}, "prompt", "empty"),
        ({"prompt": "word " * 90}, "prompt", "CLIP tokens"),
        ({"prompt": "ok", "seed": -1}, "seed", "between 0 and"),
        ({"prompt": "ok", "seed": 2**40}, "seed", "between 0 and"),
        ({"prompt": "ok", "width": 100}, "width", "allowed sizes"),
        ({"prompt": "ok", "height": 4096}, "height", "allowed sizes"),
        ({"prompt": "ok", "steps": 0}, "steps", "Unsupported steps"),
        ({"prompt": "ok", "steps": 10000}, "steps", "Unsupported steps"),
        ({"seed": 3}, "prompt", "required"),
    ],
)
def test_validation_errors_are_400_with_a_message(api, embedded_services, payload, field, fragment):
    resp = api.post(URL, payload, format="json")
    assert resp.status_code == 400, resp.content
    assert fragment in " ".join(resp.json()[field])
    assert GenerationRequest.objects.count() == 0


def test_malformed_json_is_400(api, embedded_services):
    resp = api.post(URL, data='{"prompt": "x",', content_type="application/json")
    assert resp.status_code == 400
    assert "Malformed" in resp.json()["detail"]


def test_idempotency_key_returns_the_original(api, embedded_services):
    first = api.post(URL, {"prompt": "same", "seed": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(URL, {"prompt": "same", "seed": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    in_body = api.post(URL, {"prompt": "same", "seed": 1, "idempotency_key": "k-1"}, format="json")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] == in_body.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert GenerationRequest.objects.count() == 1


def test_idempotency_key_is_per_owner(api, other_user, embedded_services):
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=other_user)[1]}")
    a = api.post(URL, {"prompt": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    b = other.post(URL, {"prompt": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert a.json()["id"] != b.json()["id"]


def test_cancel_queued_then_409(api, user, embedded_services):
    rid = make_request(user, prompt="cancel me").id
    resp = api.post(f"{URL}{rid}/cancel/")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    again = api.post(f"{URL}{rid}/cancel/")
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]


def test_terminal_states_never_change_even_by_raw_update(api, user, embedded_services):
    from django.db import IntegrityError, transaction

    rid = make_request(user, prompt="final").id
    api.post(f"{URL}{rid}/cancel/")
    with pytest.raises(IntegrityError), transaction.atomic():
        GenerationRequest.objects.filter(pk=rid).update(status=Status.SUCCEEDED)
    assert GenerationRequest.objects.get(pk=rid).status == Status.CANCELLED


def test_auth_required(client, embedded_services, db):
    assert client.get(URL).status_code in (401, 403)
    assert client.post(URL, {"prompt": "x"}, content_type="application/json").status_code in (401, 403)


def test_owner_scoping(api, other_user, embedded_services):
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    rid = api.post(URL, {"prompt": "mine"}, format="json").json()["id"]
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=other_user)[1]}")
    assert other.get(f"{URL}{rid}/").status_code == 404
    assert other.get(f"{URL}{rid}/image/").status_code == 404
    assert other.post(f"{URL}{rid}/cancel/").status_code == 404
    assert other.get(URL).json()["count"] == 0
    assert api.get(URL).json()["count"] == 1


def test_list_is_paginated_and_filterable(api, user, embedded_services):
    from datetime import timedelta

    from django.utils import timezone

    ids = [
        str(make_request(user, prompt=f"n{i}", created_at=timezone.now() + timedelta(seconds=i)).id) for i in range(3)
    ]
    api.post(f"{URL}{ids[0]}/cancel/")
    page = api.get(URL).json()
    assert page["count"] == 3 and [r["id"] for r in page["results"]] == ids[::-1]
    cancelled = api.get(URL, {"status": "cancelled"}).json()
    assert [r["id"] for r in cancelled["results"]] == [ids[0]]
    assert api.get(URL, {"status": "bogus"}).status_code == 400


def test_in_flight_cap_is_429(api, user, embedded_services):
    serving_config(max_in_flight=2)
    make_request(user, prompt="q0", status=Status.RUNNING)
    make_request(user, prompt="q1")  # queued for a slot no worker serves
    resp = api.post(URL, {"prompt": "one too many"}, format="json")
    assert resp.status_code == 429 and "cap" in resp.json()["detail"]


def test_redis_down_is_503_and_stores_nothing(api, embedded_services, settings):
    from webapp.ledger import publishing

    dead_port = __import__("webapp.stack.services", fromlist=["free_port"]).free_port()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{dead_port}/0"
    publishing._redis_client = None
    try:
        resp = api.post(URL, {"prompt": "no broker"}, format="json")
    finally:
        publishing._redis_client = None
    assert resp.status_code == 503 and "Redis" in resp.json()["detail"]
    assert GenerationRequest.objects.count() == 0


def test_unknown_id_is_404(api, embedded_services):
    assert api.get(f"{URL}{uuid.uuid4()}/").status_code == 404


def test_openapi_schema_generates(api, embedded_services):
    resp = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    schema = resp.json()
    assert "/api/v1/generations/" in schema["paths"]
    assert "/api/v1/generations/{id}/cancel/" in schema["paths"]
    assert api.get("/api/docs/").status_code == 200


def test_submit_rate_is_throttled_per_user(api, embedded_services, monkeypatch):
    from django.core.cache import cache

    from webapp.api.views import SubmitThrottle

    cache.clear()
    monkeypatch.setattr(SubmitThrottle, "THROTTLE_RATES", {"submit": "2/min"})
    responses = [api.post(URL, {"prompt": f"t{i}"}, format="json") for i in range(3)]
    assert [r.status_code for r in responses] == [202, 202, 429]
    assert int(responses[2]["Retry-After"]) > 0


def test_database_down_is_503_json_not_a_traceback(embedded_services, tmp_path):
    """A real server process whose PostgreSQL is unreachable answers 503 with JSON."""
    import os
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from webapp.stack.services import free_port

    port, dead = free_port(), free_port()
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{dead}/t2i",
        DB_CONNECT_TIMEOUT="1",
        DEBUG="0",
        SECRET_KEY="x" * 50,
        T2I_WARM_UP="0",  # no embedder loading competing with the test on a busy machine
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120  # a busy machine starts gunicorn slowly; the answer is what counts
        while True:
            try:
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{port}/api/v1/generations/", headers={"Authorization": "Token abc"}
                    ),
                    timeout=30,
                )
                raise AssertionError("expected an error status")
            except urllib.error.HTTPError as exc:
                status, body, ctype = exc.code, exc.read(), exc.headers["Content-Type"]
                break
            except (urllib.error.URLError, OSError):  # not listening yet, or a timeout
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(10)
    assert status == 503 and ctype == "application/json"
    assert b"database is unavailable" in body
