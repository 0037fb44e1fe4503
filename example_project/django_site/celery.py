"""The Celery app of the Django site, set up as Celery's "First steps with Django" shows.

Everything is configured by ``CELERY_*`` Django settings, celery_supervise's included
(``CELERY_SUPERVISE_*``); ``Supervision(app)`` is the only line celery_supervise adds.
Run a worker with ``celery -A example_project.django_site worker``.
"""

import os

from celery import Celery

from celery_supervise import Supervision

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.django_site.settings")

app = Celery("django_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
supervision = Supervision(app)
