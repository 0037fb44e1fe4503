"""``Actor``, unmanaged (no table): the carrier of ``celery_supervise.change_actor``."""

from django.db import migrations, models


class Migration(migrations.Migration):  # type: ignore[misc]  # django has no type hints here
    initial = True

    dependencies = ()

    operations = (
        migrations.CreateModel(
            name="Actor",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
            ],
            options={
                "verbose_name": "actor",
                "verbose_name_plural": "actors",
                "permissions": (
                    ("change_actor",
                     "Can resume, restart, requeue dead letters and roll back actors"),
                ),
                "managed": False,
                "default_permissions": (),
            },
        ),
    )
