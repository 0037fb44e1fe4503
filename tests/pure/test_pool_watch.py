"""The pool-process watch (``child_lost.PoolWatch``) is connected in a worker's main process
only, when it starts (``worker_init`` of the app it was installed on): never by importing
the package or installing ``Supervision(app)``, which every ``celery`` command does.
(``tests/workers/test_child_lost_workers.py`` shows it at work in a real worker.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, signals

from celery_supervise import Supervision
from celery_supervise.child_lost import PoolWatch

WATCHED = (signals.task_received, signals.task_failure)


class Starting:
    """What ``worker_init`` is sent by (a WorkController): it names its app."""

    def __init__(self, app: Celery) -> None:
        self.app = app


def _watches(signal: Any) -> list[Any]:
    """The PoolWatch methods connected to ``signal`` (connected strongly: weak=False)."""
    return [r for _, r in signal.receivers if isinstance(getattr(r, "__self__", None), PoolWatch)]


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("poolwatch", broker="memory://", set_as_current=False)
    app.conf.supervise_redis_url = "redis://127.0.0.1:1/0"  # never connected to
    yield app
    for signal in WATCHED:
        for receiver in _watches(signal):
            signal.disconnect(receiver)


def test_connected_at_worker_init_of_its_own_app_only(app: Celery) -> None:
    before = [len(_watches(s)) for s in WATCHED]
    Supervision(app)
    assert [len(_watches(s)) for s in WATCHED] == before  # installing connects nothing
    other = Celery("other", broker="memory://", set_as_current=False)
    signals.worker_init.send(sender=Starting(other))  # another app's worker
    assert [len(_watches(s)) for s in WATCHED] == before
    signals.worker_init.send(sender=Starting(app))  # this app's worker starts
    assert [len(_watches(s)) for s in WATCHED] == [n + 1 for n in before]
