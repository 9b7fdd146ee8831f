"""Approximate cache store on the real PostgreSQL + pgvector: retrieval vs numpy with model-key filtering,
LCBFU order and byte budget, files kept consistent with rows, admin purge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from django.db import DataError, connection, transaction

from tests.helpers import cache_config, serving_config
from webapp.cache import store as cache_store
from webapp.cache.keys import model_key_for
from webapp.cache.latent_storage import LatentLRU, latent_store, shared_lru
from webapp.cache.models import CacheConfig, CacheEntry, CacheLevel
from webapp.ledger.models import ServingConfig
from webapp.serving.live_config import scheduler_config

# The store refuses to write inside transaction.atomic() (its files follow its own commit) and removes
# evicted files on commit: tests that insert need real commits. The two that do not say so.
pytestmark = pytest.mark.django_db(transaction=True)

LEVELS = (5, 10, 15, 20, 25)


def latent(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def files_on_disk() -> set[str]:
    root = cache_store.cache_dir()
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def assert_consistent() -> None:
    """Every row's files exist, no file is unnamed, entry summaries equal their level rows."""
    rows = list(CacheLevel.objects.values_list("entry_id", "level", "nbytes", "file"))
    named = {r[3] for r in rows}
    on_disk = files_on_disk()
    assert named <= on_disk, f"rows name missing files: {sorted(named - on_disk)[:5]}"
    assert on_disk <= named, f"orphan files: {sorted(on_disk - named)[:5]}"
    root = cache_store.cache_dir()
    for _, _, nbytes, name in rows:
        assert (root / name).stat().st_size == nbytes
    by_entry: dict[int, list[tuple[int, int]]] = {}
    for entry_id, level, nbytes, _ in rows:
        by_entry.setdefault(entry_id, []).append((level, nbytes))
    for entry in CacheEntry.objects.defer("embedding"):
        held = by_entry.pop(entry.pk, [])
        assert held, f"entry {entry.pk} has no level left but was not deleted"
        assert sorted(entry.levels) == sorted(lv for lv, _ in held)
        assert entry.bytes == sum(nb for _, nb in held)
    assert not by_entry, "level rows without an entry"


@pytest.fixture(autouse=True)
def fresh_cache_dir(settings, tmp_path):
    """Each test its own latent directory (the database is flushed between tests; files are not)."""
    settings.T2I_CACHE_DIR = tmp_path / "latent-cache"


@pytest.fixture
def budget():
    def set_budget(nbytes: int) -> None:
        cache_config(byte_budget=nbytes)

    return set_budget


# ----------------------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------------------


def test_nearest_matches_numpy_brute_force_within_model_key(embedded_services):
    rng = np.random.default_rng(1)
    centers = unit(rng.normal(size=(40, 384)))
    n = 400
    vecs = unit(centers[rng.integers(0, 40, n)] + rng.normal(scale=0.04, size=(n, 384)))
    keys = np.array(["sd|ddim|N50|64x64"] * 250 + ["sd|ddim|N50|128x128"] * 140 + ["xl|euler|N30|64x64"] * 10)
    rng.shuffle(keys)
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        ids = cache_store.insert_many(
            str(key), [f"prompt {i}" for i in idx], [{5: latent()} for _ in idx], vecs[idx], evict=False
        )
        assert all(ids)
    id_of = {e.prompt: e.pk for e in CacheEntry.objects.only("prompt")}
    queries = unit(vecs[rng.integers(0, n, 60)] + rng.normal(scale=0.03, size=(60, 384)))
    for q in queries:
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            sims = vecs[idx] @ q
            best = int(idx[int(np.argmax(sims))])
            found = cache_store.nearest(q, str(key))
            assert found is not None
            entry, s = found
            assert entry.model_key == key
            assert entry.pk == id_of[f"prompt {best}"] or s == pytest.approx(float(sims.max()), abs=1e-5)
            assert s == pytest.approx(float(sims.max()), abs=1e-4)
    assert cache_store.nearest(queries[0], "no-such-key") is None


