"""Turn "PostgreSQL is unreachable" into a 503 (JSON for the API, a short page otherwise)."""

from __future__ import annotations

import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

log = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        try:
            return self.get_response(request)
        except (OperationalError, InterfaceError) as exc:
            return self._unavailable(request, exc)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)):
            return self._unavailable(request, exception)
        return None

    @staticmethod
    def _unavailable(request, exc: DatabaseError):
        log.error("database unavailable: %s", exc)
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"detail": "The database is unavailable; try again shortly."}, status=503, headers={"Retry-After": "5"}
            )
        return HttpResponse(
            "<h1>Service temporarily unavailable</h1><p>The database cannot be "
            "reached. Try again in a few seconds.</p>",
            status=503,
            headers={"Retry-After": "5"},
        )
