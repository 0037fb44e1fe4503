"""A Celery app whose actor state lives on another server than its broker: the workers test
points ``TEST_SUPERVISE_URL`` at a Redis too old for celery_supervise."""

from __future__ import annotations

import os

from celery import Celery

from celery_supervise import Supervision

app = Celery("old_redis", broker=os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    supervise_redis_url=os.environ.get("TEST_SUPERVISE_URL", "redis://127.0.0.1:6379/0"),
)
supervision = Supervision(app)
