"""The pytest plugin keeps a test on the session's Redis: ``supervise_runner`` refuses a
Supervision configured with another server (the app was imported before the test could set
its settings), ``supervise_use_test_redis`` points one at the test server, and each test
starts with no keys under the Supervision's prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery

from celery_supervise import Supervision, actor
from celery_supervise.testing.pointing import same_server

#: Where a developer's own Redis would be (nothing listens on port 1: never connected).
ELSEWHERE = "redis://127.0.0.1:1/0"


@actor(name="plugin.counter", initial={"n": 0})
def counter(ctx: Any, state: dict[str, Any], message: int) -> dict[str, Any]:
    state["n"] += message
    return state


def _app(name: str, redis_url: str) -> Celery:
    app = Celery(name, broker=redis_url, set_as_current=False)
    app.conf.supervise_key_prefix = name
    return app


def test_a_supervision_on_another_redis_is_refused_with_the_fix(
    supervise_runner: Callable[[Any], Any], supervise_redis_url: str
) -> None:
    sup = Supervision(_app("plugin-elsewhere", ELSEWHERE))
    with pytest.raises(pytest.fail.Exception) as info:
        supervise_runner(sup)
    text = str(info.value)
    assert "plugin-elsewhere" in text and "127.0.0.1:1" in text and supervise_redis_url in text
    assert "CELERY_SUPERVISE_REDIS_URL" in text and "supervise_use_test_redis" in text


def test_use_test_redis_points_a_configured_supervision_at_the_server(
    supervise_runner: Callable[[Any], Any],
    supervise_use_test_redis: Callable[[Any], Any],
    redis_client: redis.Redis,
) -> None:
    app = _app("plugin-pointed", ELSEWHERE)
    app.set_current()
    sup = supervise_use_test_redis(Supervision(app))
    runner = supervise_runner(sup)
    counter.ref("a").send(2)
    runner.run()
    assert counter.ref("a").snapshot().state == {"n": 2}
    assert redis_client.exists(sup.ref("plugin.counter", "a").keys.meta)  # the test server


def test_same_server_ignores_the_database_and_loopback_names() -> None:
    assert same_server("redis://localhost:6379/0", "redis://127.0.0.1/3")
    assert not same_server("redis://127.0.0.1:6380/0", "redis://127.0.0.1:6379/0")
    assert same_server("unix:///tmp/r.sock?db=1", "unix:///tmp/r.sock")


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_starts_with_no_keys_under_the_prefix(
    supervise_runner: Callable[[Any], Any], supervise_redis_url: str, redis_client: redis.Redis,
    round_: int,
) -> None:
    """Run twice: the second run starts empty although the first left state behind."""
    app = _app("plugin-isolated", supervise_redis_url)
    app.set_current()
    redis_client.set("not-ours", "kept")  # a broker's keys on the same database stay
    runner = supervise_runner(Supervision(app))
    assert counter.ref("b").snapshot().version == 0
    counter.ref("b").send(1)
    runner.run()
    assert counter.ref("b").snapshot().state == {"n": 1}
    assert redis_client.get("not-ours") == b"kept"


def test_use_test_redis_drops_the_production_client_options(
    supervise_runner: Callable[[Any], Any],
    supervise_use_test_redis: Callable[[Any], Any],
) -> None:
    """A production app on TLS (``supervise_redis_options`` with a CA) pointed at the plain
    test server: the options were for the other server and would break this one."""
    app = _app("plugin-tls", "rediss://prod.example:6380/0")
    app.conf.supervise_redis_options = {"ssl_ca_certs": "/etc/prod-ca.pem", "password": "x"}
    app.set_current()
    sup = supervise_use_test_redis(Supervision(app))
    runner = supervise_runner(sup)
    counter.ref("b").send(3)
    runner.run()
    assert counter.ref("b").snapshot().state == {"n": 3}
