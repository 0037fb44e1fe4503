"""A worker or beat whose actor state would live on a Redis older than 6.2 does not start:
it logs ``RedisTooOld`` with the version found and the floor, and exits with code 1
(Celery swallows exceptions of signal handlers; a worker that cannot run one step must not
look healthy). The old server comes from ``make servers`` (tests/servers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_supervise.testing import CeleryProcess, RedisServer, wait_until
from tests import servers

TOO_OLD = (
    "CRITICAL/MainProcess] celery_supervise RedisTooOld: Redis 5.0.6 is too old for "
    "celery_supervise: it needs Redis 6.2 or later"
)


@pytest.fixture(scope="module")
def redis_50() -> Iterator[RedisServer]:
    with RedisServer(binary=servers.binary("redis-5.0")) as server:
        yield server


@pytest.mark.parametrize(
    "args",
    [
        ("worker", "-l", "info", "-c", "1", "--without-gossip", "--without-mingle",
         "--without-heartbeat"),
        ("beat", "-l", "info", "-s", "{tmp}/beat-schedule"),
    ],
    ids=["worker", "beat"],
)
def test_start_up_refuses_an_old_redis(
    args: tuple[str, ...], redis_50: RedisServer, supervise_redis_url: str, tmp_path: Path
) -> None:
    name, *rest = (a.format(tmp=tmp_path) for a in args)
    env = {"TEST_BROKER_URL": supervise_redis_url, "TEST_SUPERVISE_URL": redis_50.url}
    proc = CeleryProcess("tests.apps.old_redis", *rest, name=name, env=env, log_dir=tmp_path)
    proc.start()
    try:
        wait_until(lambda: proc.returncode is not None, timeout=60,
                   message=f"{name} kept running on Redis 5.0.6")
    finally:
        proc.kill()
    assert proc.returncode == 1, proc.log_tail()
    assert TOO_OLD in proc.log_text()
