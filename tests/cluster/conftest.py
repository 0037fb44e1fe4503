"""Fixtures for the tests against a real Redis Cluster (three primaries, started by the
plugin's ``supervise_redis_cluster``): the bank app's actor state on the cluster, its broker
on the session's single server (kombu has no cluster transport)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celery_supervise.testing import LocalRunner
from celery_supervise.testing.pointing import clear_keys, use_redis
from celery_supervise.testing.topologies import LocalCluster
from tests.harness import CeleryProcess, start_beat, start_worker

BANK = "tests.apps.bank"


@pytest.fixture
def cluster(supervise_redis_cluster: LocalCluster) -> LocalCluster:
    supervise_redis_cluster.wait_ok()  # a test before may have moved slots
    return supervise_redis_cluster


@pytest.fixture
def cluster_env(bank_env: dict[str, str], cluster: LocalCluster) -> dict[str, str]:
    return {**bank_env, "TEST_STATE_URL": cluster.url}


@pytest.fixture
def cbank(bank: ModuleType, cluster: LocalCluster) -> Iterator[ModuleType]:
    """The bank app with its actor state on the cluster (emptied), in this process."""
    before = use_redis(bank.supervision, cluster.url)
    clear_keys(bank.supervision)
    yield bank
    bank.supervision.runtime.use_settings(before)


@pytest.fixture
def local(cbank: ModuleType) -> Iterator[LocalRunner]:
    runner = LocalRunner(cbank.supervision)
    yield runner
    runner.close()


@pytest.fixture
def cluster_workers(
    cbank: ModuleType, cluster_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., CeleryProcess]]:
    """Real ``celery worker`` processes whose actor state is on the cluster."""
    started: list[CeleryProcess] = []

    def start(name: str, concurrency: int = 2, **kw: Any) -> CeleryProcess:
        proc = start_worker(BANK, concurrency=concurrency, hostname=f"{name}@%h",
                            env=cluster_env, log_dir=tmp_path, **kw)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def cluster_beat(
    cbank: ModuleType, cluster_env: dict[str, str], tmp_path: Path
) -> Iterator[CeleryProcess]:
    proc = start_beat(BANK, env=cluster_env, schedule_dir=tmp_path / "beat")
    yield proc
    proc.kill()
