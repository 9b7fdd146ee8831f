"""API token authentication with a short per-process memory: a client's back-to-back requests cost one query.

knox's TokenAuthentication reads the token row and its user from PostgreSQL on every request. This one keeps
what a successful lookup found for T2I_TOKEN_CACHE_SECONDS, keyed by the SHA-512 digest of the presented
secret (the secret itself is never kept). Revoking a token, and any change to a user (deactivated, made
staff, put in a group's list by a save), empties this process's memory at once; other web processes notice
within T2I_TOKEN_CACHE_SECONDS. An expired token is refused on the cached path too. Failed lookups are not
kept, so an unknown token always asks the database.

The remembered user carries a `remembered_facts` dict, shared by the copies handed to requests, in which
other code keeps what it derived from the user alone (submit: the default priority from the user's groups),
so it is forgotten with the lookup. A change of anyone's groups, or of a group, empties the memory too.
"""

from __future__ import annotations

import copy
import threading
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from rest_framework import exceptions

_MAX_ENTRIES = 10_000  # a bound on memory: past it the memory starts afresh
_lock = threading.Lock()
_known: dict[str, tuple[float, object, AuthToken]] = {}  # digest → (monotonic time found, user, token row)


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, token: bytes):
        ttl = settings.T2I_TOKEN_CACHE_SECONDS
        if ttl <= 0:
            return super().authenticate_credentials(token)
        try:
            digest = hash_token(token.decode("utf-8"))
        except (TypeError, ValueError, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        entry = _known.get(digest)
        if entry is not None and time.monotonic() - entry[0] < ttl and _unexpired(entry[2]):
            return copy.copy(entry[1]), entry[2]  # a copy: a request may set attributes on its user
        user, auth_token = super().authenticate_credentials(token)
        user.remembered_facts = {}  # shared by this lookup's copies; see the module docstring
        with _lock:
            if len(_known) >= _MAX_ENTRIES:
                _known.clear()
            _known[digest] = (time.monotonic(), user, auth_token)
        return copy.copy(user), auth_token


class CachedKnoxTokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme: the same as knox's."""

    target_class = "webapp.api.auth.CachedTokenAuthentication"


def _unexpired(auth_token: AuthToken) -> bool:
    return auth_token.expiry is None or auth_token.expiry > timezone.now()


def forget_tokens(**_signal_kwargs) -> None:
    with _lock:
        _known.clear()


post_delete.connect(forget_tokens, sender=AuthToken, dispatch_uid="t2i-forget-tokens-on-revoke")
post_save.connect(forget_tokens, sender=get_user_model(), dispatch_uid="t2i-forget-tokens-on-user-change")
post_delete.connect(forget_tokens, sender=get_user_model(), dispatch_uid="t2i-forget-tokens-on-user-delete")
m2m_changed.connect(forget_tokens, sender=get_user_model().groups.through, dispatch_uid="t2i-forget-tokens-on-groups")
post_save.connect(forget_tokens, sender=Group, dispatch_uid="t2i-forget-tokens-on-group-change")
post_delete.connect(forget_tokens, sender=Group, dispatch_uid="t2i-forget-tokens-on-group-delete")
