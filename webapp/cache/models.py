"""The approximate cache's index (DESIGN §2, §6): one row per cached prompt, one row per cached level.

Latent blobs live in the latents storage — files under ``settings.T2I_CACHE_DIR`` or keys in an S3 bucket
(:mod:`webapp.cache.latent_storage`, docs/storage.md); rows only name them, by storage key, never by host
path. All writes that change which levels exist (insert, evict, purge) go through :mod:`webapp.cache.store`,
which serialises them with an advisory lock and removes blobs only after the row change has committed.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models
from pgvector.django import HnswIndex, VectorField

from scheduler.embeddings import EMBED_DIM
from webapp.singleton import SingletonModel

from .clip_embedder import CLIP_DIM

# The tables keep the names they had when these models lived in the `workers` app (moved by the
# state-only migration cache.0001): existing databases keep their rows, nothing is copied.


class CacheEntry(models.Model):
    """A cached prompt: its embedding (HNSW cosine index) and the levels whose latents are stored.

    ``levels``, ``hits``, ``score`` and ``bytes`` summarise the entry's :class:`CacheLevel` rows so a
    lookup reads one row: ``levels`` is kept equal to the set of its level rows, ``bytes`` to their sum,
    ``hits``/``score`` to their totals (LCBFU: a hit at level K adds K).
    """

    prompt = models.TextField()
    prompt_sha = models.CharField(
        max_length=64, editable=False, help_text="sha256 of the prompt: one entry per prompt, model key and tenant."
    )
    embedding = VectorField(dimensions=EMBED_DIM)
    # Filled when T2I_EMBEDDER=clip: the model's own CLIP text features (webapp/cache/clip_embedder.py).
    clip_embedding = VectorField(dimensions=CLIP_DIM, null=True, blank=True)
    model_key = models.CharField(
        max_length=200, db_index=True, help_text="model | scheduler | N | resolution (scheduler.cache_keys.model_key)."
    )
    levels = ArrayField(
        models.PositiveSmallIntegerField(), default=list, help_text="Cache levels K whose latents are stored."
    )
    hits = models.PositiveIntegerField(default=0)
    score = models.BigIntegerField(default=0, help_text="LCBFU score: Σ K over hits.")
    bytes = models.BigIntegerField(default=0, help_text="Size of its stored latents (bytes).")
    created_at = models.DateTimeField(auto_now_add=True)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    # Provenance (webapp/cache/tenants.py). The creator's entries go with their account (a pre_delete
    # receiver purges them, files included); SET_NULL only guards a deletion that bypasses signals.
    tenant = models.CharField(
        max_length=64,
        default="",
        blank=True,
        help_text="Who may reuse it under the tenant scope: 'g:<group id>', 'u:<user id>', 'public' "
        "(warm_cache) or '' (made before provenance was recorded: shared scope only).",
    )
    creator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="cache_entries",
        help_text="The user whose generation made it; empty for warm_cache.",
    )
    source_request = models.ForeignKey(
        "ledger.GenerationRequest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The generation whose latents made it.",
    )

    class Meta:
        db_table = "workers_cacheentry"
        verbose_name = "cache entry"
        verbose_name_plural = "cache entries"
        indexes = [
            # ef_construction 128 (pgvector's default is 64): at 100k clustered MiniLM-like vectors it lifts
            # recall@1 at ef_search 40 from 0.80 to 0.85 for ~1.5x build time (docs/cache.md).
            HnswIndex(
                name="cacheentry_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
            HnswIndex(
                name="cacheentry_clip_hnsw",
                fields=["clip_embedding"],
                m=16,
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
        ]
        constraints = [
            # Per tenant: a prompt two tenants both generated is two entries, so switching to the tenant
            # scope never leaves a tenant without its own. Its btree also serves the (key, tenant) filter.
            models.UniqueConstraint(
                fields=["model_key", "tenant", "prompt_sha"], name="cacheentry_unique_tenant_prompt"
            ),
        ]

    def __str__(self) -> str:
        # No prompt text: admin breadcrumbs, deletion summaries and the admin log show this to staff.
        return f"cache entry {self.pk} {self.levels}"


class CacheLevel(models.Model):
    """One stored latent: entry × level K. The unit of LCBFU eviction (score = hits × K)."""

    entry = models.ForeignKey(CacheEntry, on_delete=models.CASCADE, related_name="level_rows")
    level = models.PositiveSmallIntegerField()
    hits = models.PositiveIntegerField(default=0)
    score = models.BigIntegerField(default=0)
    nbytes = models.BigIntegerField()
    file = models.CharField(
        max_length=300,
        unique=True,
        help_text="Storage key of the latent: a path relative to T2I_CACHE_DIR, or under the bucket's "
        "latent-cache/ prefix (T2I_STORAGE=s3). Never a host path.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(help_text="Creation or last hit: tie-break among equal scores.")

    class Meta:
        db_table = "workers_cachelevel"
        constraints = [
            models.UniqueConstraint(fields=["entry", "level"], name="cachelevel_unique_level"),
        ]
        indexes = [
            # Eviction order: lowest score, then least recently used, then lower K.
            models.Index(fields=["score", "last_used_at", "level", "id"], name="cachelevel_evict_order"),
        ]

    def __str__(self) -> str:
        return f"entry {self.entry_id} K={self.level}"


class CacheConfig(SingletonModel):
    """Operator-tunable cache settings: one row, edited in the admin. The similarity → K* thresholds are
    scheduling settings and live on ``ServingConfig.thresholds`` (one place for the submit path, the
    controller and routing at submit)."""

    byte_budget = models.BigIntegerField(
        validators=[MinValueValidator(0)], help_text="Most bytes of latent files kept; LCBFU evicts beyond it."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workers_cacheconfig"
        verbose_name = "cache configuration"
        verbose_name_plural = "cache configuration"

    def __str__(self) -> str:
        return "Cache configuration"

    @classmethod
    def initial_values(cls) -> dict:
        return dict(byte_budget=settings.T2I_CACHE_BYTE_BUDGET)
