"""Issue 16: the cheaper submit and status paths keep their behaviour.

The micro-batching embedder, the per-process serving configuration, the cached token lookup, the publish
time written with the insert, and ETags on a request's status. Routing equality on 1,000 prompts is in
tests/test_submit_path_routing.py.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from scheduler.embedding_batcher import EmbeddingBatcher
from tests.helpers import make_request, serving_config
from webapp.ledger.models import GenerationRequest, ServingConfig, Status
from webapp.serving import live_config


# --- the embedder ----------------------------------------------------------------------------------------
def test_waiting_prompts_share_one_encoder_call_and_each_gets_its_own_vector():
    calls: list[list[str]] = []
    release = threading.Event()

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        release.wait(10)  # the first call holds the thread while the others queue up behind it
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    batcher = EmbeddingBatcher(encode, max_batch=8)
    results: dict[str, np.ndarray] = {}
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    threads = [threading.Thread(target=lambda t=t: results.__setitem__(t, batcher.embed(t))) for t in texts]
    threads[0].start()
    while not calls:  # the first prompt is being encoded alone
        time.sleep(0.01)
    for thread in threads[1:]:
        thread.start()
    while sum(1 for t in threads if t.is_alive()) < len(texts):
        time.sleep(0.01)
    time.sleep(0.2)  # the four others are queued by now (they only wait for the event)
    release.set()
    for thread in threads:
        thread.join(10)
    assert {t: v[0] for t, v in results.items()} == {t: float(len(t)) for t in texts}
    assert len(calls) == 2 and sorted(calls[1]) == texts[1:]


def test_an_encoder_failure_reaches_the_caller_and_the_embedder_keeps_serving():
    def encode(texts: list[str]) -> np.ndarray:
        if "bad" in texts:
            raise RuntimeError("encoder broke")
        return np.ones((len(texts), 2), dtype=np.float32)

    batcher = EmbeddingBatcher(encode)
    with pytest.raises(RuntimeError, match="encoder broke"):
        batcher.embed("bad")
    assert batcher.embed("good").tolist() == [1.0, 1.0]


# --- the serving configuration --------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # autocommit, as in a web request: the copy is kept
def test_the_configuration_is_kept_per_process_and_a_save_applies_at_once():
    first = live_config.serving_config()
    with CaptureQueriesContext(connection) as queries:
        assert live_config.serving_config() is first
    assert len(queries) == 0
    serving_config(max_in_flight=7)  # what the admin's save does
    assert live_config.serving_config().max_in_flight == 7


@pytest.mark.django_db(transaction=True)
def test_a_change_from_another_process_applies_within_the_ttl(monkeypatch):
    live_config.serving_config()
    ServingConfig.objects.update(max_in_flight=9)  # no signal here: as if another process had saved it
    monkeypatch.setattr(live_config, "CONFIG_TTL_S", 0.0)  # the TTL has passed
    assert live_config.serving_config().max_in_flight == 9


@pytest.mark.django_db
def test_inside_a_transaction_the_configuration_is_read_fresh():
    live_config.forget_serving_config()
    ServingConfig.current()
    ServingConfig.objects.update(max_in_flight=11)  # uncommitted: must not outlive this test's rollback
    assert live_config.serving_config().max_in_flight == 11
    assert live_config._config_cache is None


# --- token authentication -------------------------------------------------------------------------------
def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.mark.django_db
def test_a_revoked_token_is_refused_at_once_although_its_lookup_was_kept(user):
    row, secret = AuthToken.objects.create(user=user)
    client = _client(secret)
    assert client.get("/api/v1/generations/").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/generations/").status_code == 200
    assert not any("knox_authtoken" in q["sql"] for q in queries.captured_queries)  # remembered
    assert client.delete(f"/api/v1/tokens/{row.token_key}/").status_code == 204
    assert client.get("/api/v1/generations/").status_code == 401


@pytest.mark.django_db
def test_a_remembered_token_past_its_expiry_is_refused(user, settings):
    settings.T2I_TOKEN_CACHE_SECONDS = 600  # still remembered when it expires
    row, secret = AuthToken.objects.create(user=user, expiry=timedelta(seconds=5))
    client = _client(secret)
    assert client.get("/api/v1/generations/").status_code == 200
    while timezone.now() <= row.expiry:
        time.sleep(0.1)
    assert client.get("/api/v1/generations/").status_code == 401


@pytest.mark.django_db
def test_a_user_made_inactive_is_refused_at_once(user):
    _, secret = AuthToken.objects.create(user=user)
    client = _client(secret)
    assert client.get("/api/v1/generations/").status_code == 200
    user.is_active = False
    user.save()
    assert client.get("/api/v1/generations/").status_code == 401


# --- publishing -----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_submit_records_the_publish_in_its_insert_without_a_second_update(
    api, django_capture_on_commit_callbacks, embedded_services
):
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/generations/", {"prompt": "a lighthouse at dusk"}, format="json")
    assert response.status_code == 202
    row = GenerationRequest.objects.get(pk=response.data["id"])
    assert row.published_at == row.accepted_at and row.publish_count == 1
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert not [sql for sql in updates if "published_at" in sql]


# --- cheap reads ----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_status_get_answers_304_while_nothing_changed(api, user):
    row = make_request(user, status=Status.SUCCEEDED, finished_at=timezone.now())
    url = f"/api/v1/generations/{row.id}/"
    first = api.get(url)
    etag = first.headers["ETag"]
    again = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and not again.content and again.headers["ETag"] == etag
    assert api.get(url, HTTP_IF_NONE_MATCH=f"W/{etag}").status_code == 304  # weak comparison
    GenerationRequest.objects.filter(pk=row.pk).update(error="changed")
    changed = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


@pytest.mark.django_db
def test_status_get_of_a_finished_request_is_one_query(api, user):
    row = make_request(user, status=Status.SUCCEEDED, finished_at=timezone.now())
    url = f"/api/v1/generations/{row.id}/"
    api.get(url)  # the token's lookup is remembered from here on
    with CaptureQueriesContext(connection) as queries:
        assert api.get(url).status_code == 200
    assert len(queries) == 1, [q["sql"] for q in queries.captured_queries]


@pytest.mark.django_db
def test_someone_elses_request_is_still_a_404(api, other_user):
    row = make_request(other_user)
    assert api.get(f"/api/v1/generations/{row.id}/").status_code == 404


# --- responses built without rebuilding the serializer's fields -----------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("live", [False, True])
def test_the_response_body_is_exactly_what_drf_builds_from_its_own_fields(user, live, monkeypatch):
    import types

    from rest_framework import serializers as drf
    from rest_framework.test import APIRequestFactory

    from webapp.api.serializers import GenerationSerializer

    now = timezone.now()
    rows = [
        make_request(user),
        make_request(user, worker=0, priority="batch", idempotency_key="k1", negative_prompt="blurry"),
        make_request(user, status=Status.RUNNING, worker=1, started_at=now, k_star=10, k_served=5, similarity=0.8),
        make_request(
            user,
            status=Status.SUCCEEDED,
            started_at=now,
            finished_at=now + timedelta(seconds=3),
            image="images/x.png",
            thumbnail="thumbs/x.png",
            cache_neighbor_id=3,
            cache_neighbor_prompt="mine",
            cache_neighbor_same_owner=True,
            similarity=0.9,
            quality=0.97,
            measured_adherence=0.31,
            favourite=True,
        ),
        make_request(user, status=Status.FAILED, error="boom", finished_at=now, attempts=2),
        make_request(user, status=Status.CANCELLED, finished_at=now),
    ]
    # The clock stands still, so the times since creation and the ETAs are equal in both bodies.
    frozen = timezone.now()
    monkeypatch.setattr("webapp.api.progress_fields.timezone", types.SimpleNamespace(now=lambda: frozen))
    monkeypatch.setattr("webapp.serving.request_progress.time", types.SimpleNamespace(time=frozen.timestamp))
    request = APIRequestFactory().get("/api/v1/generations/")
    for row in rows:
        fast = GenerationSerializer(row, context={"request": request, "live": live})
        drf_own = GenerationSerializer(row, context={"request": request, "live": live})
        expected = drf.ModelSerializer.to_representation(drf_own, row)  # DRF's loop over freshly built fields
        assert fast.data == expected
        assert list(fast.data) == list(expected)  # the same keys in the same order
    many = GenerationSerializer(rows, many=True, context={"request": request, "live": live}).data
    assert [dict(body) for body in many] == [
        drf.ModelSerializer.to_representation(GenerationSerializer(r, context={"request": request, "live": live}), r)
        for r in rows
    ]


# --- one Redis call per throttle check -----------------------------------------------------------------
@pytest.mark.django_db
def test_the_read_rate_is_per_user_and_its_retry_after_is_drfs(api, user, other_user, embedded_services, monkeypatch):
    from django.core.cache import cache

    from webapp.api.throttling import ReadThrottle

    cache.clear()
    monkeypatch.setattr(ReadThrottle, "THROTTLE_RATES", {"read": "3/min"})
    started = time.monotonic()
    answers = [api.get("/api/v1/generations/").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    refused = api.get("/api/v1/generations/")
    # DRF's formula: what is left of the oldest request's minute over the one request that will be allowed
    # (the bound follows the time these requests took, so a slow machine cannot flip it).
    elapsed = time.monotonic() - started
    assert refused.status_code == 429 and 59 - elapsed <= int(refused["Retry-After"]) <= 60
    assert "Expected available in" in refused.json()["detail"]
    assert _client(AuthToken.objects.create(user=other_user)[1]).get("/api/v1/generations/").status_code == 200


# --- the default priority, remembered with the token ----------------------------------------------------
@pytest.mark.django_db
def test_the_default_priority_is_remembered_and_a_group_change_applies_at_once(
    api, user, embedded_services, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Group

    from webapp.ledger.models import BATCH_USERS_GROUP

    def submit(prompt: str):
        with django_capture_on_commit_callbacks(execute=True):
            return api.post("/api/v1/generations/", {"prompt": prompt}, format="json")

    assert submit("a lighthouse at dusk").data["priority"] == "interactive"
    with CaptureQueriesContext(connection) as queries:
        assert submit("a lighthouse at dawn").data["priority"] == "interactive"
    assert not any("auth_group" in q["sql"] for q in queries.captured_queries)  # remembered
    user.groups.add(Group.objects.get_or_create(name=BATCH_USERS_GROUP)[0])
    assert submit("a lighthouse at noon").data["priority"] == "batch"