def test_the_query_vector_travels_in_binary_on_every_connection_and_inside_a_transaction(embedded_services):
    """nearest() binds on the server and sends the vector in pgvector's binary form (its dumper is set up per
    connection, since the type's oid is the database's): the same answer on a fresh connection, inside the
    caller's transaction.atomic(), and in the tenant scope."""
    from pgvector import Vector
    from psycopg.adapt import PyFormat

    rng = np.random.default_rng(7)
    vecs = unit(rng.normal(size=(30, 384)))
    key = "sd|ddim|N50|64x64"
    assert all(cache_store.insert_many(key, [f"p{i}" for i in range(30)], [{5: latent()}] * 30, vecs, evict=False))
    connection.close()
    found = cache_store.nearest(vecs[3], key)
    assert found is not None and found[0].prompt == "p3" and found[1] == pytest.approx(1.0, abs=1e-5)
    with connection.cursor() as cur:
        cur.execute("SELECT 'vector'::regtype::oid")
        (oid,) = cur.fetchone()
    assert connection.connection.adapters.get_dumper(Vector, PyFormat.BINARY).oid == oid
    with transaction.atomic():
        inside = cache_store.nearest(vecs[4], key)
        scoped = cache_store.nearest(vecs[5], key, tenants=["", "public"])
        assert CacheEntry.objects.filter(model_key=key).count() == 30  # the transaction is still usable
    assert inside is not None and inside[0].prompt == "p4"
    assert scoped is not None and scoped[0].prompt == "p5"


def _model_key_btree_indexes() -> tuple[list[str], list[str]]:
    """(plain indexes, unique constraints) on workers_cacheentry that a key filter could use."""
    with connection.cursor() as cur:
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'workers_cacheentry'")
        defs = cur.fetchall()
        cur.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'workers_cacheentry'::regclass AND contype = 'u'"
        )
        constraints = [r[0] for r in cur.fetchall()]
    plain = [name for name, d in defs if "model_key" in d and name not in constraints]
    return plain, constraints


def test_filtered_hnsw_scan_is_never_starved_by_the_key_filter(embedded_services, settings):
    """The planner picks the HNSW index for a key filter: without iterative scan it returns ef_search
    candidates and the filter can drop them all; nearest() sets relaxed_order and still finds the key's
    nearest entry. (The key's btree indexes are dropped inside a rolled-back transaction so that the
    HNSW plan is the only index plan.)"""
    settings.T2I_CACHE_EF_SEARCH = 10
    rng = np.random.default_rng(2)
    vecs = unit(rng.normal(size=(600, 384)))
    common, rare = np.arange(0, 585), np.arange(585, 600)  # the rare key: 2.5% of the rows
    cache_store.insert_many(
        "common", [f"c{i}" for i in common], [{5: latent()} for _ in common], vecs[common], evict=False
    )
    cache_store.insert_many("rare", [f"r{i}" for i in rare], [{5: latent()} for _ in rare], vecs[rare], evict=False)
    plain, constraints = _model_key_btree_indexes()
    queries = unit(rng.normal(size=(25, 384)))
    with transaction.atomic():
        with connection.cursor() as cur:
            for name in plain:
                cur.execute(f'DROP INDEX "{name}"')
            for name in constraints:
                cur.execute(f'ALTER TABLE workers_cacheentry DROP CONSTRAINT "{name}"')
            cur.execute("SET LOCAL enable_seqscan = off")
            lit = cache_store._vector_literal(queries[0])
            cur.execute("EXPLAIN " + cache_store._QUERIES["embedding"][0], [lit, "rare", lit])
            assert "cacheentry_embedding_hnsw" in " ".join(r[0] for r in cur.fetchall())
            starved = 0
            cur.execute("SET LOCAL hnsw.ef_search = 10")
            cur.execute("SET LOCAL hnsw.iterative_scan = off")
            for q in queries:
                lit = cache_store._vector_literal(q)
                cur.execute(cache_store._QUERIES["embedding"][0], [lit, "rare", lit])
                starved += len(cur.fetchall()) == 0
        assert starved > 0, "the control query should be starved by the filter at least once"
        for q in queries:
            found = cache_store.nearest(q, "rare")  # sets relaxed_order in this same transaction
            assert found is not None
            entry, s = found
            assert entry.model_key == "rare"
            assert s <= float((vecs[rare] @ q).max()) + 1e-5
        transaction.set_rollback(True)


