"""Every error on /api/ is JSON with a `detail` message, whoever answers it (DRF, Django, gunicorn), with
DEBUG off or on; pages elsewhere get small plain error pages, never Django's debug page."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from django.test import Client, override_settings

from webapp.ledger.models import GenerationRequest
from webapp.stack.services import free_port

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations/"


def assert_json_error(resp, status: int) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.content[:300])
    assert resp["Content-Type"].startswith("application/json"), resp["Content-Type"]
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    assert b"<html" not in resp.content.lower() and b"Traceback" not in resp.content
    return body


def test_404_is_json(api, embedded_services):
    assert_json_error(api.get("/api/v1/nothing-here/"), 404)  # no such URL: Django's handler404
    assert_json_error(api.get("/api/nothing/"), 404)
    assert_json_error(api.get(f"{URL}{uuid.uuid4()}/"), 404)  # no such row: DRF
    assert_json_error(Client().post("/api/v2/generations/", {"prompt": "x"}), 404)  # anonymous, no CSRF token


def test_405_is_json_and_names_the_allowed_methods(api, user, embedded_services):
    body = assert_json_error(api.delete(URL), 405)
    assert "DELETE" in body["detail"]
    rid = api.post(URL, {"prompt": "a fox"}, format="json").json()["id"]
    resp = api.put(f"{URL}{rid}/", {"prompt": "changed"}, format="json")
    assert_json_error(resp, 405)
    assert "GET" in resp["Allow"] and "PUT" not in resp["Allow"]
    assert_json_error(api.get(f"{URL}{rid}/cancel/"), 405)


def test_413_for_a_body_over_the_size_limit(api, client, user, settings, embedded_services):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    big = json.dumps({"prompt": "x" * limit})
    body = assert_json_error(api.post(URL, data=big, content_type="application/json"), 413)
    assert str(limit) in body["detail"]
    form = "prompt=" + "x" * limit
    assert_json_error(api.post(URL, data=form, content_type="application/x-www-form-urlencoded"), 413)
    # Just under the limit, the request is read (and refused for its prompt, not its size).
    under = json.dumps({"prompt": "x" * (limit - 100)})
    assert api.post(URL, data=under, content_type="application/json").status_code == 400
    # Outside /api/: a short plain answer, not an HTML page.
    client.force_login(user)
    resp = client.post("/", data=form, content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 413 and resp["Content-Type"].startswith("text/plain")
    assert GenerationRequest.objects.count() == 0


def test_415_is_json(api, embedded_services):
    body = assert_json_error(api.post(URL, data="prompt: a fox", content_type="text/plain"), 415)
    assert "text/plain" in body["detail"]


def test_400s_are_json(api, settings, embedded_services):
    assert_json_error(api.post(URL, data='{"prompt": ', content_type="application/json"), 400)
    # More form fields than DATA_UPLOAD_MAX_NUMBER_FIELDS: Django's SuspiciousOperation → handler400.
    fields = "&".join(f"f{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    assert_json_error(api.post(URL, data=fields, content_type="application/x-www-form-urlencoded"), 400)


def test_500_is_json_and_shows_nothing_of_the_exception(api, monkeypatch, embedded_services):
    from webapp.api.views import GenerationViewSet

    def boom(self, request, *args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(GenerationViewSet, "list", boom)
    api.raise_request_exception = False
    for debug in (False, True):  # DEBUG=1 (development) would show the debug page: not under /api/
        with override_settings(DEBUG=debug):
            resp = api.get(URL, HTTP_ACCEPT="text/html")
            assert_json_error(resp, 500)
            assert b"secret internals" not in resp.content and b"SECRET_KEY" not in resp.content


def test_debug_pages_never_reach_the_api(api, embedded_services):
    with override_settings(DEBUG=True):
        resp = api.get("/api/v1/nothing-here/", HTTP_ACCEPT="text/html")
        assert_json_error(resp, 404)
        assert b"URLconf" not in resp.content


def test_pages_elsewhere_get_small_error_pages(client, embedded_services):
    resp = client.get("/no-such-page/")
    assert resp.status_code == 404 and resp["Content-Type"].startswith("text/html")
    assert b"Page not found" in resp.content  # our styled page (templates/404.html), not Django's debug page
    assert b"URLconf" not in resp.content and b"Traceback" not in resp.content
    resp = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "x"})  # no CSRF token
    assert resp.status_code == 403 and b"Traceback" not in resp.content and b"The form expired" in resp.content


def _raw_http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _answers(port: int) -> bool:
    """Whether the server's worker answers /healthz (the liveness probe) yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status (urllib's errors are OSErrors)
        return False


@pytest.fixture
def gunicorn_server(embedded_services):
    """The web process as `make run` and compose start it (gunicorn with webapp/gunicorn_conf.py)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf"]
        + ["-b", f"127.0.0.1:{port}", "-w", "1"],
        env={**os.environ, "DB_CONNECT_TIMEOUT": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The master binds the port before its worker has loaded the app (the embedder first, seconds on a busy
    # machine), and only a loaded worker answers: wait for an answer, not for the port.
    deadline = time.monotonic() + 180
    while not _answers(port):
        assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
        time.sleep(0.2)
    yield port
    server.terminate()
    server.wait(10)


def test_errors_gunicorn_answers_itself_are_json_too(gunicorn_server):
    """Oversized headers never reach Django: gunicorn answers 431 (and 414 for a long request line),
    as JSON thanks to webapp/gunicorn_conf.py."""
    port = gunicorn_server
    huge = b"X-Big: " + b"a" * 10_000
    request = b"GET /api/v1/generations/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + huge + b"\r\n\r\n"
    status, headers, body = _raw_http(port, request)
    assert status == 431 and headers["content-type"] == "application/json"
    assert "Request Header Fields Too Large" in json.loads(body)["detail"]
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
    status, headers, body = _raw_http(port, b"GET /api/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
    assert status == 431 and json.loads(body)["detail"]
    status, headers, body = _raw_http(port, b"GET /api/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 414 and headers["content-type"] == "application/json" and json.loads(body)["detail"]
    # And one that Django answers, through the real server: no such API URL.
    status, headers, body = _raw_http(
        port, b"GET /api/v1/nothing-here/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"detail": "Not found."}
