"""`POST /api/v1/prompt-tokens/` {"text": …} → {"tokens": n, "max": 77}: the form's live CLIP-token counter.

The same count the submit validation uses (the configured model's own tokenizer), so the counter and the
400 never disagree. POST, not GET: a 2,000-character prompt does not fit a request line.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.serving.prompt_tokens import count_tokens

from .throttling import ReadThrottle


class PromptTextSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=2000, allow_blank=True, trim_whitespace=False)


class PromptTokenCountView(APIView):
    throttle_classes = [ReadThrottle]

    @extend_schema(
        request=PromptTextSerializer,
        responses={
            200: inline_serializer(
                "PromptTokenCount", {"tokens": serializers.IntegerField(), "max": serializers.IntegerField()}
            )
        },
        description="CLIP tokens of a text (start and end included), as submit counts them; at most `max`.",
    )
    def post(self, request):
        data = PromptTextSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"tokens": count_tokens(data.validated_data["text"]), "max": settings.T2I_MAX_PROMPT_TOKENS})
