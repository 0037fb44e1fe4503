"""A Celery app with no celery_supervise in it, to test the process harness itself.

Broker and result backend are the Redis URL in ``$TEST_BROKER_URL``.
"""

from __future__ import annotations

import os

from celery import Celery

BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("plain_app", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
)


# An explicit name: the test process may import this module under another dotted path
# than the worker does.
@app.task(name="plain_app.add")  # type: ignore[untyped-decorator]  # celery has no hints
def add(x: int, y: int) -> int:
    return x + y
