"""The generation API: submit, poll, list, cancel, download."""

from __future__ import annotations

import logging

from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from redis import RedisError
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle

from webapp.ledger import transitions
from webapp.ledger.models import GenerationRequest, Status
from webapp.ledger.publishing import BrokerUnavailable
from webapp.serving.probing import NearDuplicateLimit
from webapp.serving.submission import InFlightCapReached, Overloaded, Submission, submit

from .etags import body_etag, client_has
from .serializers import GenerationCreateSerializer, GenerationSerializer

IN_FLIGHT_RETRY_AFTER_S = 5  # the cap frees up as soon as one of the user's requests ends
log = logging.getLogger(__name__)


class SharedRateThrottle(UserRateThrottle):
    """A per-user rate counted in the shared cache (Redis), so it holds across web processes. If that cache
    is unreachable the request is let through: submit then answers 503 for the broker anyway."""

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except RedisError:
            log.warning("throttle cache unreachable; not throttling this request", exc_info=True)
            return True


class SubmitThrottle(SharedRateThrottle):
    scope = "submit"


class ReadThrottle(SharedRateThrottle):
    scope = "read"


class GenerationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = GenerationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation (and `check --deploy`): no user
            return GenerationRequest.objects.none()
        rows = GenerationRequest.objects.filter(owner=self.request.user)
        wanted = self.request.query_params.get("status")
        if wanted:
            rows = rows.filter(status=wanted)
        return rows

    def get_throttles(self):
        return [SubmitThrottle()] if self.action == "create" else [ReadThrottle()]

    @extend_schema(parameters=[OpenApiParameter("status", enum=Status.values)])
    def list(self, request, *args, **kwargs):
        wanted = request.query_params.get("status")
        if wanted and wanted not in Status.values:
            return Response(
                {"detail": f"Unknown status {wanted!r}; use one of {Status.values}."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: GenerationSerializer, 304: None})
    def retrieve(self, request, *args, **kwargs):
        """One request's status. Its ETag is a digest of the answer, so a poller that sends it back as
        If-None-Match gets an empty 304 until something it would see has changed."""
        body = self.get_serializer(self.get_object()).data
        etag = body_etag(body)
        if client_has(request, etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(body, headers={"ETag": etag})

    @extend_schema(request=GenerationCreateSerializer, responses={202: GenerationSerializer})
    def create(self, request):
        data = GenerationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields["idempotency_key"] = fields.get("idempotency_key") or request.headers.get("Idempotency-Key") or None
        try:
            row, created = submit(request.user, Submission(**fields))
        except InFlightCapReached as exc:
            return Response(
                {"detail": str(exc)},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_S)},
            )
        except Overloaded as exc:
            return Response(
                {"detail": str(exc), "retry_after": exc.retry_after},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except NearDuplicateLimit as exc:
            return Response(
                {"detail": str(exc), "retry_after": exc.retry_after},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except BrokerUnavailable:
            return Response(
                {
                    "detail": "The queue (Redis) is unavailable, so the request was not "
                    "accepted. Nothing was stored; retry shortly."
                },
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "5"},
            )
        body = GenerationSerializer(row, context={"request": request}).data
        headers = {"Location": body["url"]}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)

    @extend_schema(
        request=None,
        responses={200: GenerationSerializer, 409: None},
        description="Cancel a queued or running request. A running one ends `cancelled` at once; its batch "
        "goes on for the other requests in it, and no image or cache entry is kept for this one.",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        row = self.get_object()
        if not transitions.cancel(row.id):
            row.refresh_from_db()
            return Response(
                {"detail": f"Only queued or running requests can be cancelled; this one is {row.status}."},
                status=status.HTTP_409_CONFLICT,
            )
        row.refresh_from_db()
        return Response(GenerationSerializer(row, context={"request": request}).data)

    @extend_schema(responses={(200, "image/png"): bytes}, parameters=[OpenApiParameter("thumbnail", bool)])
    @action(detail=True, methods=["get"])
    def image(self, request, pk=None):
        row = self.get_object()  # owner-scoped: someone else's id is a 404
        file = row.thumbnail if request.query_params.get("thumbnail") else row.image
        if row.status != Status.SUCCEEDED or not file:
            raise Http404("This request has no image (yet).")
        return FileResponse(file.open("rb"), content_type="image/png", filename=f"{row.id}.png")
