"""Project middleware: "PostgreSQL is unreachable" → 503; every error under /api/ is JSON; 413 for an
oversized body; the Content-Security-Policy of HTML pages."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

from webapp.api.errors import is_api, json_error

log = logging.getLogger(__name__)


class ContentSecurityPolicyMiddleware:
    """Adds `Content-Security-Policy` (settings.T2I_CSP) to HTML responses that have none. Our templates
    have no inline script or style; third-party pages under T2I_CSP_INLINE_STYLE_PREFIXES also get
    inline styles. X-Content-Type-Options, Referrer-Policy and X-Frame-Options come from Django's
    SecurityMiddleware and XFrameOptionsMiddleware."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" in response or not response.get("Content-Type", "").startswith("text/html"):
            return response
        policy = settings.T2I_CSP
        if request.path.startswith(tuple(settings.T2I_CSP_INLINE_STYLE_PREFIXES)):
            policy = policy.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
        response["Content-Security-Policy"] = policy
        return response


class ApiJsonErrorsMiddleware:
    """Under /api/, an error answer that is not JSON (Django's 404 or 500 page, a bare 405, a CSRF
    failure, a debug page with DEBUG=1) becomes `{"detail": …}` with the same status and headers."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code < 400 or not is_api(request):
            return response
        content_type = response.get("Content-Type", "")
        if content_type.startswith("application/json") or "+json" in content_type:
            return response
        replacement = json_error(request, response.status_code)
        for header, value in response.items():
            if header.lower() not in ("content-type", "content-length"):
                replacement[header] = value
        replacement.cookies = response.cookies
        return replacement


class RequestSizeLimitMiddleware:
    """413 for a request body over DATA_UPLOAD_MAX_MEMORY_SIZE, answered before any view or parser
    reads it (Django alone would answer 400, and only where `request.body` is read)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_or_page(request, 400, "Malformed Content-Length header.")
        if limit is not None and length > limit:
            return _too_big(request, limit)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDataTooBig):
            return _too_big(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return None


def _too_big(request, limit: int):
    return json_or_page(request, 413, f"The request body is larger than the limit of {limit} bytes.")


def json_or_page(request, status: int, detail: str):
    if is_api(request):
        return JsonResponse({"detail": detail}, status=status)
    return HttpResponse(detail + "\n", status=status, content_type="text/plain; charset=utf-8")


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
