"""The owner's requests as a gallery: search, filters, favourites, delete. Used by the API and the web pages.

Owner-only by construction: every function takes the user and reaches rows only through `owned_rows(user)`.

**Delete** (the issue left the choice): the row is *marked* deleted, not removed. It disappears for its owner
everywhere (lists, gallery, pages, API: a 404 like any id that is not theirs); its prompt, negative prompt,
embedding, idempotency key and image files are erased, and cache entries made from it are purged. What stays is
what the operator's SLO history needs (status, times, K levels, worker), so the dashboard's numbers do not change
when a user tidies their gallery. An active request is cancelled first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from webapp.cache import store as cache_store
from webapp.cache.models import CacheEntry
from webapp.ledger import transitions
from webapp.ledger.models import ACTIVE_STATES, GenerationRequest, Status

SEARCH_CONFIG = "english"  # stems words: "foxes" finds "fox"


class InvalidFilter(ValueError):
    """A filter value that means nothing (an unknown status, a malformed date); the message says what is allowed."""


def owned_rows(user) -> QuerySet[GenerationRequest]:
    """The user's requests they have not deleted: the only way owner views reach rows."""
    return GenerationRequest.objects.filter(owner=user, deleted_at__isnull=True)


@dataclass(frozen=True)
class GalleryFilter:
    text: str = ""
    status: str = ""  # "" = any
    since: dt.date | None = None  # created on or after this day (UTC)
    until: dt.date | None = None  # created on or before this day (UTC)
    favourites: bool = False

    def apply(self, rows: QuerySet[GenerationRequest]) -> QuerySet[GenerationRequest]:
        if self.text:
            rows = matching_text(rows, self.text)
        if self.status:
            rows = rows.filter(status=self.status)
        if self.since:
            rows = rows.filter(created_at__gte=_day_start(self.since))
        if self.until:
            rows = rows.filter(created_at__lt=_day_start(self.until + dt.timedelta(days=1)))
        if self.favourites:
            rows = rows.filter(favourite=True)
        return rows

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (links keep it: pages, the detail view's ← →)."""
        pairs = {
            "q": self.text,
            "status": self.status,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "favourites": "1" if self.favourites else "",
        }
        return {k: v for k, v in pairs.items() if v}


def parse_filter(params: Mapping[str, str], default_status: str = "") -> GalleryFilter:
    """`q`, `status` (`any` for all), `since`, `until` (YYYY-MM-DD), `favourites` (1/true). InvalidFilter if bad."""
    status = params.get("status", default_status) or default_status
    if status == "any":
        status = ""
    if status and status not in Status.values:
        raise InvalidFilter(f"Unknown status {status!r}; use one of {Status.values} or 'any'.")
    return GalleryFilter(
        text=params.get("q", "").strip()[:200],
        status=status,
        since=_date(params, "since"),
        until=_date(params, "until"),
        favourites=params.get("favourites", "").lower() in {"1", "true", "yes", "on"},
    )


def matching_text(rows: QuerySet[GenerationRequest], text: str) -> QuerySet[GenerationRequest]:
    """Rows whose prompt matches `text`: PostgreSQL full-text search (stemmed words, "quoted phrases", -not),
    or the text as a plain substring (a word typed halfway)."""
    query = SearchQuery(text, search_type="websearch", config=SEARCH_CONFIG)
    return rows.annotate(_words=SearchVector("prompt", config=SEARCH_CONFIG)).filter(
        Q(_words=query) | Q(prompt__icontains=text)
    )


def neighbours(
    user, row: GenerationRequest, wanted: GalleryFilter
) -> tuple[GenerationRequest | None, GenerationRequest | None]:
    """(newer, older): the rows either side of `row` in the gallery's order under the same filter (← and →)."""
    rows = wanted.apply(owned_rows(user))
    newer = rows.filter(created_at__gt=row.created_at).order_by("created_at").first()
    older = rows.filter(created_at__lt=row.created_at).order_by("-created_at").first()
    return newer, older


def set_favourite(user, request_id: uuid.UUID | str, favourite: bool) -> bool:
    """Star or unstar one of the user's requests; False if they have no such request."""
    return bool(owned_rows(user).filter(pk=request_id).update(favourite=favourite))


def delete_requests(user, request_ids: Iterable[uuid.UUID | str]) -> int:
    """Delete the user's requests among `request_ids` (others' ids are ignored); returns how many were deleted."""
    ids = list(owned_rows(user).filter(pk__in=_uuids(request_ids)).values_list("pk", flat=True))
    for row_id in owned_rows(user).filter(pk__in=ids, status__in=ACTIVE_STATES).values_list("pk", flat=True):
        transitions.cancel(row_id)  # a running one's worker then writes no image and no cache entry for it
    with transaction.atomic():
        rows = owned_rows(user).filter(pk__in=ids)
        files = [name for pair in rows.values_list("image", "thumbnail") for name in pair if name]
        deleted = rows.update(
            deleted_at=timezone.now(),
            favourite=False,
            prompt="",
            negative_prompt="",
            cache_neighbor_prompt="",
            embedding=None,
            idempotency_key=None,
            image="",
            thumbnail="",
        )
        transaction.on_commit(lambda: _remove_files(files))
    made_from_them = list(CacheEntry.objects.filter(source_request_id__in=ids).values_list("pk", flat=True))
    if made_from_them:
        cache_store.purge(made_from_them)  # the cache entry holds the prompt and its latents
    return deleted


def _remove_files(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


def _uuids(values: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
    """The values that are ids at all (a form may send anything)."""
    found = []
    for value in values:
        try:
            found.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return found


def _date(params: Mapping[str, str], name: str) -> dt.date | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidFilter(f"{name} must be a date as YYYY-MM-DD, not {raw!r}.") from None


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
