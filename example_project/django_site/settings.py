"""Settings of the Django site: a JSON API, and the Django admin with celery_supervise's
"Supervision" section (``celery_supervise.contrib.django``) at ``/admin/``.

Deployment values come from the environment: ``EXAMPLE_REDIS_URL`` (where actor state lives,
default ``redis://localhost:6379/0``), ``EXAMPLE_BROKER_URL`` (default: the same server),
``EXAMPLE_KEY_PREFIX`` (default ``"wallets"``) and ``EXAMPLE_DJANGO_DB`` (the admin's users,
an SQLite file, default ``example_project/db.sqlite3``; actor state never goes there).
"""

import os
from pathlib import Path

REDIS_URL = os.environ.get("EXAMPLE_REDIS_URL", "redis://localhost:6379/0")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

# --8<-- [start:installed_apps]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # The admin's "Supervision" section: the tree, actors, and the operator actions.
    "celery_supervise.contrib.django",
    "example_project.wallets",
]
# --8<-- [end:installed_apps]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.django_site.urls"
WSGI_APPLICATION = "example_project.django_site.wsgi.application"
# Users, groups and permissions of the admin (`python example_project/manage.py migrate`,
# then `createsuperuser`). The wallets themselves live in Redis, never here.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DJANGO_DB", str(Path(__file__).resolve().parent.parent
                                                       / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
STATIC_URL = "static/"
USE_TZ = True
# --8<-- [start:admin_app]
# Whose Supervision the admin's pages show (without it: Celery's current app).
SUPERVISION_ADMIN_CELERY_APP = "example_project.django_site.celery.app"
# --8<-- [end:admin_app]

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
