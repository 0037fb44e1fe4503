"""A suite built on Celery's own pytest fixtures (``celery.contrib.pytest``), driving actors
through ``celery_worker``, the worker Celery runs in a thread of the test process.
``tests/docs/test_celery_fixtures.py`` runs it with ``pytest`` in a subprocess."""

# --8<-- [start:conftest]
import uuid

import pytest

# The in-thread worker of celery.contrib.pytest. pytest-celery 1.x, when installed, names
# its Docker worker `celery_worker` too; a fixture in conftest.py wins over both plugins.
from celery.contrib.pytest import celery_worker  # noqa: F401

from celery_supervise import Supervision


@pytest.fixture
def celery_config(supervise_redis_url):
    """Celery's test app (memory broker) with celery_supervise on the session's Redis; a key
    prefix of its own per test, so each test starts with no actors."""
    return {
        "supervise_redis_url": supervise_redis_url,
        "supervise_key_prefix": f"test-{uuid.uuid4().hex}",
    }


@pytest.fixture
def celery_app(celery_app):
    """Celery's test app, with celery_supervise installed before the worker starts."""
    Supervision(celery_app)
    celery_app.set_current()  # actor refs follow the current app, like @shared_task
    return celery_app


@pytest.fixture
def supervision(celery_app):
    return Supervision(celery_app)
# --8<-- [end:conftest]
