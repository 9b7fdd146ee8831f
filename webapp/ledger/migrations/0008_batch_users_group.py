"""The `batch-users` group (its members submit as `batch` by default) and, on an existing serving
configuration, a batch SLO of ten times its interactive SLO (the T2I_BATCH_SLO_SECONDS default)."""

from django.db import migrations
from django.db.models import F

GROUP = "batch-users"  # webapp.ledger.models.BATCH_USERS_GROUP at the time of writing


def forwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name=GROUP)
    apps.get_model("ledger", "ServingConfig").objects.update(batch_slo_seconds=10 * F("slo_seconds"))


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP, user__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("ledger", "0007_priority_and_fair_claims"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
