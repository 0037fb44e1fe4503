"""Operator actions while a step runs, with a real worker (SPEC 6.2, decisions: operator
actions): ``stop``, ``restart --reset`` (the CLI) and ``rollback`` each fence off the step in
flight, so its commit is refused (``lease_lost`` in the worker's log) and the state and
version are what the operator action made; the message it was handling stays in the mailbox
and is handled again later, once. A rollback to a version that no longer passes
``validate`` raises ``StateRejected`` and changes nothing, not even the step in flight."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import StateRejected
from tests.harness import PROJECT_ROOT, wait_until

#: The longest the step in flight waits for the test to release it (``_release``): the
#: operator acts while it waits, however slowly a loaded machine starts the CLI.
STEP = 60.0


def _start_long_step(ref: Any, redis_client: redis.Redis, add: int) -> None:
    redis_client.delete(f"capped:started:{ref.key}", f"capped:release:{ref.key}")
    ref.send({"add": add, "hold": STEP})
    wait_until(lambda: redis_client.get(f"capped:started:{ref.key}"), 30,
               message="the long step never started")


def _release(ref: Any, redis_client: redis.Redis) -> None:
    """Let the step in flight return (and try to commit); later steps are not held."""
    redis_client.set(f"capped:release:{ref.key}", 1)


def _commit(ref: Any, add: int, version: int) -> None:
    ref.send({"add": add})
    wait_until(lambda: ref.snapshot().version == version, 30, message=f"v{version} missing")


def _refused(worker: Any, key: str) -> None:
    wait_until(lambda: f"lease_lost actor=tree.capped key={key} " in worker.log_text(),
               30, message="the fenced-off step never tried (and failed) to commit")


def test_stop_during_a_step_refuses_its_commit(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    worker = workers("w1", concurrency=1)
    ref = bank.supervision.ref("tree.capped", "stop")
    _commit(ref, 1, 1)
    _start_long_step(ref, redis_client, 5)
    ref.stop()
    _release(ref, redis_client)
    _refused(worker, "stop")
    snap = ref.snapshot()
    assert (snap.status, snap.version, snap.state, snap.pending) == ("stopped", 1,
                                                                     {"balance": 1}, 1)
    ref.resume()  # the message the stop interrupted is handled now, once
    wait_until(lambda: ref.snapshot().version == 2, 30, message="not handled after resume")
    assert ref.snapshot().state == {"balance": 6} and ref.snapshot().pending == 0
    assert [h.version for h in ref.history()] == [2, 1]


def test_cli_restart_reset_during_a_step_refuses_its_commit(
    bank: ModuleType, bank_env: dict[str, str], workers: Any, beat: Any,
    redis_client: redis.Redis
) -> None:
    worker = workers("w1", concurrency=2)
    ref = bank.supervision.ref("tree.capped", "reset")
    _commit(ref, 1, 1)
    _start_long_step(ref, redis_client, 5)
    env = {**os.environ, **bank_env, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", "restart",
         "tree.capped", "reset", "--reset"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "at version 2" in done.stdout, done.stdout
    _release(ref, redis_client)
    _refused(worker, "reset")
    # v2 is the reset; the interrupted message is handled again from it (v3), once
    wait_until(lambda: ref.snapshot().version == 3, 30, message="not handled after reset")
    snap = ref.snapshot()
    assert snap.state == {"balance": 5} and snap.pending == 0
    history = ref.history()
    assert [h.version for h in history] == [3, 2, 1]
    reset = next(h for h in history if h.version == 2)
    assert reset.reset and reset.state == {"balance": 0}


def test_rollback_during_a_step_refuses_its_commit_and_revalidates(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    worker = workers("w1", concurrency=2)
    ref = bank.supervision.ref("tree.capped", "rb")
    _commit(ref, 10, 1)
    _commit(ref, -8, 2)
    _start_long_step(ref, redis_client, 5)
    assert ref.rollback(1) == 3
    _release(ref, redis_client)
    _refused(worker, "rb")
    wait_until(lambda: ref.snapshot().version == 4, 30,
               message="not handled after rollback")
    assert ref.snapshot().state == {"balance": 15}  # v1's 10, then the interrupted +5
    assert ref.history()[1].rollback_of == 1

    # The cap is tightened: v1 (balance 10) would no longer pass validate.
    redis_client.set("capped:cap", 9)
    _start_long_step(ref, redis_client, -14)  # 15 - 14 = 1 passes the new cap
    before, history = ref.snapshot(), ref.history()
    with pytest.raises(StateRejected, match="version 1 fails validate"):
        ref.rollback(1)
    assert ref.snapshot() == before and ref.history() == history
    _release(ref, redis_client)  # nothing was fenced off: the step in flight commits
    wait_until(lambda: ref.snapshot().version == 5, 30, message="the step did not commit")
    assert ref.snapshot().state == {"balance": 1}
    assert worker.log_text().count("lease_lost actor=tree.capped key=rb ") == 1
