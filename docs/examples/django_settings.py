"""Django: celery_supervise settings sit beside the other CELERY_ settings.

With ``app.config_from_object("django.conf:settings", namespace="CELERY")`` in the
project's ``celery.py``, each ``supervise_*`` setting is ``CELERY_SUPERVISE_*``.
"""

# --8<-- [start:settings]
CELERY_BROKER_URL = "redis://localhost:6379/0"
CELERY_SUPERVISE_REDIS_URL = "redis://localhost:6379/1"  # default: the broker, if Redis
CELERY_SUPERVISE_TICK_INTERVAL = 1.0
CELERY_SUPERVISE_LEASE_SECONDS = 5.0
CELERY_SUPERVISE_SUPERVISORS = {
    "billing": {"intensity": 5, "period": 10, "max_consecutive_crashes": 5},
}
# --8<-- [end:settings]
