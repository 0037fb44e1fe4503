"""The tick shares much due work with other workers: the beat's tick hands each other group
of due buckets that has work to a group tick (a Celery task any worker takes), visits the
first group itself, and a group another tick is visiting is left to it."""

from __future__ import annotations

import sys
import time
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import tick
from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def _timers_due(bank: ModuleType, local: LocalRunner, n: int) -> list[Any]:
    """``n`` actors whose durable timer is due: only a tick delivers it."""
    shop = sys.modules["tests.apps.shop"]
    refs = [shop.timer.ref(f"d{i}") for i in range(n)]
    for ref in refs:
        ref.send({"after": 0.2, "tag": "x"})
    local.run()
    time.sleep(0.3)
    return refs


def _fired(refs: list[Any]) -> list[list[str]]:
    return [[tag for tag, _ in r.snapshot().state["fired"]] for r in refs]


def test_much_due_work_is_handed_to_group_ticks(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    monkeypatch.setattr(tick, "FAN_OUT_AT", 20)
    refs = _timers_due(bank, local, 60)
    result = tick.run_tick(bank.supervision.runtime)
    assert result["groups"] == [0] and result["handed"] == [1, 2, 3], result
    handed = [kw["group"] for name, _, kw in local.queue if name == tick.TICK_TASK]
    assert handed == [1, 2, 3]
    local.run()  # the group ticks, then the runs of the timers they fired
    assert _fired(refs) == [["x"]] * 60


def test_little_due_work_is_visited_by_the_tick_alone(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    refs = _timers_due(bank, local, 10)
    result = tick.run_tick(bank.supervision.runtime)
    assert result["groups"] == [0, 1, 2, 3] and "handed" not in result, result
    assert not [t for t in local.queue if t[0] == tick.TICK_TASK]
    local.run()
    assert _fired(refs) == [["x"]] * 10


def test_a_group_another_tick_is_visiting_is_left_to_it(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    rt = bank.supervision.runtime
    refs = _timers_due(bank, local, 10)
    redis_client.set(rt.keyspace.tick_group_lock(2), "another", px=60_000)
    assert tick.run_tick(rt)["groups"] == [0, 1, 3]
    assert tick.run_tick(rt, group=2) == {"skipped": "another tick is visiting group 2"}
    redis_client.delete(rt.keyspace.tick_group_lock(2))
    result = tick.run_tick(rt, group=2)
    assert result["groups"] == [2], result
    local.run()
    assert _fired(refs) == [["x"]] * 10
    assert tick.run_tick(rt, group=9) == {"skipped": "no bucket group 9"}
