"""Settings of the Django site: a JSON API without database, sessions or templates.

Deployment values come from the environment: ``EXAMPLE_REDIS_URL`` (where actor state lives,
default ``redis://localhost:6379/0``), ``EXAMPLE_BROKER_URL`` (default: the same server) and
``EXAMPLE_KEY_PREFIX`` (default ``"wallets"``).
"""

import os

REDIS_URL = os.environ.get("EXAMPLE_REDIS_URL", "redis://localhost:6379/0")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

INSTALLED_APPS = [
    "example_project.wallets",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "example_project.django_site.urls"
WSGI_APPLICATION = "example_project.django_site.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# -- Celery (read by celery.py with namespace="CELERY") -----------------------------------------
CELERY_BROKER_URL = os.environ.get("EXAMPLE_BROKER_URL", REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# -- celery_supervise --------------------------------------------------------------------------
CELERY_SUPERVISE_REDIS_URL = REDIS_URL
CELERY_SUPERVISE_KEY_PREFIX = os.environ.get("EXAMPLE_KEY_PREFIX", "wallets")
CELERY_SUPERVISE_TICK_INTERVAL = 1.0
CELERY_SUPERVISE_LEASE_SECONDS = 5.0
CELERY_SUPERVISE_SUPERVISORS = {
    # Wallets, one actor per wallet id. A wallet stuck in a crash loop is quarantined alone
    # (state, mailbox and crash records kept for an operator); the others go on paying.
    "payments": {
        "strategy": "one_for_one",
        "intensity": 5,
        "period": 10,
        "max_consecutive_crashes": 5,
        "on_limit": "quarantine",
        "backoff": {"initial": 0.5, "factor": 2.0, "max": 30, "reset_after": 300},
    },
    # The audit ledger, a static child of its own supervisor: its restarts never count
    # against the wallets' budget, and if it crash-loops only it is quarantined.
    "audit": {
        "children": ["wallets.ledger:main"],
        "intensity": 3,
        "period": 10,
        "on_limit": "quarantine",
    },
}
