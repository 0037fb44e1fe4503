"""``supervise doctor`` on a running deployment: a real worker consuming the actor queue, a
real beat sending the tick (then a second beat), and Redis set up as the docs ask. Every
check is ok and the command exits 0; a second beat is named by its pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from tests.harness import PROJECT_ROOT, CeleryProcess, start_beat, wait_until


def _doctor(bank_env: dict[str, str], **more: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **bank_env, "PYTHONPATH": str(PROJECT_ROOT), **more}
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", "doctor",
         "--json", "--timeout", "2"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _checks(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


@pytest.fixture
def durable(redis_client: redis.Redis) -> Iterator[None]:
    """The session's server with AOF on and appendfsync always, for this test only."""
    before = {**redis_client.config_get("appendonly"), **redis_client.config_get("appendfsync")}
    redis_client.config_set("appendonly", "yes")
    redis_client.config_set("appendfsync", "always")
    yield
    for name, value in before.items():
        redis_client.config_set(name, value)


def test_a_running_deployment_is_ok_and_a_second_beat_is_named(
    bank: ModuleType, bank_env: dict[str, str], workers: Any, beat: CeleryProcess,
    durable: None, redis_client: redis.Redis, tmp_path: Path,
) -> None:  # fmt: skip
    workers("w1", concurrency=1)
    ref = bank.account.ref("doc")
    ref.send({"add": 5})  # a step on the worker loads the scripts
    wait_until(lambda: ref.snapshot().version == 1, 30, message="the worker ran no step")
    senders = bank.supervision.keyspace.tick_senders
    wait_until(lambda: redis_client.zcard(senders), 30, message="beat sent no tick")

    proc = _doctor(bank_env)
    checks = _checks(proc)
    assert proc.returncode == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"}, checks
    assert checks["workers"]["details"]["consumers"]["celery"] == [
        f"w1@{os.uname().nodename}"
    ], checks["workers"]
    assert list(checks["tick"]["details"]["senders"]) == [
        f"gen{beat.pid}@{os.uname().nodename}"
    ], checks["tick"]  # Celery's origin header of the beat process
    assert checks["memory"]["details"]["types"]["bank.account"]["actors"] == 1

    # Routed elsewhere (as the docs suggest for the tick), a queue no worker consumes.
    proc = _doctor(bank_env, TEST_TICK_QUEUE="supervise")
    workers_check = _checks(proc)["workers"]
    assert proc.returncode == 1 and workers_check["status"] == "problem", workers_check
    assert "no worker consumes supervise (celery_supervise.tick)" in workers_check["message"]
    assert "-Q supervise" in workers_check["message"]

    second = start_beat("tests.apps.bank", env=bank_env, schedule_dir=tmp_path / "beat2")
    try:
        wait_until(lambda: redis_client.zcard(senders) == 2, 30, message="no second sender")
        proc = _doctor(bank_env)
    finally:
        second.kill()
    assert proc.returncode == 0, proc.stdout  # a warning alone
    tick = _checks(proc)["tick"]
    assert tick["status"] == "warn", tick
    assert f"gen{second.pid}@" in tick["message"] and "run exactly one beat" in tick["message"]
