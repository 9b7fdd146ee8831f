from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0012_gallery_favourite_and_deleted"),
    ]

    operations = [
        migrations.AddField(
            model_name="generationrequest",
            name="measured_adherence",
            field=models.FloatField(
                blank=True,
                help_text="Demo model: share of the prompt's 4 attributes the scorer reads back.",
                null=True,
            ),
        ),
    ]
