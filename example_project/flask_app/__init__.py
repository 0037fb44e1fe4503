"""The Flask app, built by an application factory as Flask's Celery guide shows.

Celery is configured by the app's ``CELERY`` dict, celery_supervise's ``supervise_*`` keys
included, and its tasks run inside the app context (``FlaskTask``); ``Supervision(celery_app)``
is the only line celery_supervise adds. Run a worker with
``celery -A example_project.flask_app.make_celery worker``.

The operator's pages (``celery_supervise.contrib.flask``) are served at ``/supervision/``,
behind the login of ``operators.py``.

Deployment values come from the environment: ``EXAMPLE_REDIS_URL`` (where actor state lives,
default ``redis://localhost:6379/0``), ``EXAMPLE_BROKER_URL`` (default: the same server),
``EXAMPLE_KEY_PREFIX`` (default ``"wallets"``) and ``FLASK_SECRET_KEY`` (signs the session,
which holds the pages' CSRF token).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery, Task
from flask import Flask

from celery_supervise import Supervision
from celery_supervise.contrib.flask import blueprint as supervision_pages

__all__ = ["celery_init_app", "create_app"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    redis_url = os.environ.get("EXAMPLE_REDIS_URL", "redis://localhost:6379/0")
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("FLASK_SECRET_KEY", "example-project-not-a-secret"),
        CELERY={
            "broker_url": os.environ.get("EXAMPLE_BROKER_URL", redis_url),
            "broker_connection_retry_on_startup": True,
            "task_ignore_result": True,
            "worker_prefetch_multiplier": 1,
            # celery_supervise
            "supervise_redis_url": redis_url,
            "supervise_key_prefix": os.environ.get("EXAMPLE_KEY_PREFIX", "wallets"),
            "supervise_tick_interval": 1.0,
            "supervise_lease_seconds": 5.0,
            "supervise_supervisors": {
                # Wallets, one actor per wallet id. A wallet stuck in a crash loop is
                # quarantined alone (state, mailbox and crash records kept for an
                # operator); the others go on paying.
                "payments": {
                    "strategy": "one_for_one",
                    "intensity": 5,
                    "period": 10,
                    "max_consecutive_crashes": 5,
                    "on_limit": "quarantine",
                    "backoff": {"initial": 0.5, "factor": 2.0, "max": 30, "reset_after": 300},
                },
                # The audit ledger, a static child of its own supervisor: its restarts never
                # count against the wallets' budget; if it crash-loops only it is quarantined.
                "audit": {
                    "children": ["wallets.ledger:main"],
                    "intensity": 3,
                    "period": 10,
                    "on_limit": "quarantine",
                },
            },
        },
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    celery_app = celery_init_app(app)

    from .operators import authorize
    from .routes import bp

    app.register_blueprint(bp)
    # --8<-- [start:blueprint]
    # The supervision tree, actors and the operator actions, for the users operators.py knows.
    pages = supervision_pages(Supervision(celery_app), authorize=authorize)
    app.register_blueprint(pages, url_prefix="/supervision")
    # --8<-- [end:blueprint]
    return app


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    Supervision(celery_app)
    app.extensions["celery"] = celery_app
    return celery_app
