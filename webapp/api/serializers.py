"""DRF serializers of the generation API. Validation messages say what is wrong and what is allowed."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from rest_framework import relations, serializers
from rest_framework.fields import SkipField

from webapp.ledger.models import SEED_MAX, GenerationRequest, Priority
from webapp.serving.live_config import serving_config
from webapp.serving.prompt_tokens import count_tokens

from .progress_fields import LiveProgressFields

# The operator edits what is allowed (admin: Serving configuration), so the schema cannot list it.
_CONFIGURED = "Omitted: the configured default. The allowed {} are the operator's; a 400 lists them."


class GenerationCreateSerializer(serializers.Serializer):
    prompt = serializers.CharField(max_length=2000, trim_whitespace=True, allow_blank=True)
    negative_prompt = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    seed = serializers.IntegerField(required=False, allow_null=True, help_text=f"0 to {SEED_MAX}; random when omitted.")
    width = serializers.IntegerField(required=False, allow_null=True, help_text=_CONFIGURED.format("sizes"))
    height = serializers.IntegerField(required=False, allow_null=True, help_text=_CONFIGURED.format("sizes"))
    steps = serializers.IntegerField(required=False, allow_null=True, help_text=_CONFIGURED.format("step range"))
    guidance_scale = serializers.FloatField(required=False, default=7.5, min_value=0.0, max_value=30.0)
    idempotency_key = serializers.CharField(
        required=False, allow_null=True, max_length=128, help_text="Or the Idempotency-Key header."
    )
    priority = serializers.ChoiceField(
        choices=Priority.choices,
        required=False,
        allow_null=True,
        help_text="`interactive` (the interactive SLO; claimed first) or `batch` (the batch SLO). "
        "Omitted: `batch` for members of the group batch-users, else `interactive`.",
        error_messages={"invalid_choice": f'Unknown priority "{{input}}"; use one of {", ".join(Priority.values)}.'},
    )

    def validate_prompt(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The prompt is empty; describe the image you want.")
        tokens = count_tokens(value)
        if tokens > settings.T2I_MAX_PROMPT_TOKENS:
            raise serializers.ValidationError(
                f"The prompt is {tokens} CLIP tokens long; the text encoder accepts at most "
                f"{settings.T2I_MAX_PROMPT_TOKENS} (including start and end). Shorten it."
            )
        return value

    def validate_negative_prompt(self, value: str) -> str:
        if value and count_tokens(value) > settings.T2I_MAX_PROMPT_TOKENS:
            raise serializers.ValidationError(
                f"The negative prompt is longer than {settings.T2I_MAX_PROMPT_TOKENS} CLIP tokens."
            )
        return value

    def validate_seed(self, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= SEED_MAX:
            raise serializers.ValidationError(f"Seed must be between 0 and {SEED_MAX}.")
        return value

    def validate(self, attrs: dict) -> dict:
        config = serving_config()  # the process's copy: submit reads the same one, no second query
        sizes = config.allowed_size_list
        errors = {}
        for dim in ("width", "height"):
            value = attrs.get(dim)
            if value is not None and value not in sizes:
                errors[dim] = [f"Unsupported {dim} {value}; allowed sizes are {sizes}."]
        steps = attrs.get("steps")
        if steps is not None and not config.min_steps <= steps <= config.max_steps:
            errors["steps"] = [f"Unsupported steps {steps}; use {config.min_steps} to {config.max_steps}."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class FieldsBuiltOnce:
    """A read serializer whose ~40 fields DRF would rebuild for every instance (ModelSerializer.get_fields
    introspects the model each time: ~1.3 ms of CPU a response, 4/5 of the serializer's; docs/submit_path.md).
    They are built once per class and reused: a plain field's get_attribute/to_representation depends only on
    how it was declared, never on the instance or the request, so one set serves every thread; a method field
    calls the method of *this* serializer (its context). The answer is exactly DRF's (Serializer.
    to_representation: same order, same None handling); `fields` itself (validation, the schema) is untouched."""

    _readers: list | None = None  # per subclass: [(name, field, method name or None)]

    @classmethod
    def _built_fields(cls) -> list:
        readers = cls.__dict__.get("_readers")
        if readers is None:
            readers = []
            for field in cls(context={})._readable_fields:
                if isinstance(field, (serializers.BaseSerializer, relations.RelatedField, serializers.FileField)):
                    raise TypeError(f"{cls.__name__}.{field.field_name}: its representation depends on context")
                method = field.method_name if isinstance(field, serializers.SerializerMethodField) else None
                readers.append((field.field_name, field, method))
            cls._readers = readers
        return readers

    def to_representation(self, instance) -> dict:
        ret = {}
        for name, field, method in self._built_fields():
            if method is not None:
                ret[name] = getattr(self, method)(instance)
                continue
            try:
                attribute = field.get_attribute(instance)
            except SkipField:
                continue
            ret[name] = None if attribute is None else field.to_representation(attribute)
        return ret


class GenerationSerializer(FieldsBuiltOnce, LiveProgressFields, serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    queue_wait_seconds = serializers.FloatField(read_only=True, allow_null=True)
    latency_seconds = serializers.FloatField(read_only=True, allow_null=True)
    on_time = serializers.BooleanField(read_only=True, allow_null=True)
    cache_neighbor_prompt = serializers.CharField(
        source="neighbour_text",
        read_only=True,
        help_text="The cache neighbour's prompt if you made that entry yourself; otherwise "
        '"a similar earlier prompt" (never another user\'s text); empty when there was none.',
    )
    cache_neighbor_is_own = serializers.BooleanField(
        source="cache_neighbor_same_owner", read_only=True, help_text="You made the cache neighbour yourself."
    )

    class Meta:
        model = GenerationRequest
        fields = [
            "id",
            "url",
            "status",
            "priority",
            "prompt",
            "negative_prompt",
            "seed",
            "width",
            "height",
            "steps",
            "guidance_scale",
            "idempotency_key",
            "created_at",
            "published_at",
            "started_at",
            "finished_at",
            "deadline",
            "queue_wait_seconds",
            "latency_seconds",
            "on_time",
            "attempts",
            "error",
            "image_url",
            "thumbnail_url",
            "model_label",
            "k_star",
            "k_served",
            "worker",
            "plan_version",
            "redirected",
            "similarity",
            "cache_neighbor_id",
            "cache_neighbor_prompt",
            "cache_neighbor_is_own",
            "batch_size",
            "service_seconds",
            "quality",
            "measured_adherence",  # demo model only (issue 15); rows are the owner's own (owned_rows)
            "favourite",
            *LiveProgressFields.FIELDS,
        ]
        read_only_fields = fields

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_url(self, obj: GenerationRequest) -> str:
        return self._absolute(reverse("api-generation-detail", args=[obj.id]))

    def get_image_url(self, obj: GenerationRequest) -> str | None:
        if obj.status != "succeeded" or not obj.image:
            return None
        return self._absolute(reverse("api-generation-image", args=[obj.id]))

    def get_thumbnail_url(self, obj: GenerationRequest) -> str | None:
        if obj.status != "succeeded" or not obj.thumbnail:
            return None
        return self._absolute(reverse("api-generation-image", args=[obj.id]) + "?thumbnail=1")
