"""An isolated subtask starts at most once, however many copies of its task the broker
hands out (a retried relay, a republish after a lost worker, a late redelivery)."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import redis

from celery_supervise.isolation import ISOLATED_TASK
from celery_supervise.testing import LocalRunner


def test_duplicate_copies_of_a_subtask_start_it_once(
    bank: ModuleType, supervise_runner: Any, redis_client: redis.Redis
) -> None:
    local: LocalRunner = supervise_runner(bank.supervision)
    ref = bank.supervision.ref("tree.isolator", "i")
    ref.send("charge-1")
    local.run(max_runs=1)  # the step commits and publishes the subtask: one copy queued
    (copy,) = [item for item in local.queue if item[0] == ISOLATED_TASK]
    local.queue.clear()
    task = bank.app.tasks[ISOLATED_TASK]
    # the broker hands out three copies that run at the same time on three workers
    runs = [
        threading.Thread(target=task.apply, kwargs={"args": copy[1], "kwargs": copy[2]})
        for _ in range(3)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    local.run()
    assert redis_client.get("calls:charge-1") == b"1"
    outcomes = ref.snapshot().state["outcomes"]
    assert outcomes == [{"isolated": "charge-1", "ok": True, "result": 1}]
    assert not redis_client.exists(ref.keys.isolates)  # nothing left pending, marks included
