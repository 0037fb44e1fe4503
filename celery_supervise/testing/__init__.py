"""Test support for projects using celery_supervise: a throwaway Redis server, real Celery
processes, an in-process runner, and pytest fixtures.

This package is registered as a pytest plugin (``pytest11`` entry point), so pytest imports it
in every test run of every project that has celery_supervise installed. Importing it stays
cheap: no server is started, no connection opened, no signal or exit handler registered, and
neither ``redis`` nor the celery_supervise runtime is imported until something needs them.

Fixtures (available to any test once celery_supervise is installed):

``supervise_redis_server``
    Session-scoped :class:`RedisServer` on a free port, or ``None`` when the environment
    variable ``CELERY_SUPERVISE_TEST_REDIS_URL`` names a server to use instead.
``supervise_redis_url``
    Session-scoped URL of that server (``redis://127.0.0.1:PORT/0``) or of the one named by
    ``CELERY_SUPERVISE_TEST_REDIS_URL``; the server is checked to answer ``PING``.
``supervise_redis_cluster``
    Session-scoped :class:`~celery_supervise.testing.topologies.LocalCluster`: three
    primaries of a real Redis Cluster on free ports (``.url`` is a ``redis-cluster://`` URL).
    ``$CELERY_SUPERVISE_TEST_REDIS_URL`` may itself be a ``redis-cluster://`` URL: the
    fixtures above then give that cluster, and ``supervise_runner`` runs against it.
``supervise_runner``
    Factory: ``supervise_runner(supervision)`` attaches a :class:`LocalRunner` that runs the
    actor steps and ticks celery_supervise would publish, in the test's own process. It fails
    the test if the Supervision's Redis is not the session's server, and deletes the keys
    under its key prefix on the first attach of each test (state isolated per test).
``supervise_use_test_redis``
    Factory: ``supervise_use_test_redis(supervision)`` points an already-configured
    Supervision at the session's server for one test.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .processes import CeleryProcess, start_beat, start_worker, wait_until
from .redis_server import (
    BINARY_ENV,
    REDIS_URL_ENV,
    SERVER_ENV,
    RedisServer,
    env_redis_url,
    find_redis_server_binary,
)

__all__ = [
    "BINARY_ENV",
    "REDIS_URL_ENV",
    "SERVER_ENV",
    "CeleryProcess",
    "LocalRunner",
    "RedisServer",
    "env_redis_url",
    "find_redis_server_binary",
    "start_beat",
    "start_worker",
    "supervise_redis_cluster",
    "supervise_redis_server",
    "supervise_redis_url",
    "supervise_runner",
    "supervise_use_test_redis",
    "wait_until",
]


# ---------------------------------------------------------------------------------------------
# pytest fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def supervise_redis_server() -> Iterator[RedisServer | None]:
    """A Redis server for the whole test session.

    ``None`` when ``$CELERY_SUPERVISE_TEST_REDIS_URL`` names a server to use instead.
    """
    if env_redis_url() is not None:
        yield None
        return
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def supervise_redis_cluster() -> Iterator[Any]:
    """A Redis Cluster of three primaries for the whole test session (``LocalCluster``)."""
    from .topologies import LocalCluster

    with LocalCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def supervise_redis_url(supervise_redis_server: RedisServer | None) -> str:
    """URL of the session's Redis server; fails (never skips) if that server does not answer."""
    if supervise_redis_server is not None:
        return supervise_redis_server.url
    url = env_redis_url()
    assert url is not None
    import redis  # here: pytest loads this plugin in every run, even without these fixtures

    from celery_supervise.topology import connect

    client = None
    try:  # a redis-cluster:// URL too: the suite then runs against that cluster
        client = connect(url, socket_connect_timeout=2.0, socket_timeout=2.0)
        client.ping()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise RuntimeError(f"${REDIS_URL_ENV}={url!r} does not answer PING: {exc}") from exc
    finally:
        if client is not None:
            client.close()
    return url


# ---------------------------------------------------------------------------------------------
# Fixtures built on the celery_supervise runtime (apps, workers, actor refs) go below. Like the
# ones above they must import the runtime inside the fixture body, never at module level.
# ---------------------------------------------------------------------------------------------


class _Queued(tuple):  # type: ignore[type-arg]
    """A queued task: (name, args, kwargs), with the task id it was published with."""

    task_id: str | None

    def __new__(
        cls, name: str, args: Any, kwargs: Any, task_id: str | None = None
    ) -> _Queued:
        item = super().__new__(cls, (name, tuple(args), dict(kwargs)))
        item.task_id = task_id
        return item


