"""``Actor``: a model with no table (``managed = False``; nothing ever queries it). Django
attaches permissions to a model, so this one exists to carry the permission the actions
need, ``celery_supervise.change_actor``, created by ``migrate`` like any other and granted
through users and groups in the admin. It has no default permissions: reading the pages
needs only staff status."""

from __future__ import annotations

from django.db import models

#: The permission an operator action needs, as ``user.has_perm`` takes it.
CHANGE_PERMISSION = "celery_supervise.change_actor"


class Actor(models.Model):  # type: ignore[misc]  # django has no type hints here
    class Meta:
        managed = False
        default_permissions = ()
        permissions = (
            ("change_actor", "Can resume, restart, requeue dead letters and roll back actors"),
        )
        verbose_name = "actor"
        verbose_name_plural = "actors"