def test_k_star_of_a_neighbour_is_capped_at_the_levels_it_holds(embedded_services):
    """The store finds the neighbour; the one K* rule (the live policy's predictor, built from the
    admin's thresholds) caps K* at the largest level that neighbour still holds."""
    rng = np.random.default_rng(3)
    a, b = unit(rng.normal(size=(2, 384)))
    cache_store.insert("only high levels", {20: latent(), 25: latent()}, "k", a)
    cache_store.insert("only low levels", {5: latent(), 10: latent()}, "k2", b)

    def near(v: np.ndarray, s: float) -> np.ndarray:  # a unit vector at cosine s from v
        o = unit(rng.normal(size=384))
        o = unit(o - (o @ v) * v)
        return (s * v + np.sqrt(1 - s * s) * o).astype(np.float32)

    def k_star(query: np.ndarray, key: str) -> int:
        entry, s = cache_store.nearest(query, key)
        predictor = scheduler_config(ServingConfig.current()).predictor
        return predictor.k_star(s, tuple(sorted(entry.levels)))

    entry, s = cache_store.nearest(near(a, 0.97), "k")
    assert entry.prompt == "only high levels" and s == pytest.approx(0.97, abs=1e-4)
    assert sorted(entry.levels) == [20, 25] and k_star(near(a, 0.97), "k") == 25
    assert k_star(near(a, 0.92), "k") == 20
    assert k_star(near(a, 0.87), "k") == 0  # predicted 15, only 20 and 25 held
    assert k_star(near(b, 0.97), "k2") == 10  # predicted 25, capped at 10
    assert k_star(near(b, 0.70), "k2") == 5
    assert k_star(near(b, 0.50), "k2") == 0  # a miss, neighbour still found
    assert cache_store.nearest(a, "empty-key") is None
    # The thresholds are the admin's (ServingConfig), read on every call.
    serving_config(thresholds="0.99:25,0.5:10")
    assert k_star(near(b, 0.97), "k2") == 10
    assert k_star(near(a, 0.97), "k") == 0


# ----------------------------------------------------------------------------------------------------------
# Files, hits, eviction
# ----------------------------------------------------------------------------------------------------------


def test_insert_stores_files_and_start_latent_reads_them_back(embedded_services):
    v = unit(np.ones(384))
    lat = {k: latent(k) for k in LEVELS}
    lat[3] = latent(3)  # not a cache level: ignored
    entry_id = cache_store.insert("a castle", lat, "key", v)
    entry = CacheEntry.objects.get(pk=entry_id)
    assert entry.levels == list(LEVELS) and entry.bytes > 5 * 4 * 8 * 8 * 4
    assert len(files_on_disk()) == 5
    assert_consistent()

    level, tensor = cache_store.start_latent(entry_id, 20)
    assert level == 20 and torch.equal(tensor, lat[20]) and tensor.shape == (1, 4, 8, 8)
    assert torch.equal(cache_store.load_latent(entry_id, 5), lat[5])
    assert cache_store.load_latent(entry_id, 7) is None
    entry.refresh_from_db()
    assert (entry.hits, entry.score) == (1, 20) and entry.last_hit_at is not None
    assert CacheLevel.objects.get(entry_id=entry_id, level=20).score == 20

    # Same prompt and key again: no duplicate entry, no new file for levels already held.
    again = cache_store.insert("a castle", {k: latent(99) for k in (5, 10)}, "key", v)
    assert again == entry_id and CacheEntry.objects.count() == 1
    assert torch.equal(cache_store.load_latent(entry_id, 5), lat[5])
    # A different key is a different entry.
    other = cache_store.insert("a castle", {25: latent()}, "other-key", v)
    assert other != entry_id
    assert_consistent()

    # Level 20 evicted: start_latent falls back to the largest held level below K′.
    cache_store.purge([other])
    CacheLevel.objects.filter(entry_id=entry_id, level=20).update(score=-1)  # make it the victim
    used = cache_store.used_bytes()
    assert cache_store.evict_to_budget(used - 1) == 1
    level, tensor = cache_store.start_latent(entry_id, 20)
    assert level == 15 and torch.equal(tensor, lat[15])
    assert cache_store.start_latent(entry_id, 4) is None
    assert_consistent()


