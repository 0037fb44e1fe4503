"""Tests written with Celery's fixtures: the steps run on ``celery_worker``, state in Redis."""

# --8<-- [start:tests]
import time

import pytest

from tally import counter


def wait_for(predicate, timeout=10.0, tick=None):
    """Until ``predicate()`` holds; with ``tick`` (the app), send the supervisor tick as beat
    would (no beat runs in the test)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        if tick is not None:
            tick.send_task("celery_supervise.tick")
        time.sleep(0.1)


def test_the_worker_runs_the_steps(celery_worker):
    ref = counter.ref("a")
    ref.send({"add": 2})
    ref.send({"add": 3})
    assert ref.ask({"ask": True}, timeout=10) == 5  # answered by the step on the worker
    assert ref.snapshot().version == 3


def test_each_test_starts_with_no_actors(supervision):  # no worker needed to read
    assert counter.ref("a").snapshot().version == 0


def test_a_crash_is_restarted_by_the_ticks(celery_app, celery_worker):
    ref = counter.ref("b")
    ref.send({"boom": True})
    wait_for(lambda: ref.snapshot().dead_letters == 1)  # max_attempts=1: dead-lettered
    wait_for(lambda: ref.snapshot().status == "idle", tick=celery_app)  # restarted
    ref.send({"add": 1})
    assert ref.ask({"ask": True}, timeout=10) == 1


@pytest.mark.celery(supervise_tick_interval=0.25)  # Celery's marker: config for one test
def test_the_marker_configures_celery_supervise_too(supervision):
    assert supervision.settings.tick_interval == 0.25
# --8<-- [end:tests]
