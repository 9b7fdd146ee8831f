"""The live fields of a generation: progress, queue position, ETA, time split, lateness, cache reuse in words.

Computed per response (webapp/serving/request_progress.py), never stored. A GET (and the event stream)
asks Redis and the queue; any other response (the 202 of a submit, a cancel) reports only what the row
says, so submitting stays as cheap as it was: poll or stream for the queue position and the ETA.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webapp.ledger.models import GenerationRequest, Status
from webapp.serving.request_progress import LiveProgress, live_progress, row_progress


def reuse_summary(row: GenerationRequest) -> str:
    """K* and the served K′ in plain words, never naming another user's prompt."""
    if row.status not in (Status.SUCCEEDED, Status.QUEUED, Status.RUNNING):
        return ""
    done = row.status == Status.SUCCEEDED
    k, total = row.k_served or 0, row.steps
    if k == 0:
        return f"{'Ran' if done else 'Runs'} all {total} steps from scratch (no earlier latent reused)."
    source = f"your earlier prompt “{row.neighbour_text}”" if row.cache_neighbor_same_owner else row.neighbour_text
    best = (
        ""
        if row.k_star in (None, k)
        else f" (K* = {row.k_star}: the most steps this similarity can reuse at the quality target)"
    )
    return f"{'Reused' if done else 'Reuses'} {k} of {total} steps from {source or 'a similar earlier prompt'}{best}."


# Schema types of the method fields: most are null while unknown, and the document must say so.
NULLABLE_INT = serializers.IntegerField(allow_null=True)
NULLABLE_FLOAT = serializers.FloatField(allow_null=True)


class LiveProgressFields(serializers.Serializer):
    FIELDS = (
        "progress",
        "step",
        "steps_to_run",
        "queue_position",
        "eta_seconds",
        "waiting_seconds",
        "generating_seconds",
        "late_by_seconds",
        "reuse_summary",
    )

    progress = serializers.SerializerMethodField(help_text="0–1 of the steps this request runs; null if unknown.")
    step = serializers.SerializerMethodField(help_text="Denoising steps done, of `steps_to_run`.")
    steps_to_run = serializers.SerializerMethodField(help_text="N − K′: the steps not reused from the cache.")
    queue_position = serializers.SerializerMethodField(
        help_text="While queued: 1 = next on its worker (interactive before batch, then arrival). Null otherwise, "
        "and in the response to a submit."
    )
    eta_seconds = serializers.SerializerMethodField(
        help_text="Estimated seconds until it finishes (queued or running), from the plan's latency profile, the "
        "queue ahead and the batch's measured pace; null otherwise and in the response to a submit."
    )
    waiting_seconds = serializers.SerializerMethodField(help_text="Time queued so far (until started).")
    generating_seconds = serializers.SerializerMethodField(help_text="Time since it started (until it finished).")
    late_by_seconds = serializers.SerializerMethodField(
        help_text="How far past its deadline it finished (or is, while unfinished); null when not late."
    )
    reuse_summary = serializers.SerializerMethodField(help_text="K* and the served K′ in plain words.")

    def _live(self, obj: GenerationRequest) -> LiveProgress:
        cache = self.context.setdefault("_live_progress", {})
        if obj.pk not in cache:
            live = self.context.get("live")
            if live is None:
                request = self.context.get("request")
                live = request is None or request.method == "GET"
            cache[obj.pk] = live_progress(obj) if live else row_progress(obj)
        return cache[obj.pk]

    @extend_schema_field(NULLABLE_FLOAT)
    def get_progress(self, obj: GenerationRequest) -> float | None:
        value = self._live(obj).progress
        return None if value is None else round(value, 4)

    @extend_schema_field(NULLABLE_INT)
    def get_step(self, obj: GenerationRequest) -> int | None:
        return self._live(obj).step

    @extend_schema_field(NULLABLE_INT)
    def get_steps_to_run(self, obj: GenerationRequest) -> int | None:
        return self._live(obj).steps_to_run

    @extend_schema_field(NULLABLE_INT)
    def get_queue_position(self, obj: GenerationRequest) -> int | None:
        return self._live(obj).queue_position

    @extend_schema_field(NULLABLE_FLOAT)
    def get_eta_seconds(self, obj: GenerationRequest) -> float | None:
        value = self._live(obj).eta_seconds
        return None if value is None else round(value, 2)

    @extend_schema_field(OpenApiTypes.FLOAT)
    def get_waiting_seconds(self, obj: GenerationRequest) -> float:
        end = obj.started_at or obj.finished_at or timezone.now()
        return round(max(0.0, (end - obj.created_at).total_seconds()), 3)

    @extend_schema_field(NULLABLE_FLOAT)
    def get_generating_seconds(self, obj: GenerationRequest) -> float | None:
        if obj.started_at is None:
            return None
        end = obj.finished_at or timezone.now()
        return round(max(0.0, (end - obj.started_at).total_seconds()), 3)

    @extend_schema_field(NULLABLE_FLOAT)
    def get_late_by_seconds(self, obj: GenerationRequest) -> float | None:
        if obj.status == Status.CANCELLED:
            return None
        late = ((obj.finished_at or timezone.now()) - obj.deadline).total_seconds()
        return round(late, 3) if late > 0 else None

    @extend_schema_field(OpenApiTypes.STR)
    def get_reuse_summary(self, obj: GenerationRequest) -> str:
        return reuse_summary(obj)
