"""Cache tenants: who may reuse whose cache entries (ServingConfig.cache_scope).

A *tenant* is the unit the `tenant` scope isolates. Rule (one place): the user's Django group with the
lowest id, not counting the `batch-users` priority group (a scheduling class, not an organisation) —
``"g:<group id>"``; a user in no other group is a tenant alone — ``"u:<user id>"``. Every entry records
its creator's tenant whatever the scope, so the operator can switch scopes without rebuilding the cache.

Two tenants belong to nobody: ``PUBLIC_TENANT`` for entries ``warm_cache`` made from an operator's prompt
file (reusable in the `shared` and `tenant` scopes: they hold no user's text) and ``UNKNOWN_TENANT`` for
entries made before provenance was recorded (reusable only in the `shared` scope: they may hold any
user's prompt).
"""

from __future__ import annotations

from webapp.ledger.models import BATCH_USERS_GROUP, CacheScope

PUBLIC_TENANT = "public"
UNKNOWN_TENANT = ""


def tenant_for(user) -> str:
    """The tenant of ``user`` (a User instance or None for the operator)."""
    if user is None:
        return PUBLIC_TENANT
    group_id = user.groups.exclude(name=BATCH_USERS_GROUP).order_by("id").values_list("id", flat=True).first()
    return f"g:{group_id}" if group_id is not None else f"u:{user.pk}"


def lookup_tenants(scope: str, user) -> list[str] | None:
    """The tenants whose entries a request of ``user`` may resume from: None = every entry (shared).
    Not for the `off` scope, which does no lookup at all."""
    if scope == CacheScope.SHARED:
        return None
    if scope == CacheScope.TENANT:
        return [tenant_for(user), PUBLIC_TENANT]
    raise ValueError(f"scope {scope!r} does no lookup")
