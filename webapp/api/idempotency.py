"""What a reused Idempotency-Key is compared with: a digest of the original request's normalized body.

The row keeps the values a request runs with, not which of them its body stated (a seed, size, steps or class
left out is filled by the server), so by the row alone a retry that leaves out a field the original stated
looks the same. So when a request with a key is created, the digest of its body (the validated fields, an
omitted one as null, the key itself left out) and the names of the fields it stated are kept in Redis under
the row's id for `KEPT_S`, with no ledger column. A replay compares the new body's digest with it: different
→ 422 naming the fields. Without a stored digest (older than `KEPT_S`, Redis data lost or unreachable) the
comparison is the row's field by field (`webapp/serving/submission.replay_of`), as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import redis

from webapp.ledger.models import GenerationRequest
from webapp.ledger.publishing import broker
from webapp.serving.submission import IdempotencyKeyReused, Submission

log = logging.getLogger(__name__)

KEY_PREFIX = "t2i:idempotent-body:"
KEPT_S = 24 * 3600  # a retry comes within minutes; a day is what payment APIs promise for their keys
BODY_FIELDS = tuple(f.name for f in dataclasses.fields(Submission) if f.name != "idempotency_key")


def normalized_body(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The body as the serializer validated it (whitespace trimmed, defaults filled), omitted fields null."""
    return {name: fields.get(name) for name in BODY_FIELDS}


def body_digest(fields: Mapping[str, Any]) -> str:
    text = json.dumps(normalized_body(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _key(row: GenerationRequest) -> str:
    return f"{KEY_PREFIX}{row.id}"


def remember_body(row: GenerationRequest, fields: Mapping[str, Any]) -> None:
    """Keep the digest of the body that created `row`. A Redis problem is logged: the request was accepted,
    and a later replay then falls back to the row's fields."""
    stated = sorted(name for name, value in normalized_body(fields).items() if value is not None)
    value = json.dumps({"digest": body_digest(fields), "stated": stated})
    try:
        broker().set(_key(row), value, ex=KEPT_S)
    except redis.RedisError:
        log.warning("could not keep the body digest of %s", row.id, exc_info=True)


def check_same_body(row: GenerationRequest, fields: Mapping[str, Any], key: str) -> None:
    """Raise IdempotencyKeyReused when the original body of `row` (by its digest) differs from `fields`."""
    try:
        raw = broker().get(_key(row))
    except redis.RedisError:
        log.warning("could not read the body digest of %s; comparing the row's fields", row.id, exc_info=True)
        return
    if raw is None:
        return
    try:
        original = json.loads(raw)
        digest, stated = original["digest"], set(original["stated"])
    except (ValueError, KeyError, TypeError):
        return
    if digest == body_digest(fields):
        return
    # The row's values already matched every field both bodies state (replay_of), so what differs is which
    # fields were stated: one body gives a value the other leaves to the server.
    now_stated = {name for name, value in normalized_body(fields).items() if value is not None}
    differing = [f"{name} (stated in one body, left out of the other)" for name in sorted(stated ^ now_stated)]
    raise IdempotencyKeyReused(key, differing or ["the body"])


def settle_key(row: GenerationRequest, created: bool, fields: Mapping[str, Any]) -> None:
    """After submit: keep the new request's digest, or check a replay against the original's."""
    key = fields.get("idempotency_key")
    if not key:
        return
    if created:
        remember_body(row, fields)
    else:
        check_same_body(row, fields, key)
