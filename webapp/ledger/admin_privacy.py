"""Prompt text in the admin is for superusers only (issue 10 item 1).

Staff who are not superusers (e.g. given view permission on requests or cache entries to watch the
service) see every other column, but each field that holds a user's prompt shows ``REDACTED``, list
columns of prompt text are dropped and the prompt is not searchable (a search would be an oracle for
the text). Model ``__str__`` methods carry no prompt either, because breadcrumbs, deletion summaries
and the admin log print them.
"""

from __future__ import annotations

from django.contrib import admin

REDACTED = "[hidden: prompt text is shown to superusers only]"


def may_read_prompts(user) -> bool:
    return bool(user.is_active and user.is_superuser)


def _redact(text: str) -> str:
    return REDACTED if text else ""


class PromptPrivacyAdmin(admin.ModelAdmin):
    """Mixin for a ModelAdmin of rows holding prompts: set ``prompt_fields`` (model fields with user text,
    each with a ``<name>_redacted`` display below) and ``prompt_columns`` (list_display entries of text)."""

    prompt_fields: tuple[str, ...] = ("prompt",)
    prompt_columns: tuple[str, ...] = ()

    def _swap(self, request, names) -> list[str]:
        if may_read_prompts(request.user):
            return list(names)
        return [f"{name}_redacted" if name in self.prompt_fields else name for name in names]

    def get_fields(self, request, obj=None):
        return self._swap(request, super().get_fields(request, obj))

    def get_readonly_fields(self, request, obj=None):
        return self._swap(request, super().get_readonly_fields(request, obj))

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or ())
        if not may_read_prompts(request.user):
            exclude += [name for name in self.prompt_fields if name not in exclude]
        return exclude

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        if may_read_prompts(request.user):
            return columns
        return [c for c in columns if c not in self.prompt_columns]

    def get_search_fields(self, request):
        fields = super().get_search_fields(request)
        if may_read_prompts(request.user):
            return fields
        return tuple(f for f in fields if f.lstrip("^=@").split("__")[0] not in self.prompt_fields)

    @admin.display(description="prompt")
    def prompt_redacted(self, obj) -> str:
        return _redact(obj.prompt)

    @admin.display(description="negative prompt")
    def negative_prompt_redacted(self, obj) -> str:
        return _redact(obj.negative_prompt)

    @admin.display(description="cache neighbour prompt")
    def cache_neighbor_prompt_redacted(self, obj) -> str:
        return _redact(obj.cache_neighbor_prompt)
