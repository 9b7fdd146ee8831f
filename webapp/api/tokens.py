"""API tokens of the signed-in user: list, create (with an expiry), revoke.

Tokens are django-rest-knox tokens: the database holds only a SHA-512 digest of each secret and its
first characters (`token_key`, knox's lookup prefix, which cannot authenticate on its own). The secret
is returned once, by the request that creates it; lists show the prefix, creation time and expiry.
The browser page (webapp.web.views.tokens) uses the same functions.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from knox.models import AuthToken
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle


class TokenThrottle(UserRateThrottle):
    scope = "read"


def live_tokens(user):
    """The user's tokens that still authenticate, newest first (expired ones are not listed)."""
    now = timezone.now()
    return AuthToken.objects.filter(user=user).filter(Q(expiry__isnull=True) | Q(expiry__gt=now)).order_by("-created")


def create_token(user, days: int | None) -> tuple[AuthToken, str]:
    """A new token for `user` that expires in `days` days (None: never). Returns (row, secret)."""
    return AuthToken.objects.create(user=user, expiry=timedelta(days=days) if days else None)


def revoke_token(user, token_id: str) -> bool:
    """Delete the user's token whose id (its first characters) is `token_id`; False if none."""
    deleted, _ = AuthToken.objects.filter(user=user, token_key=token_id).delete()
    return bool(deleted)


def max_days() -> int:
    return settings.T2I_TOKEN_MAX_DAYS


def default_days() -> int:
    return settings.T2I_TOKEN_DEFAULT_DAYS


class TokenSerializer(serializers.Serializer):
    id = serializers.CharField(source="token_key", read_only=True, help_text="The token's first characters.")
    created = serializers.DateTimeField(read_only=True)
    expiry = serializers.DateTimeField(read_only=True, allow_null=True, help_text="null: never expires.")


class TokenCreateSerializer(serializers.Serializer):
    expires_in_days = serializers.IntegerField(
        required=False,
        default=default_days,
        help_text="1 to T2I_TOKEN_MAX_DAYS (365 unless configured); default T2I_TOKEN_DEFAULT_DAYS (30).",
    )

    def validate_expires_in_days(self, value: int) -> int:
        if not 1 <= value <= max_days():
            raise serializers.ValidationError(f"expires_in_days must be between 1 and {max_days()}.")
        return value


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret: shown only in this response.")


class TokenViewSet(viewsets.ViewSet):
    """`GET` lists your live tokens (never their secrets), `POST` creates one and returns its secret
    once, `DELETE /{id}/` revokes one (it then gets 401)."""

    lookup_field = "token_id"
    lookup_value_regex = "[^/]+"

    def get_throttles(self):
        return [TokenThrottle()]

    @extend_schema(responses={200: TokenSerializer(many=True)})
    def list(self, request):
        return Response(TokenSerializer(live_tokens(request.user), many=True).data)

    @extend_schema(request=TokenCreateSerializer, responses={201: TokenCreatedSerializer})
    def create(self, request):
        data = TokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row, secret = create_token(request.user, data.validated_data["expires_in_days"])
        body = dict(TokenSerializer(row).data, token=secret)
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, token_id=None):
        if not revoke_token(request.user, token_id):
            return Response({"detail": "You have no token with this id."}, status=status.HTTP_404_NOT_FOUND)
        return Response(status=status.HTTP_204_NO_CONTENT)
