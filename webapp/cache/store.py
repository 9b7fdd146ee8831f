"""The approximate cache store: pgvector index + latent files, LCBFU eviction under a byte budget.

DESIGN §2, §6; NIRVANA (NSDI'24). Rows (:class:`~webapp.cache.models.CacheEntry` per prompt,
:class:`~webapp.cache.models.CacheLevel` per stored latent) are the index; each latent is one safetensors
blob in the latents storage — a directory (``settings.T2I_CACHE_DIR``) or an S3 bucket shared by workers on
several hosts (:mod:`webapp.cache.latent_storage`, docs/storage.md) — named by its storage key, never a
Postgres value and never a host path.

Public API (the submit path and the worker call only these):

* :func:`webapp.cache.keys.model_key_for` — the cache key: model, scheduler, N, resolution.
* :func:`nearest` — nearest cached prompt under one model key, optionally among some tenants only (the
  `tenant` cache scope): ``(entry, similarity)`` or None. K* is not decided here: routing at submit asks
  the active policy's predictor (one K* rule).
* :func:`start_latent` — the worker's read: the neighbour's latent at K′ (or the largest level below it
  that is still held), counting the LCBFU hit. None when it has been evicted meanwhile: serve at K = 0.
* :func:`insert` / :func:`insert_many` — store the captured latents of finished generations with their
  :class:`Provenance` (tenant, creator, source request), then evict.
* :func:`evict_to_budget`, :func:`purge`, :func:`entries_matching`, :func:`purge_created_by`,
  :func:`sweep_orphan_files`, :func:`stats` — maintenance.

LCBFU (NIRVANA): the unit of eviction is an (entry, level) pair with score = hits × K (a hit at level K
adds K). Over budget, the lowest score leaves first; among equal scores the least recently used
(created or last hit), then the lower K. A prompt leaves (row deleted) when its last level does.

Consistency between rows and files, with several worker processes:

* every writer of levels (insert, evict, purge) holds one transaction-scoped advisory lock, so the
  byte total and the eviction order are computed without races; hits need no lock (single UPDATEs);
* files are written under fresh keys *before* the rows that name them commit (so a reader never sees a
  half-written one); if the transaction fails they are removed;
* files of evicted/purged levels are removed only *after* the deleting transaction commits
  (``transaction.on_commit``), so a row never names a missing file except while a reader races an
  eviction — :func:`start_latent` then returns None;
* a process killed between those steps can leave unnamed files: :func:`sweep_orphan_files` removes
  those older than an hour (run it from beat or by hand);
* every read, write, deletion and listing goes through :mod:`webapp.cache.latent_storage`: a worker never
  assumes it wrote what it reads, so any worker on any host can resume from any entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, QuerySet, Sum
from django.utils import timezone
from pgvector import Vector
from pgvector.psycopg.vector import VectorBinaryDumper
from psycopg.adapt import PyFormat
from psycopg.types import TypeInfo

from scheduler.embeddings import embed_texts

from .clip_embedder import CLIP_DIM, clip_text_embeddings
from .latent_storage import latent_store, storage_errors
from .models import EMBED_DIM, CacheConfig, CacheEntry, CacheLevel
from .tenants import UNKNOWN_TENANT

if TYPE_CHECKING:  # torch only where latents are touched: the web process never needs it here
    import torch

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x7432_69_43  # "t2iC": serialises the cache's level writers across processes
# HNSW candidates re-ranked exactly by distance: relaxed_order returns them only loosely ordered. The
# outer "ORDER BY distance + 0" is a real sort (pgvector's documented pattern); on a bare "distance" the
# planner would trust the scan's order and read only the first candidate.
CANDIDATES = 8
LATENT_SUFFIX = ".safetensors"


# ----------------------------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------------------------


def embed(prompts: Sequence[str]) -> np.ndarray:
    """MiniLM embeddings (the project's one embedder), float32, L2-normalised, (n, 384)."""
    return embed_texts(list(prompts))


def query_vector(prompt: str, minilm: Any) -> np.ndarray:
    """What a lookup compares: the MiniLM embedding, or with T2I_EMBEDDER=clip the model's own
    CLIP text features (webapp/cache/clip_embedder.py)."""
    if settings.T2I_EMBEDDER == "clip":
        return clip_text_embeddings([prompt], settings.T2I_MODEL_PATH)[0]
    return np.asarray(minilm, dtype=np.float32)


_COLUMN_BY_DIM = {EMBED_DIM: "embedding", CLIP_DIM: "clip_embedding"}


def _checked_vector(embedding: Any) -> np.ndarray:
    v = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if v.shape[0] not in _COLUMN_BY_DIM:
        raise ValueError(f"embedding must have {EMBED_DIM} (MiniLM) or {CLIP_DIM} (CLIP) dimensions, got {v.shape[0]}")
    if not np.all(np.isfinite(v)) or not np.any(v):
        raise ValueError("embedding must be finite and non-zero")
    return v


def _vector_literal(embedding: Any) -> str:
    """The embedding as pgvector's text form (for SQL written out by hand: EXPLAINs in tests and benches)."""
    return "[" + ",".join(map(repr, _checked_vector(embedding).tolist())) + "]"


def _send_vectors_binary(conn: psycopg.Connection) -> None:
    """Let this connection send a `pgvector.Vector` parameter in pgvector's binary form (set up once per
    connection: the `vector` type's oid differs between databases). Django binds parameters client-side, so
    the lookup's query vector would otherwise travel twice as ~8 KB of text for the server to parse."""
    try:
        conn.adapters.get_dumper(Vector, PyFormat.BINARY)
    except psycopg.ProgrammingError:
        info = TypeInfo.fetch(conn, "vector")
        if info is None:
            raise psycopg.ProgrammingError("the vector extension is not installed in this database") from None
        conn.adapters.register_dumper(Vector, type("QueryVectorDumper", (VectorBinaryDumper,), {"oid": info.oid}))


_ENTRY_FIELDS = [
    "id",
    "prompt",
    "prompt_sha",
    "model_key",
    "levels",
    "hits",
    "score",
    "bytes",
    "created_at",
    "last_hit_at",
    "tenant",
    "creator_id",
    "source_request_id",
]
_ENTRY_COLUMNS = ", ".join(_ENTRY_FIELDS)
_NEAREST_HNSW = """
    WITH candidates AS MATERIALIZED (
        SELECT {entry}, {col} <=> %s::vector AS distance
        FROM workers_cacheentry WHERE model_key = %s{tenant} AND {col} IS NOT NULL
        ORDER BY {col} <=> %s::vector LIMIT {n})
    SELECT * FROM candidates ORDER BY distance + 0, id LIMIT 1"""
# "+ 0" keeps the planner off the HNSW index: an exact scan of the key's (and tenants') rows.
_NEAREST_EXACT = """
    SELECT {entry}, {col} <=> %s::vector AS distance
    FROM workers_cacheentry WHERE model_key = %s{tenant} AND {col} IS NOT NULL
    ORDER BY ({col} <=> %s::vector) + 0, id LIMIT 1"""
_TENANT_FILTER = " AND tenant = ANY(%s)"


def _queries(tenant_filter: str) -> dict[str, tuple[str, str]]:
    """column -> (HNSW query, exact query)."""
    return {
        col: (
            _NEAREST_HNSW.format(entry=_ENTRY_COLUMNS, col=col, n=CANDIDATES, tenant=tenant_filter),
            _NEAREST_EXACT.format(entry=_ENTRY_COLUMNS, col=col, tenant=tenant_filter),
        )
        for col in _COLUMN_BY_DIM.values()
    }


_QUERIES = _queries("")  # every tenant (the shared scope)
_SCOPED_QUERIES = _queries(_TENANT_FILTER)  # some tenants only (the tenant scope)


def nearest(embedding: Any, model_key: str, tenants: Sequence[str] | None = None) -> tuple[CacheEntry, float] | None:
    """The cached prompt nearest to ``embedding`` (cosine) among entries of ``model_key`` — and, when
    ``tenants`` is given (the `tenant` cache scope), only among entries of those tenants.

    Returns ``(entry, similarity)`` with similarity = 1 − cosine distance, or None when no entry qualifies.
    Uses the one HNSW index with ``hnsw.iterative_scan = relaxed_order`` (pgvector ≥ 0.8), set LOCAL
    in the query's own transaction, so filtering by key and tenant cannot starve the scan; if the scan
    still ends empty (``hnsw.max_scan_tuples`` reached for a very rare key or tenant) an exact scan of
    those rows answers (the btree of the (model_key, tenant, prompt_sha) constraint finds them).
    The entry's embedding is deferred (loaded only if read).
    """
    checked = _checked_vector(embedding)
    vec = Vector(checked)
    scoped = tenants is not None
    params = [vec, model_key, list(tenants), vec] if scoped else [vec, model_key, vec]
    hnsw_sql, exact_sql = (_SCOPED_QUERIES if scoped else _QUERIES)[_COLUMN_BY_DIM[checked.shape[0]]]
    ef = str(int(settings.T2I_CACHE_EF_SEARCH))
    # One psycopg pipeline: BEGIN, the two SET LOCALs, the query and COMMIT travel together instead of
    # four round trips (each a chance to be preempted on a busy host). psycopg's transaction() is a real
    # transaction in autocommit mode and a savepoint inside the caller's transaction.atomic(). A plain
    # psycopg.Cursor binds on the server, so the vector goes as binary (`_send_vectors_binary`).
    with connection.wrap_database_errors:
        connection.ensure_connection()
        conn = connection.connection
        _send_vectors_binary(conn)
        with conn.pipeline(), conn.transaction(), psycopg.Cursor(conn) as cur:
            cur.execute(
                "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                "set_config('hnsw.ef_search', %s, true)",
                [ef],
            )
            cur.execute(hnsw_sql, params)
            row = cur.fetchone()
            if row is None:  # hnsw.max_scan_tuples reached before any row of a very rare key
                cur.execute(exact_sql, params)
                row = cur.fetchone()
    if row is None:
        return None
    *values, distance = row
    entry = CacheEntry.from_db(connection.alias, _ENTRY_FIELDS, values)  # embedding deferred
    return entry, float(1.0 - distance)


# ----------------------------------------------------------------------------------------------------------
# Reading latents and counting hits
# ----------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The local latents directory (T2I_STORAGE=local); with S3 the keys live in the bucket instead."""
    return Path(settings.T2I_CACHE_DIR)


def hit(entry_id: int, level: int) -> bool:
    """LCBFU: a hit at level K adds K to that (entry, level)'s score and to the entry's totals.
    False when the level is no longer held. Best effort: never raises for a lost race."""
    now = timezone.now()
    try:
        with transaction.atomic():
            # Level row first, then the entry row: the same order as eviction, so no lock cycle.
            n = CacheLevel.objects.filter(entry_id=entry_id, level=level).update(
                hits=F("hits") + 1, score=F("score") + level, last_used_at=now
            )
            if n:
                CacheEntry.objects.filter(pk=entry_id).update(
                    hits=F("hits") + 1, score=F("score") + level, last_hit_at=now
                )
        return bool(n)
    except OperationalError:  # e.g. a deadlock victim under heavy concurrent eviction
        log.warning("cache hit on entry %s level %s not counted", entry_id, level, exc_info=True)
        return False


def load_latent(entry_id: int, level: int) -> torch.Tensor | None:
    """The stored latent ``(1, C, h, w)`` (CPU, stored dtype), or None if that level is not held."""
    name = CacheLevel.objects.filter(entry_id=entry_id, level=level).values_list("file", flat=True).first()
    if name is None:
        return None
    return _read_latent(name)


def start_latent(entry_id: int, max_level: int) -> tuple[int, torch.Tensor] | None:
    """The worker's read for a request served from neighbour ``entry_id`` at K′ = ``max_level``.

    Loads the largest level ≤ K′ the neighbour still holds (normally K′ itself; a lower one if K′ was
    evicted since submit) and counts the hit at that level. Returns ``(level, latent)`` — pass them as
    ``GenItem(start_level=level, start_latent=latent)`` and record ``level`` as K served — or None when
    nothing usable is left (serve at K = 0).
    """
    held = (
        CacheLevel.objects.filter(entry_id=entry_id, level__lte=max_level, level__gt=0)
        .order_by("-level")
        .values_list("level", "file")
    )
    for level, name in held:
        latent = _read_latent(name)
        if latent is not None:  # None: evicted between our query and the read
            hit(entry_id, level)
            return level, latent
    return None


def _read_latent(name: str) -> torch.Tensor | None:
    """The latent stored under key ``name`` (one GET on S3, or this process's LRU), or None when it is gone —
    or when the storage cannot answer: a resume is an optimisation, so the request then runs from K = 0."""
    from safetensors.torch import load

    try:
        data = latent_store().read(name)
    except storage_errors():
        log.warning("latent %s could not be read; serving without it", name, exc_info=True)
        return None
    return None if data is None else load(data)["latent"]


# ----------------------------------------------------------------------------------------------------------
# Insert
# ----------------------------------------------------------------------------------------------------------


def _lock() -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_ID])


