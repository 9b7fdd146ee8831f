"""API tokens moved from DRF's authtoken (keys stored in plain text) to django-rest-knox (digests only).

An existing database still holds the old table with every user's working key in clear: drop it, and
forget its migrations so that re-adding the app would create it afresh. New tokens: /tokens/ or
/api/v1/tokens/ (`make run` prints a new demo token)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("knox", "0009_extend_authtoken_field")]

    operations = [
        migrations.RunSQL(
            "DROP TABLE IF EXISTS authtoken_token CASCADE; DELETE FROM django_migrations WHERE app = 'authtoken';",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
