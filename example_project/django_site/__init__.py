"""The Django site. As in Celery's Django guide, importing the project loads its Celery app."""

from .celery import app as celery_app

__all__ = ("celery_app",)
