"""/healthz and /readyz, and the process view of the dashboard and /metrics (the supervisor's status
file, live GPU workers).

Worker heartbeats are read from a Redis database of this module's own (15 of the test Redis), so the
GPU workers other tests may run (which heartbeat into database 0) cannot make a check flip.
"""

from __future__ import annotations

import os

import pytest
import redis
from django.db import OperationalError
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from scheduler import onnx_embedder
from webapp.dashboard import health
from webapp.ledger import publishing
from webapp.ledger.queues import alive_key
from webapp.stack.services import free_port
from webapp.stack.status_file import status_path, write_status

HEARTBEAT_DB = 15


def redis_url(db: int, port: int | None = None) -> str:
    base = os.environ["REDIS_URL"].rsplit("/", 1)[0]
    if port is not None:
        base = base.rsplit(":", 1)[0] + f":{port}"
    return f"{base}/{db}"


@pytest.fixture
def heartbeats(embedded_services, monkeypatch) -> redis.Redis:
    """The broker client the checks use, on a database of its own, empty: no worker is live."""
    client = redis.Redis.from_url(redis_url(HEARTBEAT_DB), socket_connect_timeout=2, socket_timeout=5)
    client.flushdb()
    monkeypatch.setattr(publishing, "_redis_client", client)
    yield client
    client.flushdb()


@pytest.fixture
def embedder_loaded(monkeypatch):
    """Stands for the warm-up having finished (live_embedder_loaded() only asks whether the encoder is there)."""
    monkeypatch.setattr(onnx_embedder, "_LIVE", object())


def beat(client: redis.Redis, worker: int) -> None:
    client.set(alive_key(worker), '{"pid": 1}', px=60_000)


def test_healthz_answers_without_asking_any_dependency(client):
    # No database mark, no services: any query or connection here would fail the test.
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert resp["Cache-Control"] == "no-store"
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_readyz_is_503_without_a_live_gpu_worker(client, heartbeats, embedder_loaded):
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp["Retry-After"]
    assert resp.json() == {
        "status": "not ready",
        "checks": {"database": "ok", "broker": "ok", "workers": "no live GPU worker", "embedder": "ok"},
    }


@pytest.mark.django_db
def test_readyz_is_200_once_a_worker_heartbeats(client, heartbeats, embedder_loaded):
    beat(heartbeats, 1)
    resp = client.get("/readyz")  # anonymous: probes have no login
    assert resp.status_code == 200, resp.content
    assert resp.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "workers": "ok", "embedder": "ok"},
    }


@pytest.mark.django_db
def test_readyz_waits_for_the_prompt_embedder(client, heartbeats, monkeypatch):
    beat(heartbeats, 0)
    monkeypatch.setattr(onnx_embedder, "_LIVE", None)
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["embedder"] == "loading"


@pytest.mark.django_db
def test_a_web_process_warm_up_makes_the_embedder_ready(client, heartbeats, monkeypatch):
    """The real link, unpatched: what webapp/wsgi.py runs before serving is what the check waits for."""
    from webapp import wsgi

    beat(heartbeats, 0)
    monkeypatch.setattr(onnx_embedder, "_LIVE", None)  # a fresh process: nothing loaded yet
    assert client.get("/readyz").json()["checks"]["embedder"] == "loading"
    wsgi._warm_up()
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.json()["checks"]["embedder"] == "ok", resp.json()


@pytest.mark.django_db
def test_readyz_names_an_unreachable_broker_and_says_nothing_more(client, embedded_services, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setattr(publishing, "_redis_client", redis.Redis.from_url(redis_url(0, port), socket_timeout=1))
    resp = client.get("/readyz")
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert (checks["database"], checks["broker"], checks["workers"]) == ("ok", "unreachable", "unknown")
    body = resp.content.decode()
    assert str(port) not in body and "127.0.0.1" not in body and "Error" not in body


class DownDatabase:
    """What a connection to a database that cannot be reached does; the message is full of details
    that must not reach an anonymous client."""

    def cursor(self):
        raise OperationalError('connection to server at "10.9.8.7", port 5432 failed: password authentication failed')


@pytest.mark.django_db
def test_readyz_names_an_unreachable_database_and_leaks_nothing(client, heartbeats, embedder_loaded, monkeypatch):
    beat(heartbeats, 0)
    monkeypatch.setattr(health, "connection", DownDatabase())
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp["Content-Type"] == "application/json"
    assert resp.json()["checks"] == {"database": "unreachable", "broker": "ok", "workers": "ok", "embedder": "ok"}
    body = resp.content.decode()
    assert "10.9.8.7" not in body and "password" not in body and "5432" not in body


# --- the process view: dashboard tile and /metrics ------------------------------------------------

PROCESSES = {
    "web": {"state": "running", "pid": 101, "restarts": 0, "last_exit": None, "since": 1_700_000_000.0},
    "worker-gpu.0": {"state": "failed", "pid": None, "restarts": 7, "last_exit": 3, "since": 1_700_000_100.0},
    "postgres": {"state": "restarting", "pid": None, "restarts": 1, "last_exit": -9, "since": 1_700_000_200.0},
}


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.django_db
def test_metrics_export_each_process_and_the_live_workers(client, heartbeats, tmp_path):
    write_status(status_path(tmp_path), PROCESSES)
    beat(heartbeats, 1)
    with override_settings(DATA_DIR=tmp_path, T2I_METRICS_TOKEN="scrape"):
        m = samples(client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape").content.decode())
    assert m[("t2i_live_workers", ())] == 1
    assert m[("t2i_process_up", (("process", "web"),))] == 1
    assert m[("t2i_process_up", (("process", "worker-gpu.0"),))] == 0
    assert m[("t2i_process_up", (("process", "postgres"),))] == 0
    assert m[("t2i_process_failed", (("process", "worker-gpu.0"),))] == 1
    assert m[("t2i_process_failed", (("process", "postgres"),))] == 0
    assert m[("t2i_process_restarts_total", (("process", "worker-gpu.0"),))] == 7


@pytest.mark.django_db
def test_metrics_without_a_supervisor_have_no_process_families(client, heartbeats, tmp_path):
    with override_settings(DATA_DIR=tmp_path, T2I_METRICS_TOKEN="scrape"):
        m = samples(client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape").content.decode())
    assert m[("t2i_live_workers", ())] == 0
    assert not any(name.startswith("t2i_process_") for name, _ in m)


@pytest.mark.django_db
def test_dashboard_tile_shows_each_process_and_worker(client, heartbeats, tmp_path, django_user_model):
    client.force_login(django_user_model.objects.create_user("ops", password="pw-ops-123", is_staff=True))
    beat(heartbeats, 0)
    with override_settings(DATA_DIR=tmp_path, T2I_WORKERS=2):
        assert b"No supervisor status" in client.get("/dashboard/").content
        write_status(status_path(tmp_path), PROCESSES)
        page = client.get("/dashboard/").content.decode()
    tile = page[page.index('id="processes"') :]
    tile = tile[: tile.index("</div>")]
    assert "gpu.0 live" in tile and "gpu.1 no heartbeat" in tile
    assert '<tr class="bad"><td>worker-gpu.0</td><td>failed</td>' in tile
    assert "<td>web</td><td>running</td>" in tile and ">restarting<" in tile
