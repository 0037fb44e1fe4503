"""Named, replaced, periodic and cancelled timers (SPEC 7, ``ctx.send_after(..., name=,
every=)`` and ``ctx.cancel_timer``), against a real Redis with the in-process runner."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import click
import pytest
import redis
from celery.bin.base import CLIContext

from celery_supervise import Timer
from celery_supervise.testing import LocalRunner
from celery_supervise.tick import run_tick


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


@pytest.fixture
def shop(bank: ModuleType) -> ModuleType:
    from tests.apps import shop as module

    return module


def _until(local: LocalRunner, done: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        local.tick()
        if done():
            return True
        time.sleep(0.05)
    return False


def _tags(ref: Any) -> list[str]:
    return [t[0] for t in ref.snapshot().state["ticks"]]


def test_a_named_timer_replaces_the_pending_one_of_that_name(
    shop: ModuleType, local: LocalRunner
) -> None:
    ref = shop.clock.ref("replace")
    ref.send({"set": "r", "after": 0.3, "tag": "first"})
    ref.send({"set": "r", "after": 0.6, "tag": "second"})
    local.run()
    (timer,) = ref.snapshot().timers
    assert (timer.name, timer.every, timer.message) == ("r", None, {"tick": "second"})
    assert _until(local, lambda: bool(_tags(ref)))
    local.settle(1.0)
    assert _tags(ref) == ["second"]
    assert ref.snapshot().timers == ()


def test_unnamed_timers_are_never_replaced(shop: ModuleType, local: LocalRunner) -> None:
    ref = shop.clock.ref("unnamed")
    ref.send({"after": 0.2, "tag": "a"})
    ref.send({"after": 0.2, "tag": "b"})
    local.run()
    assert [t.name for t in ref.snapshot().timers] == [None, None]
    assert _until(local, lambda: sorted(_tags(ref)) == ["a", "b"])


def test_cancel_removes_the_timer_and_an_unknown_name_is_a_no_op(
    shop: ModuleType, local: LocalRunner
) -> None:
    ref = shop.clock.ref("cancel")
    ref.send({"set": "c", "after": 0.3, "tag": "never"})
    ref.send({"set": "keep", "after": 0.3, "tag": "kept"})
    ref.send({"cancel": "c"})
    ref.send({"cancel": "no-such-timer"})
    local.run()
    snap = ref.snapshot()
    assert snap.version == 4 and snap.last_crash is None
    assert [t.name for t in snap.timers] == ["keep"]
    assert _until(local, lambda: _tags(ref) == ["kept"])
    local.settle(0.8)
    assert _tags(ref) == ["kept"]


def test_a_periodic_timer_fires_repeatedly_until_cancelled(
    shop: ModuleType, local: LocalRunner
) -> None:
    ref = shop.clock.ref("periodic")
    ref.send({"set": "p", "after": 0.1, "every": 0.5, "tag": "beat"})
    local.run()
    (timer,) = ref.snapshot().timers
    assert timer.every == 0.5
    assert _until(local, lambda: len(_tags(ref)) >= 3, 20.0)
    ids = [t[1] for t in ref.snapshot().state["ticks"]]
    assert len(set(ids)) == len(ids), ids  # one id per firing, so each is its own message
    assert all(re.fullmatch(r"shop\.clock:periodic@1\.n0/\d{13}", i) for i in ids), ids
    ref.send({"cancel": "p"})
    local.run()
    fired = len(_tags(ref))
    assert ref.snapshot().timers == ()
    local.settle(1.5)
    assert len(_tags(ref)) == fired


def test_a_periodic_timer_skips_missed_periods_without_a_burst(
    shop: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """No tick for many periods: one firing, and the next due time stays on the grid of
    the first due time (no drift), the first one after now."""
    ref = shop.clock.ref("missed")
    ref.send({"set": "m", "after": 0.1, "every": 0.5, "tag": "m"})
    local.run()
    (first,) = redis_client.zrange(ref.keys.timers, 0, 0, withscores=True)
    time.sleep(2.2)  # about four periods with no tick
    run_tick(ref.runtime)
    local.run()
    assert len(_tags(ref)) == 1
    (nxt,) = redis_client.zrange(ref.keys.timers, 0, 0, withscores=True)
    periods = (nxt[1] - first[1]) / 500
    assert periods == int(periods) and periods >= 4
    assert nxt[1] > ref.runtime.now_ms() - 500  # the first grid point after the tick's now


@pytest.mark.parametrize("change", [{"set": "x", "after": 1, "tag": "new"}, {"cancel": "x"}])
def test_a_crashed_step_changes_no_timer(
    shop: ModuleType, local: LocalRunner, change: dict[str, Any]
) -> None:
    ref = shop.clock.ref(f"crash-{'cancel' in change}")
    ref.send({"set": "x", "after": 30, "every": 60, "tag": "old"})
    local.run()
    before = ref.snapshot().timers
    assert len(before) == 1
    ref.send({**change, "crash": True})
    local.run()
    assert ref.snapshot().last_crash is not None
    assert ref.snapshot().timers == before


def test_timers_are_listed_by_the_cli_report(
    shop: ModuleType, local: LocalRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    from celery_supervise.cli.queries import actor_report
    from celery_supervise.cli.render import actor_text, print_json

    ref = shop.clock.ref("listed")
    ref.send({"set": "daily", "after": 60, "every": 86400, "tag": "d"})
    ref.send({"after": 120, "tag": "once"})
    local.run()
    report = actor_report(shop.supervision, ref, history=0)
    assert [(t.name, t.every) for t in report.timers] == [("daily", 86400.0), (None, None)]
    assert all(isinstance(t, Timer) for t in report.timers)
    print_json(report)
    out = capsys.readouterr().out
    assert '"name": "daily"' in out and '"every": 86400.0' in out
    obj = CLIContext(app=shop.app, no_color=True, workdir=None)
    with click.Context(click.Command("actor"), obj=obj) as ctx:
        actor_text(ctx, report)
    text = capsys.readouterr().out
    assert "timers               2" in text
    assert "daily  every 86400 s" in text and '{"tick": "once"}' in text


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"set": "", "after": 1}, "name"), ({"set": "n" * 201, "after": 1}, "name"),
     ({"set": "n", "after": 1, "every": 0}, "every"),
     ({"set": "n", "after": 1, "every": 0.1}, "tick interval"),
     ({"after": 1, "every": 1}, "name")],
)
def test_bad_timer_arguments_crash_the_step_naming_them(
    shop: ModuleType, local: LocalRunner, kwargs: dict[str, Any], word: str
) -> None:
    ref = shop.clock.ref(f"bad-{word}-{len(str(kwargs))}")
    ref.send({**kwargs, "tag": "t"})
    local.run()
    crash = ref.snapshot().last_crash
    assert crash is not None and crash["type"] == "InvalidMessage"
    assert word in crash["message"]
    assert ref.snapshot().timers == ()


def test_a_periodic_timer_of_a_stopped_actor_moves_on_without_firing(
    shop: ModuleType, local: LocalRunner
) -> None:
    """A halted actor's mailbox does not fill with one message per period; resumed, the
    timer goes on on its own grid."""
    ref = shop.clock.ref("halted")
    ref.send({"set": "h", "after": 0.1, "every": 0.5, "tag": "h"})
    local.run()
    assert _until(local, lambda: len(_tags(ref)) >= 1)
    ref.stop()
    local.run()
    stopped = ref.snapshot()
    assert stopped.status == "stopped"
    local.settle(1.5)
    snap = ref.snapshot()
    assert snap.pending == 0 and len(snap.timers) == 1
    assert snap.timers[0].due_at > stopped.timers[0].due_at  # it moved on, period by period
    ref.resume()
    fired = len(_tags(ref))
    assert _until(local, lambda: len(_tags(ref)) >= fired + 2)


def test_the_docs_subscription_example(bank: ModuleType, local: LocalRunner) -> None:
    """docs/long-lived.md#timers: a renewal replaces the expiry, reminders repeat until the
    expiry cancels them; a cancel removes both."""
    from docs.examples import subscription as example

    ref = example.subscription.ref("acct-1")
    ref.send({"kind": "subscribe", "plan": "pro", "seconds": 60, "remind_every": 0.5})
    ref.send({"kind": "subscribe", "plan": "pro", "seconds": 1.6, "remind_every": 0.5})
    local.run()
    assert sorted(t.name or "" for t in ref.snapshot().timers) == ["expiry", "reminder"]
    assert _until(local, lambda: ref.snapshot().state["expired"])
    snap = ref.snapshot()
    assert snap.state["reminders"] >= 2 and snap.timers == ()
    ref.send({"kind": "subscribe", "plan": "basic", "seconds": 60})
    ref.send({"kind": "cancel"})
    local.run()
    assert ref.snapshot().timers == () and ref.snapshot().state["plan"] is None
