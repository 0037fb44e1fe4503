"""Fixtures shared by the integration tests: one Redis server per session (ours, started
here, or the one ``$CELERY_SUPERVISE_TEST_REDIS_URL`` names), flushed between tests, and
real ``celery worker`` / ``celery beat`` processes for the test app ``tests.apps.bank``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from tests.harness import CeleryProcess, start_beat, start_worker

BANK = "tests.apps.bank"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long twins (``long_profile``: the state machine's long profile, the chaos runs at
    full size) run in ``make faults`` (``-m faults``) only: in a plain run their bounded
    twins cover the same faults, in a fraction of the time."""
    if "faults" in (config.option.markexpr or ""):
        return
    long_runs = [item for item in items if item.get_closest_marker("long_profile")]
    if long_runs:
        config.hook.pytest_deselected(items=long_runs)
        items[:] = [item for item in items if item not in long_runs]


@pytest.fixture(scope="session")
def bank_env(supervise_redis_url: str) -> dict[str, str]:
    """Environment for the bank app, in this process and in its workers."""
    env = {
        "TEST_BROKER_URL": supervise_redis_url,
        "TEST_KEY_PREFIX": "t",
        "TEST_LEASE": "2",
        "TEST_TICK": "0.5",
    }
    os.environ.update(env)
    return env


@pytest.fixture
def redis_client(supervise_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(supervise_redis_url)
    yield client
    client.close()


@pytest.fixture
def bank(bank_env: dict[str, str], redis_client: redis.Redis) -> ModuleType:
    """The bank test app, imported in this process, with an empty Redis database."""
    redis_client.flushdb()
    from tests.apps import bank as module

    module.app.set_current()  # actor refs follow the current app, like @shared_task
    return module


@pytest.fixture
def workers(
    bank: ModuleType, bank_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., CeleryProcess]]:
    """Start real ``celery worker`` processes: ``workers(name, concurrency=2)``."""
    started: list[CeleryProcess] = []

    def start(name: str, concurrency: int = 2, **kw: Any) -> CeleryProcess:
        proc = start_worker(
            BANK,
            concurrency=concurrency,
            hostname=f"{name}@%h",
            env=bank_env,
            log_dir=tmp_path,
            **kw,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def beat(bank: ModuleType, bank_env: dict[str, str], tmp_path: Path) -> Iterator[CeleryProcess]:
    """A real ``celery beat`` running the supervisor tick every 0.5 s."""
    proc = start_beat(BANK, env=bank_env, schedule_dir=tmp_path / "beat")
    yield proc
    proc.kill()
