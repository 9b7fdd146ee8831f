"""Live updates of one request as server-sent events: `GET /api/v1/generations/{id}/events/`.

A plain streaming response (no extra server): every TICK_S it reads the row and its progress and sends the
same JSON as `GET …/{id}/` as one `data:` event, until the row is terminal or STREAM_S have passed; then
the stream ends and the browser's EventSource reconnects by itself (`retry:`), so a stream never holds a
web thread for long. Each process serves at most MAX_STREAMS at once (the rest of its threads stay free
for everything else); beyond that the answer is 503 with Retry-After and the page polls instead.
Owner-only, like every request URL: someone else's id is a 404.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from .gallery import owned_rows
from .openapi import errors
from .serializers import GenerationSerializer
from .throttling import ReadThrottle

TICK_S = 0.5
STREAM_S = 30.0
RETRY_MS = 1000
MAX_STREAMS = 2  # per web process; gunicorn runs 4 threads in each
STREAM_SLOTS = threading.BoundedSemaphore(MAX_STREAMS)


# One server-sent event as the document describes it: its `data` is the request's JSON, as `GET …/{id}/` returns it.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "description": "The request as `GET …/{id}/` returns it (JSON)."},
        "event": {"type": "string", "enum": ["message"]},
    },
    "required": ["data"],
}


class _SlotStream:
    """The event iterator, holding one of the process's stream slots until the server closes it (the end
    of the stream or a client that went away). The slot is released exactly once, even if the response was
    never iterated."""

    def __init__(self, events: Iterator[bytes]) -> None:
        self._events = events
        self._held = True

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        if self._held:
            self._held = False
            STREAM_SLOTS.release()
        self._events.close()


def request_events(request, pk) -> Iterator[bytes]:
    """`data:` events with the request's JSON every TICK_S until it is terminal or STREAM_S passed."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    ends = time.monotonic() + STREAM_S
    while True:
        row = owned_rows(request.user).filter(pk=pk).first()
        if row is None:  # removed meanwhile
            return
        body = GenerationSerializer(row, context={"request": request, "live": True}).data
        yield b"data: " + JSONRenderer().render(body) + b"\n\n"
        if row.is_terminal or time.monotonic() >= ends:
            return
        time.sleep(TICK_S)


class GenerationEventsView(APIView):
    renderer_classes = [JSONRenderer]  # for errors; the stream itself is not a DRF Response
    throttle_classes = [ReadThrottle]

    def perform_content_negotiation(self, request, force=False):
        # `Accept: text/event-stream` (what EventSource sends) must not turn an error into 406: errors are JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        responses={(200, "text/event-stream"): SSE_EVENT_SCHEMA, **errors(503)},
        description="Server-sent events: each `data:` line is the request as `GET …/{id}/` returns it, about "
        f"twice a second, until it is terminal or {STREAM_S:g} s passed (then reconnect; EventSource does). "
        "503 with Retry-After when this process serves its maximum of streams: poll instead.",
    )
    def get(self, request, pk):
        row = get_object_or_404(owned_rows(request.user), pk=pk)
        if not STREAM_SLOTS.acquire(blocking=False):
            return Response(
                {"detail": "Too many live streams on this server right now; poll GET …/{id}/ instead."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "5"},
            )
        response = StreamingHttpResponse(_SlotStream(request_events(request, row.pk)), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # a proxy must pass each event on at once
        return response
