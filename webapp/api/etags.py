"""ETags of API answers: a digest of exactly what the client would receive."""

from __future__ import annotations

import hashlib
import json

from django.utils.http import parse_etags


def body_etag(body: dict) -> str:
    """A strong ETag of a JSON answer: equal exactly when the answers are equal (keys sorted, so the order of
    the serializer's fields does not matter; values the JSON encoder does not know are compared as text)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest() + '"'


def client_has(request, etag: str) -> bool:
    """Whether the request's If-None-Match names `etag` (weak comparison, as RFC 9110 asks for it) or is *."""
    header = request.headers.get("If-None-Match", "")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return etag.removeprefix("W/") in {tag.removeprefix("W/") for tag in parse_etags(header)}
