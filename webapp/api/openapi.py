"""The OpenAPI document tells the truth about errors: every operation lists the codes it can answer.

Errors every API view shares are added here, once, instead of on each view (webapp/api/errors.py and
webapp/middleware.py answer them, always as JSON with a `detail`):

    401  no or a bad token (every operation: all need a signed-in user)
    403  CSRF check failed (unsafe methods with session authentication)
    404  no such row of yours (paths with an id), or no such page (lists)
    400  the body or a query parameter is invalid (operations with a body or query parameters)
    413, 415  the body is too large or not JSON / form data (operations with a body)
    429  throttled (every operation; Retry-After)
    503  the database is unavailable (every operation; Retry-After)

Codes only some operations answer (409, 422, the broker's 503…) are stated on the view with `errors()`.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}

# What each code means, as the document says it.
DESCRIPTIONS = {
    400: "Invalid input: each field names what is wrong and what is allowed; `detail` for a malformed body or "
    "an invalid query parameter.",
    401: "Authentication credentials were not provided or are invalid (`Authorization: Token …`).",
    403: "CSRF check failed (session authentication only; API tokens need no CSRF token).",
    404: "Not found: no such request of yours, or no such page.",
    409: "The request is in a state that does not allow this.",
    413: "The body is larger than the server accepts.",
    415: "The body's media type is not JSON or form data.",
    422: "The Idempotency-Key was already used by you with a different body: use a new key for a new request.",
    429: "Too many requests (throttle, per-user cap on queued + running requests, or the near-duplicate limit).",
    503: "Temporarily unavailable (database or queue down, server overloaded, too many live streams).",
}
RETRYABLE = {429, 503}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in words.")
    retry_after = serializers.IntegerField(
        required=False, help_text="Some 429 and 503 answers: seconds to wait (as the Retry-After header)."
    )


# A 400 is DRF's field errors ({"prompt": ["…"]}) or a single `detail` (a malformed body, a bad query parameter).
VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
    "description": "Field name → messages, or `detail` alone.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """`extend_schema(responses=…)` entries for error codes a view answers beyond the shared ones."""
    return {code: OpenApiResponse(ErrorSerializer, description=DESCRIPTIONS[code]) for code in codes}


def example(name: str, value: dict, **kwargs) -> OpenApiExample:
    return OpenApiExample(name, value=value, **kwargs)


class ErrorDocumentingAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the shared error responses (see the module docstring)."""

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in sorted(shared_error_codes(self.method, operation)):
            responses.setdefault(str(code), self._error_response(code))
        for code, response in responses.items():
            if int(code) in RETRYABLE:  # also where a view documented its own 429/503
                response.setdefault("headers", {}).update(RETRY_AFTER)
        return operation

    def _error_response(self, code: int) -> dict:
        if code == 400:
            schema = VALIDATION_ERROR_SCHEMA
        else:
            schema = self.resolve_serializer(ErrorSerializer, "response").ref
        return {"description": DESCRIPTIONS[code], "content": {"application/json": {"schema": schema}}}


def shared_error_codes(method: str, operation: dict) -> set[int]:
    """The codes any operation of this shape can answer, whatever the view."""
    codes = {401, 429, 503}
    places = {p["in"] for p in operation.get("parameters", [])}
    has_body = "requestBody" in operation
    if method in UNSAFE_METHODS:
        codes.add(403)
    if "path" in places or "query" in places:  # no such row; a list's page past the end
        codes.add(404)
    if has_body or "query" in places:
        codes.add(400)
    if has_body:
        codes |= {413, 415}
    return codes
