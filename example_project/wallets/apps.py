"""Django app config. Celery's ``autodiscover_tasks()`` imports ``wallets.tasks`` from here, and
celery_supervise imports ``wallets.actors``."""

from django.apps import AppConfig


class WalletsConfig(AppConfig):
    name = "example_project.wallets"
    label = "wallets"
    verbose_name = "Wallets"
