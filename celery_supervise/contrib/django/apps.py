"""The app config: label ``celery_supervise``, so the permission reads
``celery_supervise.change_actor``; shown in the admin as "Supervision"."""

from __future__ import annotations

from django.apps import AppConfig


class SupervisionConfig(AppConfig):  # type: ignore[misc]  # django has no type hints here
    name = "celery_supervise.contrib.django"
    label = "celery_supervise"
    verbose_name = "Supervision"
    default_auto_field = "django.db.models.AutoField"