def _require_autocommit(what: str) -> None:
    if connection.in_atomic_block:
        raise RuntimeError(
            f"cache_store.{what} must be called outside transaction.atomic(): it writes "
            "files that must follow its own commit or rollback"
        )


def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _write_latent(tensor: torch.Tensor, name: str) -> int:
    """Store one latent under key ``name`` (a new key: readers see it only once a committed row names it);
    returns its size in bytes."""
    from safetensors.torch import save

    return latent_store().write(name, save({"latent": tensor.detach().to("cpu").contiguous()}))


def _remove_files(names: Iterable[str]) -> None:
    latent_store().delete(names)


@dataclass(frozen=True)
class Provenance:
    """Where an entry comes from: the tenant whose lookups may reuse it (webapp/cache/tenants.py), the user
    whose generation made it (None for warm_cache) and that generation's request id."""

    tenant: str = UNKNOWN_TENANT
    creator_id: int | None = None
    source_request_id: Any = None


def insert(
    prompt: str,
    latents: Mapping[int, torch.Tensor],
    model_key: str,
    embedding: Any | None = None,
    provenance: Provenance | None = None,
) -> int | None:
    """Store one generation's captured latents; see :func:`insert_many`."""
    return insert_many(
        model_key,
        [prompt],
        [latents],
        None if embedding is None else [embedding],
        provenance=None if provenance is None else [provenance],
    )[0]


