"""The gallery (issue 12, item 5): search by prompt text, filters, favourites, delete (one or several), the
detail view's ← → links; owner-only everywhere, in the pages and the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from tests.helpers import cached_entry, make_request
from webapp.cache.models import CacheEntry
from webapp.ledger.models import GenerationRequest, Status

pytestmark = pytest.mark.django_db
API = "/api/v1/generations/"


def finished(owner, prompt: str, *, age_days: float = 0, status: str = Status.SUCCEEDED, **fields) -> GenerationRequest:
    """A finished row with image files, created `age_days` ago."""
    now = timezone.now()
    row = make_request(owner, prompt=prompt, status=status, started_at=now, finished_at=now, **fields)
    if status == Status.SUCCEEDED:
        row.image = default_storage.save(f"images/{row.id}.png", ContentFile(b"png"))
        row.thumbnail = default_storage.save(f"thumbs/{row.id}.png", ContentFile(b"png"))
        row.save(update_fields=["image", "thumbnail"])
    GenerationRequest.objects.filter(pk=row.pk).update(created_at=now - timedelta(days=age_days))
    row.refresh_from_db()
    return row


def gallery(client, **params) -> str:
    resp = client.get("/gallery/", params)
    assert resp.status_code == 200
    return resp.content.decode()


def test_search_finds_words_stems_and_parts_of_own_prompts_only(client, user, other_user, embedded_services):
    finished(user, "a red fox in the snow")
    finished(user, "two foxes asleep")
    finished(user, "a lighthouse at dusk")
    finished(other_user, "the other user's fox")
    client.force_login(user)
    html = gallery(client, q="fox")
    assert "a red fox in the snow" in html and "two foxes asleep" in html  # stemmed: foxes ~ fox
    assert "lighthouse" not in html and "other user" not in html
    assert "lighthouse" in gallery(client, q="lightho")  # part of a word
    html = gallery(client, q='"red fox"')
    assert "a red fox" in html and "two foxes" not in html  # a phrase
    assert "Nothing matches" in gallery(client, q="unicorn")


def test_filters_by_status_day_and_favourite(client, user, embedded_services):
    old = finished(user, "old picture", age_days=10)
    finished(user, "new picture")
    finished(user, "failed one", status=Status.FAILED)
    make_request(user, prompt="still queued")
    client.force_login(user)
    default = gallery(client)
    assert "old picture" in default and "failed one" not in default and "still queued" not in default
    assert "failed one" in gallery(client, status="failed") and "new picture" not in gallery(client, status="failed")
    everything = gallery(client, status="any")
    assert all(text in everything for text in ("old picture", "new picture", "failed one", "still queued"))
    since = (timezone.now() - timedelta(days=2)).date().isoformat()
    assert "old picture" not in gallery(client, since=since) and "new picture" in gallery(client, since=since)
    until = (timezone.now() - timedelta(days=5)).date().isoformat()
    assert "old picture" in gallery(client, until=until) and "new picture" not in gallery(client, until=until)
    client.post(f"/requests/{old.id}/favourite/", {"favourite": "1"})
    starred = gallery(client, favourites="1")
    assert "old picture" in starred and "new picture" not in starred
    assert client.get("/gallery/", {"status": "sideways"}).status_code == 400  # says what is allowed


def test_delete_erases_text_and_files_and_hides_the_row_from_its_owner(
    client, user, embedded_services, django_capture_on_commit_callbacks
):
    row = finished(user, "a private prompt", idempotency_key="key-1")
    files = [row.image.name, row.thumbnail.name]
    entry = cached_entry(row.prompt, levels=[5], source_request=row)
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):  # the files go after the commit
        resp = client.post("/gallery/delete/", {"ids": [str(row.id)], "next": "/gallery/"}, follow=True)
    assert resp.status_code == 200 and "Deleted 1 request." in resp.content.decode()
    row.refresh_from_db()
    assert row.deleted_at is not None and row.prompt == "" and row.idempotency_key is None and not row.image
    assert row.status == Status.SUCCEEDED  # the SLO history keeps it
    assert not any(default_storage.exists(name) for name in files)
    assert not CacheEntry.objects.filter(pk=entry.pk).exists()
    assert client.get(row.get_absolute_url()).status_code == 404
    assert "private prompt" not in gallery(client, status="any")


def test_multi_select_delete_cancels_active_ones_and_ignores_other_users_ids(
    client, user, other_user, embedded_services
):
    mine = [finished(user, f"mine {i}") for i in range(3)]
    queued = make_request(user, prompt="queued one")
    theirs = finished(other_user, "theirs")
    client.force_login(user)
    ids = [str(mine[0].id), str(mine[1].id), str(queued.id), str(theirs.id), "not-an-id"]
    client.post("/gallery/delete/", {"ids": ids})
    assert set(GenerationRequest.objects.filter(deleted_at__isnull=False).values_list("pk", flat=True)) == {
        mine[0].id,
        mine[1].id,
        queued.id,
    }
    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED
    theirs.refresh_from_db()
    assert theirs.deleted_at is None and theirs.prompt == "theirs"
    assert "mine 2" in gallery(client)


def test_favourite_is_owner_only(client, user, other_user, embedded_services):
    theirs = finished(other_user, "theirs")
    client.force_login(user)
    assert client.post(f"/requests/{theirs.id}/favourite/", {"favourite": "1"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.favourite is False


def test_detail_view_links_newer_and_older_under_the_gallery_filter(client, user, embedded_services):
    oldest = finished(user, "fox one", age_days=3)
    finished(user, "cat between", age_days=2)
    middle = finished(user, "fox two", age_days=1)
    newest = finished(user, "fox three", age_days=0)
    client.force_login(user)
    html = client.get(f"{middle.get_absolute_url()}?q=fox&status=succeeded").content.decode()
    assert f'id="newer" rel="prev" href="{newest.get_absolute_url()}?q=fox&amp;status=succeeded"' in html
    assert f'id="older" rel="next" href="{oldest.get_absolute_url()}?q=fox&amp;status=succeeded"' in html
    assert "walk.js" in html


def test_api_search_favourite_and_delete(api, user, other_user, embedded_services):
    fox = finished(user, "a red fox")
    finished(user, "a lighthouse")
    theirs = finished(other_user, "their fox")
    found = api.get(API, {"q": "fox"}).json()["results"]
    assert [r["id"] for r in found] == [str(fox.id)]
    assert api.get(API, {"since": "yesterday"}).status_code == 400
    starred = api.post(f"{API}{fox.id}/favourite/", {"favourite": True}, format="json")
    assert starred.status_code == 200 and starred.json()["favourite"] is True
    assert [r["id"] for r in api.get(API, {"favourites": "true"}).json()["results"]] == [str(fox.id)]
    assert api.delete(f"{API}{theirs.id}/").status_code == 404  # not theirs to delete
    assert api.delete(f"{API}{fox.id}/").status_code == 204
    assert api.get(f"{API}{fox.id}/").status_code == 404
    assert api.get(f"{API}{fox.id}/image/").status_code == 404
    assert api.delete(f"{API}{fox.id}/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.deleted_at is None
