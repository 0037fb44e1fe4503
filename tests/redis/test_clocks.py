"""One clock (correctness item 14): a process whose wall clock is off still stamps hints,
isolate deadlines and restart histories on Redis' clock, the one the tick and the scripts
compare them with. The skew is this process's ``time.time`` moved by a fixed offset (Redis,
another process, keeps the true time); tests/workers/test_clock_skew_workers.py does the same
to real worker processes with libfaketime."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise.isolation import ISOLATED_TASK
from celery_supervise.store import ActorStore
from celery_supervise.testing import LocalRunner
from celery_supervise.tick import run_tick

Skew = Callable[[float], None]


@pytest.fixture
def skew(monkeypatch: pytest.MonkeyPatch) -> Skew:
    """``skew(seconds)``: from now on this process's wall clock reads ``seconds`` off."""
    real = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])

    def set_skew(seconds: float) -> None:
        offset[0] = seconds

    return set_skew


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


@pytest.fixture
def shop(bank: ModuleType) -> ModuleType:
    from tests.apps import shop as module

    return module


def _ok_key(shop: ModuleType) -> str:
    return next(k for i in range(1000) if shop.gateway_plan(k := f"clock-{i}") == "ok")


def _tick_until(
    bank: ModuleType, local: LocalRunner, done: Callable[[], bool], seconds: float
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run_tick(bank.supervision.runtime)
        local.run()
        if done():
            return True
        time.sleep(0.1)
    return False


def test_a_worker_clock_behind_does_not_time_out_an_isolate_early(
    shop: ModuleType, local: LocalRunner, skew: Skew
) -> None:
    skew(-60.0)
    ref = shop.checkout.ref("behind")
    idem = _ok_key(shop)
    ref.send({"pay": [[idem, 5, 1.0]], "timeout": 30.0})
    local.run(max_runs=1)  # the step commits its pending record and publishes the subtask
    (subtask,) = [t for t in local.queue if t[0] == ISOLATED_TASK]
    local.queue.clear()
    # the subtask runs for 1 s on some worker while ticks look at the actor
    task = shop.app.tasks[ISOLATED_TASK]
    running = threading.Thread(target=task.apply, kwargs={"args": subtask[1], "kwargs": subtask[2]})
    running.start()
    while running.is_alive():
        run_tick(shop.supervision.runtime)
        time.sleep(0.1)
    running.join()
    assert _tick_until(shop, local, lambda: bool(ref.snapshot().state["outcomes"]), 5.0)
    (outcome,) = ref.snapshot().state["outcomes"]
    assert outcome["ok"] is True, outcome
    assert outcome["result"] == {"charged": 5, "key": idem}


def test_a_worker_clock_ahead_still_gets_its_timer_fired(
    shop: ModuleType, local: LocalRunner, skew: Skew
) -> None:
    skew(60.0)
    ref = shop.timer.ref("ahead")
    ref.send({"after": 0.5, "tag": "a"})
    local.run()
    assert ref.snapshot().state["set"] == ["a"]
    fired = _tick_until(shop, local, lambda: bool(ref.snapshot().state["fired"]), 5.0)
    assert fired, "the timer's hint was stamped on the skewed clock: no tick saw it due"


def test_a_worker_clock_ahead_still_gets_its_lost_worker_noticed(
    bank: ModuleType, local: LocalRunner, skew: Skew, redis_client: redis.Redis
) -> None:
    skew(60.0)
    rt = bank.supervision.runtime
    ref = bank.supervision.ref("bank.account", "lost")
    ref.send({"add": 1})
    local.queue.clear()  # its run goes to a worker that claims it and dies mid-step
    claim = ActorStore(rt).claim(
        ref.keys,
        worker="gone@host",
        lease_ms=int(rt.settings.lease_seconds * 1000),
        batch=1,
        nonce=uuid.uuid4().hex,
        supervisors=[],
        hint_in=rt.settings.lease_seconds + 0.5,
    )
    assert claim.outcome == "ok"

    def noticed() -> bool:
        last = ref.snapshot().last_crash
        return last is not None and last["reason"] == "worker_lost"

    assert _tick_until(bank, local, noticed, rt.settings.lease_seconds + 4.0)
    assert _tick_until(bank, local, lambda: ref.snapshot().state == {"balance": 1, "seen": []}, 5.0)


def test_ticks_on_skewed_hosts_count_the_intensity_window_on_one_clock(
    bank: ModuleType, local: LocalRunner, skew: Skew
) -> None:
    # "quarantining": intensity 3 in a 5 s period. Four crashes within a few seconds,
    # decided by ticks on a host 60 s behind and on one with the right time, are four
    # restarts in the window: the fourth goes over the limit.
    ref = bank.supervision.ref("tree.worker", "skewed")
    ref.send("hello")
    local.run()
    seen = []
    for n, seconds in enumerate((0.0, -60.0, 0.0, -60.0)):
        skew(seconds)
        ref.send({"crash_once": f"skewed-{n}"})
        local.run()
        assert ref.snapshot().status == "backoff"  # crashed, awaiting its supervisor

        def decided() -> bool:
            snap = ref.snapshot()
            return snap.status == "quarantined" or (snap.status == "idle" and not snap.pending)

        assert _tick_until(bank, local, decided, 3.0), n
        seen.append(ref.snapshot().status)
    assert seen == ["idle", "idle", "idle", "quarantined"]


def test_the_process_clock_follows_redis_time_whatever_the_wall_clock_says(
    bank: ModuleType, skew: Skew
) -> None:
    rt = bank.supervision.runtime
    skew(-3600.0)
    for _ in range(3):
        before = rt.now_ms()
        mine = rt.clock_ms()
        after = rt.now_ms()
        slack = rt.clock_error * 1000 + 5
        assert before - slack <= mine <= after + slack, (before, mine, after, rt.clock_error)
