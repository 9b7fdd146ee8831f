"""`/healthz` (liveness) and `/readyz` (readiness), for compose health checks and load balancers.

Both are public (no login: a probe has none) and say nothing about the deployment beyond which
check failed: no host names, no error messages, no counts. The reasons go to the log instead.

- /healthz: this web process answers. No dependency is asked, so a database outage does not make
  an orchestrator restart healthy web processes.
- /readyz: this process can serve a submission now: PostgreSQL answers, Redis (the broker) answers,
  at least one GPU worker's heartbeat is fresh, and the prompt embedder is loaded (the start-up
  warm-up of webapp/wsgi.py has finished, so the first user does not wait for it).
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.http import require_safe

from scheduler import onnx_embedder
from webapp.ledger.publishing import BrokerUnavailable, check_broker
from webapp.serving.cluster_state import live_workers

log = logging.getLogger(__name__)

OK = "ok"
NO_STORE = {"Cache-Control": "no-store"}


def database_check() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        log.warning("readyz: database unreachable: %s", exc)
        return "unreachable"
    return OK


def broker_check() -> str:
    try:
        check_broker()
    except BrokerUnavailable as exc:
        log.warning("readyz: broker unreachable: %s", exc)
        return "unreachable"
    return OK


def workers_check(broker_ok: bool) -> str:
    if not broker_ok:  # heartbeats live in Redis: without it nobody can tell (live_workers says "all")
        return "unknown"
    return OK if live_workers() else "no live GPU worker"


def embedder_check() -> str:
    return OK if onnx_embedder.live_embedder_loaded() else "loading"


def readiness() -> dict[str, str]:
    """Each check's result: "ok" or a short fixed reason."""
    broker = broker_check()
    return {
        "database": database_check(),
        "broker": broker,
        "workers": workers_check(broker == OK),
        "embedder": embedder_check(),
    }


@require_safe
def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"}, headers=NO_STORE)


@require_safe
def readyz(request) -> JsonResponse:
    checks = readiness()
    ready = all(result == OK for result in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
        headers=NO_STORE if ready else {**NO_STORE, "Retry-After": "5"},
    )
