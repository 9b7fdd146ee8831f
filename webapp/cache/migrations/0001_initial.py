"""The cache models move from the `workers` app to `webapp.cache` without touching the database.

State only: the tables (workers_cacheentry, workers_cachelevel, workers_cacheconfig), their HNSW
indexes and constraints stay exactly as workers.0001–0003 made them, so a database made before the
move keeps its rows. workers.0004 removes the models from the workers app's state. The content
types are relabelled so admin permissions granted on the old models still apply.
"""

import django.contrib.postgres.fields
import django.core.validators
import django.db.models.deletion
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations, models


MODELS = ["cacheconfig", "cacheentry", "cachelevel"]


def relabel_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="workers", model__in=MODELS).update(app_label="cache")


def unrelabel_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="cache", model__in=MODELS).update(app_label="workers")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("workers", "0003_clip_embedding"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    state_operations = [
        migrations.CreateModel(
            name='CacheConfig',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('byte_budget', models.BigIntegerField(help_text='Most bytes of latent files kept; LCBFU evicts beyond it.', validators=[django.core.validators.MinValueValidator(0)])),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'verbose_name': 'cache configuration',
                'verbose_name_plural': 'cache configuration',
                'db_table': 'workers_cacheconfig',
            },
        ),
        migrations.CreateModel(
            name='CacheEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('prompt', models.TextField()),
                ('prompt_sha', models.CharField(editable=False, help_text='sha256 of the prompt: one entry per prompt and model key.', max_length=64)),
                ('embedding', pgvector.django.vector.VectorField(dimensions=384)),
                ('clip_embedding', pgvector.django.vector.VectorField(blank=True, dimensions=1280, null=True)),
                ('model_key', models.CharField(db_index=True, help_text='model | scheduler | N | resolution (scheduler.cache_keys.model_key).', max_length=200)),
                ('levels', django.contrib.postgres.fields.ArrayField(base_field=models.PositiveSmallIntegerField(), default=list, help_text='Cache levels K whose latents are stored.', size=None)),
                ('hits', models.PositiveIntegerField(default=0)),
                ('score', models.BigIntegerField(default=0, help_text='LCBFU score: Σ K over hits.')),
                ('bytes', models.BigIntegerField(default=0, help_text='Size of its latent files on disk.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('last_hit_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'verbose_name': 'cache entry',
                'verbose_name_plural': 'cache entries',
                'db_table': 'workers_cacheentry',
                'indexes': [pgvector.django.indexes.HnswIndex(ef_construction=128, fields=['embedding'], m=16, name='cacheentry_embedding_hnsw', opclasses=['vector_cosine_ops']), pgvector.django.indexes.HnswIndex(ef_construction=128, fields=['clip_embedding'], m=16, name='cacheentry_clip_hnsw', opclasses=['vector_cosine_ops'])],
                'constraints': [models.UniqueConstraint(fields=('model_key', 'prompt_sha'), name='cacheentry_unique_prompt')],
            },
        ),
        migrations.CreateModel(
            name='CacheLevel',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('level', models.PositiveSmallIntegerField()),
                ('hits', models.PositiveIntegerField(default=0)),
                ('score', models.BigIntegerField(default=0)),
                ('nbytes', models.BigIntegerField()),
                ('file', models.CharField(help_text='Path relative to T2I_CACHE_DIR.', max_length=300, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('last_used_at', models.DateTimeField(help_text='Creation or last hit: tie-break among equal scores.')),
                ('entry', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='level_rows', to='cache.cacheentry')),
            ],
            options={
                'db_table': 'workers_cachelevel',
                'indexes': [models.Index(fields=['score', 'last_used_at', 'level', 'id'], name='cachelevel_evict_order')],
                'constraints': [models.UniqueConstraint(fields=('entry', 'level'), name='cachelevel_unique_level')],
            },
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=state_operations, database_operations=[]),
        migrations.RunPython(relabel_content_types, unrelabel_content_types),
    ]
