"""API error responses: always JSON with a `detail` message, never an HTML traceback.

DRF's exceptions go through `exception_handler`; errors Django answers itself (no such URL, an
exception outside DRF) through the `handler…` views named in webapp/urls.py, which answer JSON under
/api/ and Django's small plain pages elsewhere; webapp.middleware.ApiJsonErrorsMiddleware converts
whatever else is left (a bare 405, a CSRF failure, a debug page).
"""

from __future__ import annotations

from http import HTTPStatus

from django.db import DatabaseError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    if isinstance(exc, ParseError):
        return Response({"detail": f"Malformed request body: {exc.detail}"}, status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, DatabaseError):
        return Response(
            {"detail": "The database is unavailable; try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    return None


def is_api(request) -> bool:
    return request.path.startswith("/api/")


def json_error(request, status: int, detail: str | None = None) -> JsonResponse:
    """`{"detail": …}` in DRF's wording for the common cases."""
    if detail is None:
        if status == 404:
            detail = "Not found."
        elif status == 405:
            detail = f'Method "{request.method}" not allowed.'
        else:
            try:
                detail = HTTPStatus(status).phrase + "."
            except ValueError:
                detail = f"Error {status}."
    return JsonResponse({"detail": detail}, status=status)


def handler400(request, exception=None):
    if is_api(request):
        return json_error(request, 400, "Bad request.")
    return defaults.bad_request(request, exception)


def handler403(request, exception=None):
    if is_api(request):
        return json_error(request, 403, "You do not have permission to perform this action.")
    return defaults.permission_denied(request, exception)


def handler404(request, exception=None):
    if is_api(request):
        return json_error(request, 404)
    return defaults.page_not_found(request, exception)


def handler500(request):
    if is_api(request):
        return json_error(request, 500, "Server error; it has been logged.")
    return defaults.server_error(request)