class LocalRunner:
    """Drive actors and the supervisor tick in this process, with no worker and no beat.

    While a runner is attached, every task celery_supervise would publish (actor runs,
    isolated subtasks) is queued here instead of going to the broker; ``run()`` executes
    them with ``Task.apply`` in this process, and ``tick()`` runs one supervisor tick. The
    Redis side is the real one, so a test sees exactly what a deployment would store.

    Example::

        def test_deposit(supervise_runner):
            runner = supervise_runner(supervision)   # your Supervision(app)
            account.ref("a").send({"deposit": 5})
            runner.run()
            assert account.ref("a").snapshot().state == {"balance": 5}
    """

    def __init__(self, supervision: Any) -> None:
        self.supervision = supervision
        self.queue: collections.deque[tuple[str, tuple[Any, ...], dict[str, Any]]] = (
            collections.deque()
        )
        self.failures: list[tuple[str, tuple[Any, ...], BaseException]] = []
        #: Tasks published with a ``countdown`` (a run a worker must not step, published
        #: again later), as (due on ``time.monotonic()``, name, args, kwargs): ``run()``
        #: takes them once due, as a worker would; ``settle()`` waits for them.
        self.later: list[tuple[float, str, tuple[Any, ...], dict[str, Any]]] = []
        supervision.dispatcher = self._enqueue

    def _enqueue(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        countdown = float(options.get("countdown") or 0)
        if countdown > 0:
            self.later.append((time.monotonic() + countdown, name, tuple(args), dict(kwargs)))
        else:
            self.queue.append(_Queued(name, args, kwargs, options.get("task_id")))

    def _take_due(self) -> None:
        now = time.monotonic()
        self.queue.extend(_Queued(name, args, kwargs) for due, name, args, kwargs in self.later
                          if due <= now)  # fmt: skip
        self.later = [item for item in self.later if item[0] > now]

    def run(self, max_runs: int = 10_000) -> int:
        """Run queued tasks (and those they queue) until none is left; return how many ran.
        A task published with a countdown runs once it is due (``later``), not before.
        A task that raised (a crashed step shows as ``StepCrashed``) is kept in ``failures``."""
        ran = 0
        tasks = self.supervision.app.tasks
        self._take_due()
        while self.queue and ran < max_runs:
            queued = self.queue.popleft()
            name, args, kwargs = queued
            task_id = getattr(queued, "task_id", None)  # a run the ready set names by its id
            result = tasks[name].apply(args=args, kwargs=kwargs, task_id=task_id)
            if result.failed():
                self.failures.append((name, args, result.result))
            ran += 1
        return ran

    def tick(self) -> dict[str, Any]:
        """One supervisor tick, then the runs it scheduled."""
        # Imported here: pytest loads this plugin in every run; the runtime only when used.
        from celery_supervise.tick import run_tick

        summary: dict[str, Any] = run_tick(self.supervision.runtime)
        self.run()
        return summary

    def settle(
        self, seconds: float = 5.0, interval: float = 0.05,
        until: Callable[[], bool] | None = None,
    ) -> bool:
        """Run and tick for ``seconds`` (backoffs and timers come due in real time).

        With ``until``, stop as soon as ``until()`` holds after a round of runs and a tick,
        and treat ``seconds`` as the most to wait: return whether it held. A test that waits
        for an outcome this way does not fail on a loaded machine, where a fixed time holds
        fewer ticks. Without it, run and tick for the whole time and return True."""
        deadline = time.monotonic() + seconds
        while True:
            self.run()
            self.tick()
            if until is not None and until():
                return True
            if time.monotonic() >= deadline:
                return until is None
            time.sleep(interval)

    def close(self) -> None:
        self.supervision.dispatcher = None


@pytest.fixture
def supervise_runner(supervise_redis_url: str) -> Iterator[Callable[[Any], LocalRunner]]:
    """Factory: ``supervise_runner(supervision)`` attaches a ``LocalRunner`` for this test.

    The Supervision must use this session's test server (else the test fails, saying how to
    fix it), and its state starts empty: the first attach in a test deletes every key under
    its key prefix."""
    from .pointing import clear_keys, require_test_server

    runners: list[LocalRunner] = []
    cleared: set[int] = set()

    def attach(supervision: Any) -> LocalRunner:
        require_test_server(supervision, supervise_redis_url)
        if id(supervision) not in cleared:
            clear_keys(supervision)
            cleared.add(id(supervision))
        runner = LocalRunner(supervision)
        runners.append(runner)
        return runner

    yield attach
    for runner in runners:
        runner.close()


@pytest.fixture
def supervise_use_test_redis(supervise_redis_url: str) -> Iterator[Callable[[Any], Any]]:
    """Factory: ``supervise_use_test_redis(supervision)`` points a Supervision configured
    with another Redis (its app imported at a test module's top) at this session's server,
    in this process, until the test ends. Workers started by the test read their own
    settings: give them the test server's URL in their environment."""
    from .pointing import use_redis

    restore: list[tuple[Any, Any]] = []

    def point(supervision: Any) -> Any:
        restore.append((supervision, use_redis(supervision, supervise_redis_url)))
        return supervision

    yield point
    for supervision, settings in reversed(restore):
        supervision.runtime.use_settings(settings)