def test_lcbfu_evicts_lowest_score_first_and_respects_the_budget(embedded_services, budget):
    rng = np.random.default_rng(4)
    vecs = unit(rng.normal(size=(3, 384)))
    ids = {}
    for name, v in zip("ABC", vecs):  # separate inserts: A is the oldest
        ids[name] = cache_store.insert(name, {k: latent() for k in LEVELS}, "key", v)
    size = CacheLevel.objects.first().nbytes
    assert set(CacheLevel.objects.values_list("nbytes", flat=True)) == {size}
    for _ in range(2):
        assert cache_store.hit(ids["A"], 25)  # A@25: score 50
    assert cache_store.hit(ids["B"], 10)  # B@10: score 10
    assert not cache_store.hit(ids["C"], 7)  # no such level
    entry_a = CacheEntry.objects.get(pk=ids["A"])
    assert (entry_a.hits, entry_a.score) == (2, 50)

    # Expected order: zero scores first, least recently used (oldest) first, lower K first within a
    # prompt; then B@10 (10), then A@25 (50).
    expected = (
        [("A", k) for k in (5, 10, 15, 20)]
        + [("B", k) for k in (5, 15, 20, 25)]
        + [("C", k) for k in LEVELS]
        + [("B", 10), ("A", 25)]
    )
    name_of = {v: k for k, v in ids.items()}
    held = {(n, k) for n in "ABC" for k in LEVELS}
    for step, victim in enumerate(expected, start=1):
        new_budget = (15 - step) * size
        budget(new_budget)
        assert cache_store.evict_to_budget() == 1
        now = {(name_of[e], k) for e, k in CacheLevel.objects.values_list("entry_id", "level")}
        assert held - now == {victim}, f"step {step}: expected {victim} evicted, got {held - now}"
        held = now
        assert cache_store.used_bytes() <= new_budget
        assert_consistent()
        if victim == ("C", 25):
            assert not CacheEntry.objects.filter(pk=ids["C"]).exists()  # last level gone: row gone
    assert CacheEntry.objects.count() == 0 and files_on_disk() == set()


def test_insert_evicts_to_the_budget_and_can_evict_what_it_just_inserted(embedded_services, budget):
    rng = np.random.default_rng(5)
    vecs = unit(rng.normal(size=(10, 384)))
    first = cache_store.insert("p0", {k: latent() for k in LEVELS}, "key", vecs[0])
    size = CacheLevel.objects.first().nbytes
    budget(12 * size)
    cache_store.hit(first, 5)
    for i in range(1, 10):
        cache_store.insert(f"p{i}", {k: latent() for k in LEVELS}, "key", vecs[i])
        assert cache_store.used_bytes() <= 12 * size
        assert_consistent()
    assert CacheLevel.objects.filter(entry_id=first, level=5).exists()  # the one level with a hit
    budget(0)
    cache_store.insert("p10", {5: latent()}, "key", vecs[0])
    assert CacheEntry.objects.count() == 0 and files_on_disk() == set()


def test_failed_insert_leaves_no_files(embedded_services):
    with pytest.raises(ValueError):
        cache_store.insert("bad", {5: latent()}, "key", np.zeros(384))  # zero vector: refused
    with pytest.raises(DataError):
        # Fails inside the transaction (over-long key): the files written before it must go.
        cache_store.insert("bad", {5: latent()}, "k" * 500, unit(np.ones(384)))
    assert CacheEntry.objects.count() == 0 and files_on_disk() == set()
    with transaction.atomic(), pytest.raises(RuntimeError, match="outside transaction.atomic"):
        cache_store.insert("in a transaction", {5: latent()}, "key", unit(np.ones(384)))


