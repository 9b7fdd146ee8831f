"""The cache models now live in `webapp.cache` (see cache.0001): remove them from this app's state.

State only: the tables stay, owned by the cache app from here on.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("workers", "0003_clip_embedding"),
        ("cache", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="CacheLevel"),
                migrations.DeleteModel(name="CacheEntry"),
                migrations.DeleteModel(name="CacheConfig"),
            ],
            database_operations=[],
        ),
    ]
