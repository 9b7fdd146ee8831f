"""Issue 10 items 1–3 on the live side: no user reads another owner's prompt anywhere (API, pages,
dashboard, metrics, admin for non-superusers, error messages); the cache scope (shared / tenant / off)
filters the pgvector lookup; cache entries carry provenance, can be purged by it and go with their
creator's account; failed generations add nothing.

Plain `django_db` (rolled back) where only this process reads the rows; `transaction=True` where the
store writes latent files (it refuses to inside a transaction) or real worker processes read the rows.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests.helpers import UNSERVED_SLOT, cached_entry, make_request, serving_config, wait_for_status
from webapp.cache import store as cache_store
from webapp.cache.keys import model_key_for
from webapp.cache.models import CacheEntry, CacheLevel
from webapp.cache.tenants import PUBLIC_TENANT, UNKNOWN_TENANT, tenant_for
from webapp.ledger.admin_privacy import REDACTED
from webapp.ledger.models import BATCH_USERS_GROUP, NEUTRAL_NEIGHBOUR, GenerationRequest, ServingConfig, Status
from webapp.serving import controller, live_policy

ROOT = Path(__file__).resolve().parents[1]
URL = "/api/v1/generations/"

# A's texts, and near-duplicates that B and A submit later. MiniLM cosine to A_PROMPT: B_NEAR 0.914,
# B_NEAR_2 0.876, A_NEAR 0.958. No text of B contains one of A's.
A_PROMPT = "a watercolor painting of a lighthouse on a cliff at sunset"
A_NEGATIVE = "blurry cobalt gargoyles"
B_NEAR = "watercolour painting of a lighthouse standing on a cliff at sunset, highly detailed"
B_NEAR_2 = B_NEAR + ", golden hour"
A_NEAR = "watercolor painting of a lighthouse on a cliff at sunset, soft light"


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)  # independent of the token scheme
    return client


def default_key() -> str:
    config = ServingConfig.current()
    return model_key_for(config.default_steps, config.default_size, config.default_size)


def cached(prompt: str, *, creator=None, tenant: str = UNKNOWN_TENANT) -> CacheEntry:
    """An index row with the default model key, in a tenant."""
    return cached_entry(prompt, model_key=default_key(), tenant=tenant, creator=creator)


@pytest.fixture
def nirvana(embedded_services, tiny_model_path):
    """NIRVANA serves each request at its own K*, so a found neighbour is always recorded on the row."""
    live_policy.live_policy.reset()
    controller.reset_controller_state()
    serving_config(policy="nirvana")
    yield
    live_policy.live_policy.reset()


@pytest.fixture
def acme(db):
    return Group.objects.create(name="acme")


def submit(client, prompt: str) -> GenerationRequest:
    resp = client.post(URL, {"prompt": prompt, "seed": 3}, format="json")
    assert resp.status_code == 202, resp.content
    return GenerationRequest.objects.get(pk=resp.json()["id"])


# ----------------------------------------------------------------------------------------------------------
# The tenant rule and the filtered lookup
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_tenant_is_the_lowest_group_other_than_batch_users_or_the_user_alone(user, acme):
    batch = Group.objects.get_or_create(name=BATCH_USERS_GROUP)[0]
    assert tenant_for(user) == f"u:{user.pk}"
    user.groups.add(batch)
    assert tenant_for(user) == f"u:{user.pk}"  # a priority class is not an organisation
    later = Group.objects.create(name="zeta")
    user.groups.add(later, acme)
    assert tenant_for(user) == f"g:{min(acme.pk, later.pk)}"
    assert tenant_for(None) == PUBLIC_TENANT


@pytest.mark.django_db
def test_nearest_filters_by_tenant_in_the_index_scan_and_the_exact_fallback(embedded_services, tiny_model_path):
    mine = cached(A_PROMPT, tenant="u:1")
    theirs = cached("a lighthouse on a cliff, watercolor", tenant="u:2")
    warm = cached("an oil painting of a harbour at night", tenant=PUBLIC_TENANT)
    cached("a pencil sketch of a lighthouse at sunset", tenant=UNKNOWN_TENANT)
    query = cache_store.embed([B_NEAR])[0]
    key = default_key()

    assert cache_store.nearest(query, key)[0].pk == mine.pk  # shared: the closest of all
    assert cache_store.nearest(query, key, ["u:2", PUBLIC_TENANT])[0].pk == theirs.pk
    assert cache_store.nearest(query, key, ["u:3", PUBLIC_TENANT])[0].pk == warm.pk  # unknown: shared only
    assert cache_store.nearest(query, key, ["u:3"]) is None
    found, _ = cache_store.nearest(query, key, ["u:1"])
    assert (found.pk, found.tenant) == (mine.pk, "u:1")

    from django.db import connection

    lit = cache_store._vector_literal(query)
    with connection.cursor() as cur:  # the exact scan that answers when the HNSW scan is starved
        cur.execute(cache_store._SCOPED_QUERIES["embedding"][1], [lit, key, ["u:2", PUBLIC_TENANT], lit])
        assert cur.fetchone()[0] == theirs.pk


# ----------------------------------------------------------------------------------------------------------
# Item 1: no other owner's text, anywhere B looks
# ----------------------------------------------------------------------------------------------------------


def _everything_b_can_read(b, b_row: GenerationRequest, create_body: bytes) -> dict[str, bytes]:
    api = api_as(b)
    web = Client()
    web.force_login(b)
    pages = {
        "API create": create_body,
        "API detail": api.get(f"{URL}{b_row.id}/").content,
        "API list": api.get(URL).content,
        "API list succeeded": api.get(URL + "?status=succeeded").content,
        "request page": web.get(b_row.get_absolute_url()).content,
        "home": web.get("/").content,
        "gallery": web.get("/gallery/").content,
        "dashboard": web.get("/dashboard/").content,
        "dashboard data": web.get("/dashboard/data.json").content,
        "metrics": web.get("/metrics").content,
    }
    return pages


@pytest.mark.django_db
def test_b_never_receives_a_prompt_in_any_body_or_page_under_the_shared_scope(
    user, other_user, acme, nirvana, django_user_model
):
    a, b = user, other_user
    a.groups.add(acme)
    b.is_staff = True  # so the dashboard and /metrics are B's to read too
    b.save()
    serving_config(cache_scope="shared")
    make_request(a, prompt=A_PROMPT, negative_prompt=A_NEGATIVE, status=Status.SUCCEEDED)
    entry = cached(A_PROMPT, creator=a, tenant=tenant_for(a))

    resp = api_as(b).post(URL, {"prompt": B_NEAR, "seed": 3}, format="json")
    assert resp.status_code == 202
    b_row = GenerationRequest.objects.get(pk=resp.json()["id"])
    # Shared scope: B's prompt did find A's entry (similarity, K* and the entry id are B's to see) …
    assert b_row.similarity > 0.85 and b_row.k_star > 0 and b_row.cache_neighbor_id == entry.pk
    # … but A's text was never written to B's row.
    assert b_row.cache_neighbor_prompt == "" and b_row.cache_neighbor_same_owner is False
    GenerationRequest.objects.filter(pk=b_row.pk).update(status=Status.SUCCEEDED, finished_at=timezone.now())

    pages = _everything_b_can_read(b, b_row, resp.content)
    for name, body in pages.items():
        text = body.decode(errors="replace")
        assert A_PROMPT not in text and A_NEGATIVE not in text, f"A's text in B's {name}"
    assert resp.json()["cache_neighbor_prompt"] == NEUTRAL_NEIGHBOUR
    assert resp.json()["cache_neighbor_is_own"] is False
    assert NEUTRAL_NEIGHBOUR in pages["request page"].decode()
    assert B_NEAR in pages["request page"].decode()  # B's own text is B's

    # A, resubmitting something close, is shown A's own earlier prompt.
    a_row = submit(api_as(a), A_NEAR)
    body = api_as(a).get(f"{URL}{a_row.id}/").json()
    assert a_row.cache_neighbor_same_owner and body["cache_neighbor_prompt"] == A_PROMPT
    assert body["cache_neighbor_is_own"] is True


@pytest.mark.django_db
def test_rows_from_before_the_rule_are_masked_and_the_data_migration_blanks_foreign_text(user, other_user):
    a, b = user, other_user
    make_request(a, prompt=A_PROMPT, status=Status.SUCCEEDED)
    own = make_request(a, prompt=A_NEAR, similarity=0.95, cache_neighbor_prompt=A_PROMPT)
    foreign = make_request(b, prompt=B_NEAR, similarity=0.95, cache_neighbor_prompt=A_PROMPT)
    assert foreign.neighbour_text == NEUTRAL_NEIGHBOUR  # render-time mask, before any migration
    assert A_PROMPT not in api_as(b).get(f"{URL}{foreign.id}/").content.decode()

    migration = importlib.import_module("webapp.ledger.migrations.0009_cache_scope_and_neighbour_privacy")
    migration.mask_foreign_neighbour_prompts(apps, None)
    own.refresh_from_db()
    foreign.refresh_from_db()
    assert own.cache_neighbor_same_owner and own.neighbour_text == A_PROMPT  # A's own text: kept
    assert foreign.cache_neighbor_prompt == "" and not foreign.cache_neighbor_same_owner


@pytest.mark.django_db
def test_admin_shows_prompt_text_to_superusers_only(
    user, django_user_model, client, embedded_services, tiny_model_path
):
    row = make_request(user, prompt=A_PROMPT, negative_prompt=A_NEGATIVE, error=f"engine said: {A_PROMPT}")
    entry = cached(A_PROMPT, creator=user, tenant=tenant_for(user))
    staff = django_user_model.objects.create_user("watcher", password="pw-watcher-123", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_generationrequest", "view_cacheentry"]))
    urls = [
        "/admin/ledger/generationrequest/",
        f"/admin/ledger/generationrequest/{row.pk}/change/",
        "/admin/cache/cacheentry/",
        f"/admin/cache/cacheentry/{entry.pk}/change/",
        "/admin/ledger/generationrequest/?q=lighthouse",
        "/admin/cache/cacheentry/?q=lighthouse",
    ]
    client.force_login(staff)
    for url in urls:
        resp = client.get(url)
        assert resp.status_code == 200, url
        text = resp.content.decode()
        assert A_PROMPT not in text and A_NEGATIVE not in text, url
    assert REDACTED in client.get(urls[1]).content.decode()
    # The prompt is not searchable either: a search would tell whether someone's prompt holds a word.
    assert f"{row.pk}/change/" not in client.get(urls[4]).content.decode()
    assert f"cacheentry/{entry.pk}/change/" not in client.get(urls[5]).content.decode()

    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    client.force_login(root)
    assert A_PROMPT in client.get(urls[1]).content.decode()
    assert A_PROMPT in client.get(urls[3]).content.decode()


# ----------------------------------------------------------------------------------------------------------
# Item 2: the scope at submit
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_tenant_scope_b_does_not_find_a_entries_a_and_a_teammate_do(user, other_user, acme, nirvana, django_user_model):
    a, b = user, other_user
    teammate = django_user_model.objects.create_user("carol", password="pw-carol-123")
    a.groups.add(acme)
    teammate.groups.add(acme)
    serving_config(cache_scope="tenant")
    entry = cached(A_PROMPT, creator=a, tenant=tenant_for(a))
    cached("a pencil sketch of a lighthouse at sunset", tenant=UNKNOWN_TENANT)  # shared scope only

    b_row = submit(api_as(b), B_NEAR)
    assert b_row.similarity is None and b_row.k_star == 0 and b_row.cache_neighbor_id is None

    a_row = submit(api_as(a), A_NEAR)
    assert a_row.cache_neighbor_id == entry.pk and a_row.k_star > 0 and a_row.cache_neighbor_same_owner

    mate_row = submit(api_as(teammate), B_NEAR)  # same tenant: may reuse it, still may not read it
    assert mate_row.cache_neighbor_id == entry.pk and not mate_row.cache_neighbor_same_owner
    assert api_as(teammate).get(f"{URL}{mate_row.id}/").json()["cache_neighbor_prompt"] == NEUTRAL_NEIGHBOUR

    warm = cached("a watercolour lighthouse on a rocky cliff at dusk, highly detailed", tenant=PUBLIC_TENANT)
    assert submit(api_as(b), B_NEAR).cache_neighbor_id == warm.pk  # operator-warmed: every tenant's


@pytest.mark.django_db
def test_off_scope_does_no_lookup(user, nirvana, monkeypatch):
    call_command("configure_serving", cache_scope="off")
    assert ServingConfig.current().cache_scope == "off"
    cached(A_PROMPT, creator=user, tenant=tenant_for(user))

    def no_lookup(*args, **kwargs):
        raise AssertionError("the off scope must not look the cache up")

    monkeypatch.setattr(cache_store, "nearest", no_lookup)
    row = submit(api_as(user), A_NEAR)
    assert row.similarity is None and row.k_served == 0 and row.cache_neighbor_id is None


def test_a_bad_cache_scope_stops_the_process():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", "T2I_CACHE_SCOPE": "tenants"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "T2I_CACHE_SCOPE must be one of 'shared', 'tenant', 'off', not 'tenants'" in result.stderr


# ----------------------------------------------------------------------------------------------------------
# Item 3: provenance, what is never inserted, purge, account deletion
# ----------------------------------------------------------------------------------------------------------


class _Result:
    def __init__(self, latents):
        self.latents = latents


def _latents():
    import torch

    return {k: torch.full((1, 4, 8, 8), float(k)) for k in (5, 10, 25)}


@pytest.mark.django_db(transaction=True)
def test_worker_inserts_with_provenance_and_never_for_rows_no_longer_running(user, other_user, acme, tiny_model_path):
    from workers.tasks import _grow_cache

    user.groups.add(acme)
    running = make_request(user, prompt=A_PROMPT, status=Status.RUNNING)
    expired = make_request(other_user, prompt="a failed or expired one", status=Status.EXPIRED)
    _grow_cache([running, expired], [_Result(_latents()), _Result(_latents())], ServingConfig.current())

    entry = CacheEntry.objects.get()
    assert (entry.prompt, entry.creator_id, entry.tenant) == (A_PROMPT, user.pk, f"g:{acme.pk}")
    assert entry.source_request_id == running.pk and entry.levels == [5, 10, 25]

    serving_config(cache_scope="off")
    another = make_request(user, prompt="another prompt entirely", status=Status.RUNNING)
    _grow_cache([another], [_Result(_latents())], ServingConfig.current())
    assert CacheEntry.objects.count() == 1  # off: no insert


@pytest.mark.django_db(transaction=True)
def test_a_failed_generation_adds_no_entry_and_its_error_names_no_other_owners_prompt(
    user, other_user, monkeypatch, tiny_model_path
):
    from workers import runtime, tasks

    class FailingEngine:
        def generate(self, items, on_step=None):
            raise RuntimeError(f"cannot encode {items[0].prompt!r} / {items[1].prompt!r}")

    monkeypatch.setenv("T2I_WORKER_INDEX", str(UNSERVED_SLOT))
    monkeypatch.setattr(runtime, "engine", lambda: FailingEngine())
    a_row = make_request(user, prompt=A_PROMPT, batch_limit=2, k_served=0)
    b_row = make_request(other_user, prompt="b's private prompt text", batch_limit=2, k_served=0)
    assert tasks.generate(str(a_row.id)) == "failed"

    a_row.refresh_from_db()
    b_row.refresh_from_db()
    assert a_row.status == b_row.status == Status.FAILED
    assert CacheEntry.objects.count() == 0 and CacheLevel.objects.count() == 0
    assert A_PROMPT not in b_row.error and "b's private prompt text" not in a_row.error
    assert A_PROMPT in a_row.error and tasks.FOREIGN_TEXT in a_row.error  # its own text stays


def _store(prompts_and_origins):
    """Insert entries with latent files; returns {prompt: entry id}."""
    key = default_key()
    prompts = [p for p, _ in prompts_and_origins]
    ids = cache_store.insert_many(
        key, prompts, [_latents() for _ in prompts], provenance=[o for _, o in prompts_and_origins]
    )
    return dict(zip(prompts, ids))


def _files_of(entry_ids) -> list[Path]:
    names = CacheLevel.objects.filter(entry_id__in=entry_ids).values_list("file", flat=True)
    return [cache_store.cache_dir() / n for n in names]


@pytest.mark.django_db(transaction=True)
def test_purge_cache_command_removes_rows_and_files_by_owner_tenant_age_and_text(user, other_user, tiny_model_path):
    P = cache_store.Provenance
    ids = _store(
        [
            ("alice one", P(tenant_for(user), user.pk)),
            ("alice two secret", P(tenant_for(user), user.pk)),
            ("bob one", P(tenant_for(other_user), other_user.pk)),
            ("bob secret two", P(tenant_for(other_user), other_user.pk)),
            ("warm one", P(PUBLIC_TENANT)),
        ]
    )
    alice_files = _files_of([ids["alice one"], ids["alice two secret"]])
    assert alice_files and all(f.exists() for f in alice_files)

    with pytest.raises(CommandError, match="at least one"):
        call_command("purge_cache")
    call_command("purge_cache", owner="alice", dry_run=True)
    assert CacheEntry.objects.count() == 5

    call_command("purge_cache", owner="alice")
    assert set(CacheEntry.objects.values_list("prompt", flat=True)) == {"bob one", "bob secret two", "warm one"}
    assert not any(f.exists() for f in alice_files)

    call_command("purge_cache", tenant=tenant_for(other_user), prompt_contains="SECRET")
    assert set(CacheEntry.objects.values_list("prompt", flat=True)) == {"bob one", "warm one"}

    warm_files = _files_of([ids["warm one"]])
    CacheEntry.objects.filter(prompt="warm one").update(created_at=timezone.now() - timedelta(days=30))
    call_command("purge_cache", before=(timezone.now() - timedelta(days=1)).date().isoformat())
    assert list(CacheEntry.objects.values_list("prompt", flat=True)) == ["bob one"]
    assert not any(f.exists() for f in warm_files)
    assert all(f.exists() for f in _files_of([ids["bob one"]]))


@pytest.mark.django_db(transaction=True)
def test_deleting_a_user_removes_their_entries_and_latent_files(user, other_user, tiny_model_path):
    P = cache_store.Provenance
    ids = _store(
        [("alice's entry", P(tenant_for(user), user.pk)), ("bob's entry", P(tenant_for(other_user), other_user.pk))]
    )
    alice_files = _files_of([ids["alice's entry"]])
    user.delete()
    assert list(CacheEntry.objects.values_list("prompt", flat=True)) == ["bob's entry"]
    assert alice_files and not any(f.exists() for f in alice_files)
    assert all(f.exists() for f in _files_of([ids["bob's entry"]]))


# ----------------------------------------------------------------------------------------------------------
# The whole path with real workers
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_live_tenant_scope_b_does_not_resume_from_a_and_shared_scope_does_without_leaking(
    user, other_user, gpu_workers, nirvana
):
    a, b = user, other_user

    def served(client, prompt: str) -> GenerationRequest:
        row = wait_for_status(submit(client, prompt).id, {Status.SUCCEEDED, Status.FAILED}, timeout=120)
        assert row.status == Status.SUCCEEDED, row.error
        return row

    serving_config(cache_scope="tenant")
    first = served(api_as(a), A_PROMPT)
    entry = CacheEntry.objects.get(prompt=A_PROMPT)
    assert (entry.creator_id, entry.tenant, entry.source_request_id) == (a.pk, tenant_for(a), first.pk)

    b_row = served(api_as(b), B_NEAR)
    assert b_row.k_served == 0 and b_row.cache_neighbor_id is None and b_row.similarity is None

    a_row = served(api_as(a), A_NEAR)
    assert a_row.k_served > 0 and a_row.cache_neighbor_id == entry.pk and a_row.cache_neighbor_same_owner

    # Shared: with B's own entries gone, B's next near-duplicate resumes from one of A's, and reads no text.
    cache_store.purge(list(CacheEntry.objects.filter(creator=b).values_list("pk", flat=True)))
    serving_config(cache_scope="shared")
    b_again = served(api_as(b), B_NEAR_2)
    neighbour = CacheEntry.objects.get(pk=b_again.cache_neighbor_id)
    assert b_again.k_served > 0 and neighbour.creator_id == a.pk and not b_again.cache_neighbor_same_owner
    for body in (api_as(b).get(f"{URL}{b_again.id}/").content, api_as(b).get(URL).content):
        text = body.decode()
        assert A_PROMPT not in text and A_NEAR not in text and NEUTRAL_NEIGHBOUR in text