def test_purge_and_orphan_sweep(embedded_services):
    rng = np.random.default_rng(6)
    ids = cache_store.insert_many(
        "key", ["a", "b", "c"], [{k: latent() for k in (5, 10)}] * 3, unit(rng.normal(size=(3, 384)))
    )
    assert cache_store.purge([ids[0]]) == (1, 2)
    assert len(files_on_disk()) == 4
    stray = cache_store.cache_dir() / "stray" / "left-by-a-crash.safetensors"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    assert cache_store.sweep_orphan_files(older_than_s=3600) == 0  # too young: could be an insert
    assert cache_store.sweep_orphan_files(older_than_s=0) == 1
    assert_consistent()
    assert cache_store.purge() == (2, 4)
    assert files_on_disk() == set()


@pytest.mark.django_db  # plain: nothing is inserted
def test_model_key_for_the_configured_model(embedded_services, tiny_model_path):
    key = model_key_for(50, 64, 64)
    assert key == model_key_for(50, 64, 64, model_path=Path(str(tiny_model_path)))
    name, scheduler, steps, size = key.split("|")
    assert name.startswith(tiny_model_path.name + "-") and scheduler in ("ddim", "euler")
    assert (steps, size) == ("N50", "64x64")
    assert model_key_for(30, 64, 64) != key != model_key_for(50, 128, 128)


# ----------------------------------------------------------------------------------------------------------
# Admin
# ----------------------------------------------------------------------------------------------------------