def insert_many(
    model_key: str,
    prompts: Sequence[str],
    latents: Sequence[Mapping[int, torch.Tensor]],
    embeddings: Any | None = None,
    evict: bool = True,
    provenance: Sequence[Provenance] | None = None,
) -> list[int | None]:
    """Store the captured latents (``GenResult.latents``: {level: (1, C, h, w) tensor}) of finished
    generations under ``model_key``; then evict (LCBFU) down to the byte budget.

    Only cache levels (``settings.T2I_CACHE_LEVELS``) are kept. ``provenance`` gives each prompt's tenant,
    creator and source request (default: :class:`Provenance` ``()``, an unknown tenant that only the shared
    scope reuses). A prompt already cached under the key *for the same tenant* gains the levels it lacks
    (levels it holds, and its provenance, are kept); the same prompt of another tenant is a separate
    entry. ``embeddings`` (n × 384) are computed with MiniLM when not given. Returns each prompt's entry
    id, or None when it had no level to store. Call outside ``transaction.atomic()``.
    """
    _require_autocommit("insert_many")
    if len(prompts) != len(latents):
        raise ValueError("prompts and latents must have the same length")
    origins = list(provenance) if provenance is not None else [Provenance()] * len(prompts)
    if len(origins) != len(prompts):
        raise ValueError("prompts and provenance must have the same length")
    items = [(origin.tenant, prompt) for origin, prompt in zip(origins, prompts)]
    wanted = _levels_to_store(items, latents)
    todo = [item for item, levels in wanted.items() if levels]
    if not todo:
        return [None] * len(prompts)
    first_origin: dict[tuple[str, str], Provenance] = {}
    for item, origin in zip(items, origins):
        first_origin.setdefault(item, origin)
    vectors, clip_vectors = _vectors_for(todo, items, embeddings)
    written, all_files = _write_files(model_key, todo, wanted)  # slow part, nothing locked
    try:
        ids, unused = _record_rows(model_key, todo, written, vectors, clip_vectors, first_origin)
    except BaseException:
        _remove_files(all_files)
        raise
    _remove_files(unused)  # never named by a committed row
    if evict:
        evict_to_budget()
    return [ids.get(item) for item in items]


