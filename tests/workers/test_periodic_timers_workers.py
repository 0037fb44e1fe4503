"""SPEC 7: a periodic named timer keeps firing across a worker's death, with real ``celery
worker`` and ``beat`` processes, is listed by the real ``supervise actor`` command, and
stops when cancelled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import pytest

from tests.harness import PROJECT_ROOT, wait_until


@pytest.fixture
def shop(bank: ModuleType) -> ModuleType:
    from tests.apps import shop as module

    return module


def _cli(bank_env: Mapping[str, str], *args: str) -> str:
    env = {**os.environ, **bank_env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _ticks(ref: Any) -> list[list[str]]:
    return list(ref.snapshot().state["ticks"])


def test_a_periodic_timer_keeps_firing_across_a_worker_restart_until_cancelled(
    shop: ModuleType, workers: Any, beat: Any, bank_env: dict[str, str]
) -> None:
    first = workers("w1", concurrency=1)
    ref = shop.clock.ref("periodic")
    ref.send({"set": "beat", "after": 0.5, "every": 1.0, "tag": "beat"})
    wait_until(lambda: len(_ticks(ref)) >= 2, 60, message="the periodic timer did not fire")

    first.kill()  # SIGKILL: the timer lives in Redis only, beat keeps firing it
    time.sleep(2.0)
    before = len(_ticks(ref))
    workers("w2", concurrency=1)
    wait_until(lambda: len(_ticks(ref)) >= before + 3, 60,
               message="the periodic timer stopped across the worker restart")
    ids = [t[1] for t in _ticks(ref)]
    assert len(set(ids)) == len(ids), ids  # each firing its own message, each applied once

    text = _cli(bank_env, "actor", "shop.clock", "periodic")
    assert "timers               1" in text and "beat  every 1 s" in text, text
    (listed,) = json.loads(_cli(bank_env, "actor", "shop.clock", "periodic", "--json"))["timers"]
    assert (listed["name"], listed["every"], listed["message"]) == ("beat", 1.0, {"tick": "beat"})

    ref.send({"cancel": "beat"})
    wait_until(lambda: (s := ref.snapshot()).timers == () and s.pending == 0, 60,
               message="the cancel did not commit")
    fired = len(_ticks(ref))
    time.sleep(3.0)  # three periods
    assert len(_ticks(ref)) == fired