def test_admin_lists_entries_and_purge_action_removes_rows_and_files(embedded_services, client, django_user_model):
    admin_user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin_user)
    rng = np.random.default_rng(7)
    ids = cache_store.insert_many(
        "key", ["red fox", "blue whale"], [{k: latent() for k in LEVELS}] * 2, unit(rng.normal(size=(2, 384)))
    )
    page = client.get("/admin/cache/cacheentry/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "red fox" in body and "blue whale" in body and "budget" in body
    assert client.get("/admin/cache/cacheconfig/").status_code == 200
    resp = client.post(
        "/admin/cache/cacheentry/", {"action": "purge_selected", "_selected_action": [ids[0]]}, follow=True
    )
    assert resp.status_code == 200 and "Purged 1 cache entries and 5 latent files" in resp.content.decode()
    assert list(CacheEntry.objects.values_list("prompt", flat=True)) == ["blue whale"]
    assert len(files_on_disk()) == 5
    assert_consistent()

    # Lowering the budget in the admin evicts at once.
    config = CacheConfig.current()
    page = client.get(f"/admin/cache/cacheconfig/{config.pk}/change/")
    assert "0.95:25" in page.content.decode()  # the thresholds shown, edited under Serving configuration
    resp = client.post(f"/admin/cache/cacheconfig/{config.pk}/change/", {"byte_budget": 0}, follow=True)
    assert resp.status_code == 200
    assert CacheConfig.current().byte_budget == 0
    assert CacheEntry.objects.count() == 0 and files_on_disk() == set()
    bad = client.post(f"/admin/cache/cacheconfig/{config.pk}/change/", {"byte_budget": -1})
    assert bad.status_code == 200 and "greater than or equal to 0" in bad.content.decode()


@pytest.mark.django_db  # plain: nothing is inserted
def test_model_key_names_the_scheduler_the_engine_runs(tiny_model_path, settings):
    """A swapped scheduler (T2I_SCHEDULER) is part of the key, so latents made with one scheduler
    are never resumed with another."""
    settings.T2I_MODEL_PATH = tiny_model_path
    settings.T2I_SCHEDULER = ""
    folder = model_key_for(50, 64, 64)
    settings.T2I_SCHEDULER = "euler"
    swapped = model_key_for(50, 64, 64)
    assert "|ddim|" in folder and "|euler|" in swapped and folder != swapped


# ----------------------------------------------------------------------------------------------------------
# Object storage (webapp/cache/latent_storage.py): the same store with its latents in an S3 bucket
# ----------------------------------------------------------------------------------------------------------


def bucket_keys() -> dict[str, float]:
    """Latent keys in the configured latents storage (here: the bucket under this test's prefix)."""
    return dict(latent_store().listing())


def test_latents_in_s3_insert_read_evict_purge_and_sweep(embedded_services, s3_storage, loopback_s3):
    """With T2I_STORAGE=s3 every latent blob is a key in the bucket (none on the local disk); reads are GETs of
    those keys, and eviction, purge and the orphan sweep delete them through the same interface."""
    store = latent_store()
    assert store.s3 and store.storage.location.endswith("/latent-cache")
    v = unit(np.ones(384))
    lat = {k: latent(k) for k in LEVELS}
    entry_id = cache_store.insert("a castle in s3", lat, "key", v)
    named = set(CacheLevel.objects.values_list("file", flat=True))
    assert len(named) == 5 and set(bucket_keys()) == named
    assert files_on_disk() == set()  # nothing under T2I_CACHE_DIR
    raw = loopback_s3.client().list_objects_v2(Bucket=s3_storage["T2I_S3_BUCKET"], Prefix=s3_storage["T2I_S3_PREFIX"])
    assert {o["Key"] for o in raw["Contents"]} == {f"{s3_storage['T2I_S3_PREFIX']}/latent-cache/{n}" for n in named}

    shared_lru().clear()  # a cold worker: the read below is a GET from the bucket
    level, tensor = cache_store.start_latent(entry_id, 20)
    assert level == 20 and torch.equal(tensor, lat[20])
    assert shared_lru().get((store.ident, CacheLevel.objects.get(entry_id=entry_id, level=20).file)) is not None

    CacheLevel.objects.filter(entry_id=entry_id, level=25).update(score=-1)
    victim = CacheLevel.objects.get(entry_id=entry_id, level=25).file
    assert cache_store.evict_to_budget(cache_store.used_bytes() - 1) == 1
    assert victim not in bucket_keys() and len(bucket_keys()) == 4

    store.write("stray/left-by-a-crash.safetensors", b"x")
    assert cache_store.sweep_orphan_files(older_than_s=3600) == 0  # too young: could be an insert
    assert cache_store.sweep_orphan_files(older_than_s=0) == 1
    assert set(bucket_keys()) == set(CacheLevel.objects.values_list("file", flat=True))

    assert cache_store.purge() == (1, 4)
    assert bucket_keys() == {}
    assert cache_store.start_latent(entry_id, 20) is None


@pytest.mark.django_db  # plain: no rows
def test_a_latent_the_storage_cannot_serve_means_a_resume_from_zero(settings, tmp_path, caplog):
    """Missing key: None. A storage that fails to answer: None too (logged), so the request runs from K = 0
    instead of failing; a resume is an optimisation."""
    assert cache_store._read_latent("no/such/key.safetensors") is None
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    settings.T2I_CACHE_DIR = blocker  # reading <file>/key fails with NotADirectoryError, not "missing"
    assert cache_store._read_latent("ab/key.safetensors") is None
    assert "could not be read" in caplog.text


def test_latent_lru_keeps_recent_blobs_under_its_byte_bound():
    lru = LatentLRU(max_bytes=10)
    lru.put(("s", "a"), b"aaaa")
    lru.put(("s", "b"), b"bbbb")
    assert lru.get(("s", "a")) == b"aaaa"  # a is now the most recent
    lru.put(("s", "c"), b"cccc")  # 12 bytes > 10: the least recent (b) leaves
    assert lru.get(("s", "b")) is None and lru.get(("s", "c")) == b"cccc" and lru.nbytes == 8
    lru.put(("s", "huge"), b"x" * 11)  # larger than the whole LRU: not kept, nothing else dropped
    assert lru.get(("s", "huge")) is None and len(lru) == 2
    assert lru.get(("other store", "a")) is None  # keys of another storage never match
    off = LatentLRU(max_bytes=0)
    off.put(("s", "a"), b"a")
    assert off.get(("s", "a")) is None