Item = tuple[str, str]  # (tenant, prompt): the unit of one entry under a model key


def _levels_to_store(items: Sequence[Item], latents: Sequence[Mapping[int, Any]]) -> dict[Item, dict[int, Any]]:
    """(tenant, prompt) -> {cache level: tensor}; only configured cache levels, the first occurrence wins."""
    allowed = set(settings.T2I_CACHE_LEVELS)
    wanted: dict[Item, dict[int, Any]] = {}
    for item, captured in zip(items, latents):
        slot = wanted.setdefault(item, {})
        for level, tensor in captured.items():
            if int(level) in allowed and int(level) not in slot:
                slot[int(level)] = tensor
    return wanted


def _vectors_for(
    todo: list[Item], items: Sequence[Item], embeddings: Any | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The MiniLM vector of each prompt (given, or embedded now) and, with T2I_EMBEDDER=clip, its CLIP one."""
    texts = list(dict.fromkeys(prompt for _, prompt in todo))
    if embeddings is None:
        vectors = dict(zip(texts, embed(texts)))
    else:
        vectors = {}
        for (_, prompt), vec in zip(items, np.asarray(embeddings, dtype=np.float32)):
            vectors.setdefault(prompt, vec)
    clip_vectors: dict[str, np.ndarray] = {}
    if settings.T2I_EMBEDDER == "clip":
        clip_vectors = dict(zip(texts, clip_text_embeddings(texts, settings.T2I_MODEL_PATH)))
    return vectors, clip_vectors


def _write_files(
    model_key: str, todo: list[Item], wanted: dict[Item, dict[int, Any]]
) -> tuple[dict[Item, dict[int, tuple[str, int]]], list[str]]:
    """Write every latent file, outside any transaction. Returns item -> {level: (file, bytes)} and all
    file names; on failure removes what it wrote."""
    key_dir = hashlib.sha1(model_key.encode()).hexdigest()[:12]
    written: dict[Item, dict[int, tuple[str, int]]] = {}
    all_files: list[str] = []
    try:
        for item in todo:
            token = uuid.uuid4().hex
            for level, tensor in sorted(wanted[item].items()):
                name = f"{key_dir}/{token[:2]}/{token}-k{level}{LATENT_SUFFIX}"
                all_files.append(name)
                written.setdefault(item, {})[level] = (name, _write_latent(tensor, name))
    except BaseException:
        _remove_files(all_files)
        raise
    return written, all_files


def _record_rows(
    model_key: str,
    todo: list[Item],
    written: dict[Item, dict[int, tuple[str, int]]],
    vectors: dict[str, np.ndarray],
    clip_vectors: dict[str, np.ndarray],
    origins: dict[Item, Provenance],
) -> tuple[dict[Item, int], list[str]]:
    """Under the writers' lock: create entries (or add the levels an entry lacks) and their level rows.
    Returns item -> entry id and the files written for levels an entry already held (unused)."""
    unused: list[str] = []
    ids: dict[Item, int] = {}
    now = timezone.now()
    with transaction.atomic():
        _lock()
        shas = {item: prompt_sha(item[1]) for item in todo}
        existing = {
            (e.tenant, e.prompt_sha): e
            for e in CacheEntry.objects.filter(
                model_key=model_key,
                tenant__in={tenant for tenant, _ in todo},
                prompt_sha__in=list(set(shas.values())),
            ).only("id", "tenant", "prompt_sha", "levels")
        }
        new_rows: list[CacheLevel] = []
        for item in todo:
            tenant, prompt = item
            files = written[item]
            entry = existing.get((tenant, shas[item]))
            if entry is None:
                origin = origins[item]
                entry = CacheEntry.objects.create(
                    prompt=prompt,
                    prompt_sha=shas[item],
                    embedding=_checked_vector(vectors[prompt]),
                    clip_embedding=clip_vectors.get(prompt),
                    model_key=model_key,
                    levels=sorted(files),
                    bytes=sum(nb for _, nb in files.values()),
                    tenant=tenant,
                    creator_id=origin.creator_id,
                    source_request_id=origin.source_request_id,
                )
                add = files
            else:
                add = {k: v for k, v in files.items() if k not in entry.levels}
                if prompt in clip_vectors:  # an entry cached before CLIP was switched on
                    CacheEntry.objects.filter(pk=entry.pk, clip_embedding__isnull=True).update(
                        clip_embedding=clip_vectors[prompt]
                    )
                unused += [name for k, (name, _) in files.items() if k in entry.levels]
                if add:
                    CacheEntry.objects.filter(pk=entry.pk).update(
                        levels=sorted(set(entry.levels) | set(add)),
                        bytes=F("bytes") + sum(nb for _, nb in add.values()),
                    )
            ids[item] = entry.pk
            new_rows += [
                CacheLevel(entry_id=entry.pk, level=k, nbytes=nb, file=name, last_used_at=now)
                for k, (name, nb) in add.items()
            ]
        CacheLevel.objects.bulk_create(new_rows)
    return ids, unused


# ----------------------------------------------------------------------------------------------------------
# Eviction and maintenance
# ----------------------------------------------------------------------------------------------------------


def used_bytes() -> int:
    return int(CacheEntry.objects.aggregate(total=Sum("bytes"))["total"] or 0)


def evict_to_budget(budget: int | None = None) -> int:
    """LCBFU: delete the lowest-score (entry, level) pairs until the latent files fit in ``budget``
    (default: the admin's byte budget). Returns the number of levels evicted. Inside an outer
    transaction it still works; the files then go when that transaction commits."""
    with transaction.atomic():
        _lock()
        if budget is None:
            budget = CacheConfig.current().byte_budget
        excess = used_bytes() - int(budget)
        if excess <= 0:
            return 0
        victims: list[tuple[int, int, int, str]] = []  # (level id, entry id, nbytes, file)
        freed = 0
        order = CacheLevel.objects.order_by("score", "last_used_at", "level", "id")
        for row in order.values_list("id", "entry_id", "nbytes", "file").iterator(chunk_size=512):
            victims.append(row)
            freed += row[2]
            if freed >= excess:
                break
        _delete_levels(victims)
    return len(victims)


def _delete_levels(victims: list[tuple[int, int, int, str]]) -> None:
    """Delete level rows, then fix or delete their entries; files go after commit. Caller holds the lock.
    All level rows are deleted before any entry row is touched (the lock order :func:`hit` uses)."""
    if not victims:
        return
    ids = [v[0] for v in victims]
    for at in range(0, len(ids), 10_000):
        CacheLevel.objects.filter(pk__in=ids[at : at + 10_000]).delete()
    entry_ids = {v[1] for v in victims}
    remaining: dict[int, list[tuple[int, int]]] = {e: [] for e in entry_ids}
    for entry_id, level, nbytes in CacheLevel.objects.filter(entry_id__in=entry_ids).values_list(
        "entry_id", "level", "nbytes"
    ):
        remaining[entry_id].append((level, nbytes))
    gone = [e for e, rows in remaining.items() if not rows]
    for at in range(0, len(gone), 10_000):
        CacheEntry.objects.filter(pk__in=gone[at : at + 10_000]).delete()
    CacheEntry.objects.bulk_update(
        [
            CacheEntry(pk=e, levels=sorted(lv for lv, _ in rows), bytes=sum(nb for _, nb in rows))
            for e, rows in remaining.items()
            if rows
        ],
        ["levels", "bytes"],
        batch_size=1000,
    )
    files = [v[3] for v in victims]
    transaction.on_commit(lambda: _remove_files(files))


def purge(entry_ids: Iterable[int] | None = None) -> tuple[int, int]:
    """Remove entries (all of them when ``entry_ids`` is None) with their files.
    Returns (entries removed, files removed after commit)."""
    with transaction.atomic():
        _lock()
        levels = CacheLevel.objects.all()
        entries = CacheEntry.objects.all()
        if entry_ids is not None:
            ids = list(entry_ids)
            levels, entries = levels.filter(entry_id__in=ids), entries.filter(pk__in=ids)
        victims = list(levels.values_list("id", "entry_id", "nbytes", "file"))
        _delete_levels(victims)
        n_entries = entries.count()  # entries without level rows (should not exist)
        entries.delete()
        return len({v[1] for v in victims}) + n_entries, len(victims)


def entries_matching(
    *,
    creator_id: int | None = None,
    tenant: str | None = None,
    before: dt.datetime | None = None,
    prompt_contains: str | None = None,
) -> QuerySet[CacheEntry]:
    """Entries matching every criterion given (None: not a criterion): made by this user, of this tenant,
    created before this instant, whose prompt contains this text (case-insensitive). For purging."""
    rows = CacheEntry.objects.all()
    if creator_id is not None:
        rows = rows.filter(creator_id=creator_id)
    if tenant is not None:
        rows = rows.filter(tenant=tenant)
    if before is not None:
        rows = rows.filter(created_at__lt=before)
    if prompt_contains:
        rows = rows.filter(prompt__icontains=prompt_contains)
    return rows


def purge_created_by(user_id: int) -> tuple[int, int]:
    """Purge every entry a user's generations made (account deletion): rows now, files after commit."""
    ids = list(CacheEntry.objects.filter(creator_id=user_id).values_list("pk", flat=True))
    return purge(ids) if ids else (0, 0)


def sweep_orphan_files(older_than_s: float = 3600.0) -> int:
    """Delete latent blobs that no committed row names (left by a process killed mid-insert or
    mid-eviction, or temp files of older versions), listing the latents storage (a directory walk, or the
    bucket's keys under its prefix). Blobs younger than ``older_than_s`` are spared: an insert in progress
    writes its blobs before its rows commit. Returns the number removed."""
    store = latent_store()
    cutoff = time.time() - older_than_s
    old = [name for name, modified in store.listing() if modified < cutoff]
    if not old:
        return 0
    named: set[str] = set()
    for at in range(0, len(old), 10_000):  # bounded query size, however many blobs are listed
        named.update(CacheLevel.objects.filter(file__in=old[at : at + 10_000]).values_list("file", flat=True))
    orphans = [name for name in old if name not in named]
    store.delete(orphans)
    return len(orphans)


def stats() -> dict[str, int]:
    """Entries, stored levels, bytes used and the byte budget."""
    return {
        "entries": CacheEntry.objects.count(),
        "levels": CacheLevel.objects.count(),
        "bytes": used_bytes(),
        "budget": CacheConfig.current().byte_budget,
    }
