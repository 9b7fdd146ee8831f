"""The generation API: submit, poll, list, cancel, download."""

from __future__ import annotations

import logging

from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from webapp.cache.latent_storage import storage_errors
from webapp.ledger import transitions
from webapp.ledger.models import GenerationRequest, Status
from webapp.ledger.publishing import BrokerUnavailable
from webapp.serving.probing import NearDuplicateLimit
from webapp.serving.submission import IdempotencyKeyReused, InFlightCapReached, Overloaded, Submission, submit

from .etags import body_etag, client_has
from .gallery import InvalidFilter, delete_requests, owned_rows, parse_filter, set_favourite
from .openapi import errors, example
from .serializers import GenerationCreateSerializer, GenerationSerializer
from .throttling import ReadThrottle, SubmitThrottle

IN_FLIGHT_RETRY_AFTER_S = 5  # the cap frees up as soon as one of the user's requests ends
log = logging.getLogger(__name__)


class FavouriteSerializer(serializers.Serializer):
    favourite = serializers.BooleanField(help_text="true: starred; false: not.")


class GenerationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    serializer_class = GenerationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation (and `check --deploy`): no user
            return GenerationRequest.objects.none()
        # Never another user's, never a deleted one; not the 384-float embedding, which no answer shows.
        return owned_rows(self.request.user).defer("embedding")

    def get_throttles(self):
        return [SubmitThrottle()] if self.action == "create" else [ReadThrottle()]

    @extend_schema(
        parameters=[
            OpenApiParameter("status", enum=Status.values),
            OpenApiParameter(
                "q", description='Search the prompts: words (stemmed), "a phrase", -without, or a part of a word.'
            ),
            OpenApiParameter("since", OpenApiTypes.DATE, description="Created on or after this day (UTC)."),
            OpenApiParameter("until", OpenApiTypes.DATE, description="Created on or before this day (UTC)."),
            OpenApiParameter("favourites", bool, description="Only starred requests."),
        ]
    )
    def list(self, request, *args, **kwargs):
        """Your requests, newest first, 20 a page; filtered by status, prompt text, day and star."""
        try:
            wanted = parse_filter(request.query_params)
        except InvalidFilter as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        rows = self.paginate_queryset(wanted.apply(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)

    @extend_schema(
        responses={204: None},
        description="Delete one of your requests (a queued or running one is cancelled first): it is gone for "
        "you (404 afterwards), its prompt and image are erased and cache entries made from it purged. The row "
        "stays, marked deleted, for the operator's SLO history.",
    )
    def destroy(self, request, pk=None):
        row = self.get_object()
        delete_requests(request.user, [row.pk])
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=FavouriteSerializer, responses={200: GenerationSerializer})
    @action(detail=True, methods=["post"])
    def favourite(self, request, pk=None):
        """Star (`{"favourite": true}`) or unstar one of your requests."""
        row = self.get_object()
        data = FavouriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        set_favourite(request.user, row.pk, data.validated_data["favourite"])
        row.refresh_from_db()
        return Response(GenerationSerializer(row, context={"request": request}).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, description="An ETag of an earlier answer."
            ),
            OpenApiParameter("ETag", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[200, 304]),
        ],
        responses={200: GenerationSerializer, 304: OpenApiResponse(description="Unchanged since that ETag.")},
    )
    def retrieve(self, request, *args, **kwargs):
        """One request's status. Its ETag is a digest of the answer, so a poller that sends it back as
        If-None-Match gets an empty 304 until something it would see has changed."""
        body = self.get_serializer(self.get_object()).data
        etag = body_etag(body)
        if client_has(request, etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(body, headers={"ETag": etag})

    @extend_schema(
        request=GenerationCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Per user: a repeat with the same body returns the original request (202, "
                "Idempotent-Replayed: true) instead of a new one; with a different body (another value, or a "
                "field stated in one body and left out of the other) it is a 422. "
                "The body's `idempotency_key` does the same.",
            ),
            OpenApiParameter(
                "Location", OpenApiTypes.URI, OpenApiParameter.HEADER, response=[202], description="The request's URL."
            ),
            OpenApiParameter(
                "Idempotent-Replayed",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[202],
                enum=["true"],
                description="Present when this is the original request of a repeated Idempotency-Key.",
            ),
        ],
        responses={202: GenerationSerializer, **errors(422)},
        examples=[
            example("A prompt and a seed", {"prompt": "a red fox in the snow", "seed": 7}, request_only=True),
            example(
                "Every field",
                {
                    "prompt": "a lighthouse at dusk, oil painting",
                    "negative_prompt": "blurry",
                    "seed": 42,
                    "guidance_scale": 7.5,
                    "priority": "interactive",
                    "idempotency_key": "my-request-1",
                },
                request_only=True,
                description="Width, height and steps are left out: the server uses the configured defaults. "
                "Allowed values are set by the operator; a 400 names them.",
            ),
        ],
    )
    def create(self, request):
        data = GenerationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields["idempotency_key"] = fields.get("idempotency_key") or request.headers.get("Idempotency-Key") or None
        try:
            row, created = submit(request.user, Submission(**fields))
        except IdempotencyKeyReused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
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
        responses={200: GenerationSerializer, **errors(409)},
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
        # Streamed from the storage (local MEDIA_ROOT or the S3 bucket any worker wrote it to), never a
        # redirect to a pre-signed URL: the owner check above stays the only way in (docs/storage.md).
        try:
            handle = file.storage.open(file.name, "rb")
            handle.seek(0)  # S3 fetches the object here, so a failure is answered below, not mid-stream
        except FileNotFoundError:
            raise Http404("This request's image file is missing from storage.") from None
        except storage_errors():
            log.warning("image %s could not be read from storage", file.name, exc_info=True)
            return Response(
                {"detail": "The image storage is unavailable; retry shortly."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "5"},
            )
        return FileResponse(handle, content_type="image/png", filename=f"{row.id}.png")
