"""Bounded mailboxes (``@actor(max_mailbox=N)``): a send that does not fit is refused whole,
before any write; an actor's relayed send to a full mailbox is set aside on the sender's side
with reason ``mailbox_full``; an actor's own self-sends, timers and subtask outcomes are never
refused (docs/long-lived.md)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import ConfigurationError, MailboxFull, actor, runner
from celery_supervise.testing import LocalRunner
from tests.redis.test_script_atomicity import image


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def test_send_over_the_limit_raises_and_writes_nothing(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = bank.bounded.box.ref("full")
    for i in range(3):
        ref.send(f"m{i}", message_id=f"id-{i}")
    before = image(redis_client, "t")
    with pytest.raises(MailboxFull) as info:
        ref.send("m3", message_id="id-3")
    assert image(redis_client, "t") == before  # byte-identical: no seq, no dedup mark, no entry
    err = info.value
    assert (err.actor, err.limit, err.count) == ("bounded.box:full", 3, 3)
    assert "bounded.box:full" in str(err) and "max_mailbox=3" in str(err)
    # a duplicate of a queued message appends nothing, so it is not refused
    assert ref.send("m0", message_id="id-0") == "id-0"
    local.run()
    assert ref.snapshot().state == {"got": ["m0", "m1", "m2"]}
    ref.send("m3")  # drained: it fits again
    local.run()
    assert ref.snapshot().state["got"][-1] == "m3"


def test_send_many_is_all_or_nothing(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = bank.bounded.box.ref("batch")
    ref.send("first")
    before = image(redis_client, "t")
    with pytest.raises(MailboxFull) as info:
        ref.send_many(["a", "b", "c"])  # 1 queued + 3 > 3: not even "a" is appended
    assert info.value.count == 1
    assert image(redis_client, "t") == before
    assert len(ref.send_many(["a", "b"])) == 2  # exactly fits
    local.run()
    assert ref.snapshot().state == {"got": ["first", "a", "b"]}


def test_ask_to_a_full_mailbox_raises_mailbox_full(bank: ModuleType, local: LocalRunner) -> None:
    ref = bank.bounded.box.ref("ask")
    ref.send_many(["a", "b", "c"])
    with pytest.raises(MailboxFull):
        ref.ask("d", timeout=0.5)


def test_a_relayed_send_to_a_full_mailbox_is_set_aside_on_the_senders_side(
    bank: ModuleType, local: LocalRunner
) -> None:
    box = bank.bounded.box.ref("target")
    box.send_many(["x", "y"])
    box_run = local.queue.popleft()  # held back: the box must not drain meanwhile
    sender = bank.bounded.sender.ref("s1")
    sender.send({"to": "target", "n": 3})  # the 1st fits; the 2nd and 3rd do not
    local.run()
    local.queue.append(box_run)
    assert sender.snapshot().state == {"sent": 3}  # the sender's step committed
    assert sender.snapshot().undeliverable == 2
    effects = sender.undeliverable_effects()
    assert [e.target for e in effects] == ["bounded.box:target"] * 2
    assert all(e.error.startswith("MailboxFull: mailbox_full:") for e in effects), effects
    assert [e.effect["message"] for e in effects] == ["from-s1-1", "from-s1-2"]
    local.run()
    assert box.snapshot().state == {"got": ["x", "y", "from-s1-0"]}  # nothing else arrived
    assert sender.snapshot().undeliverable == 2  # kept, not retried into the mailbox


def test_own_self_sends_timers_and_outcomes_are_never_refused(
    bank: ModuleType, local: LocalRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = bank.bounded.box.ref("own")
    ref.send({"self": 5})
    # A run whose time is up after one step, so the self-sends wait for the next run.
    monkeypatch.setattr(runner, "BATCH_SECONDS", 0.0)
    local.run(max_runs=1)
    monkeypatch.undo()
    assert ref.snapshot().pending == 5  # over the limit of 3: its own messages are exempt
    with pytest.raises(MailboxFull):
        ref.send("outsider")
    local.run()
    ref.send({"timers": 5})
    local.run()
    local.settle(1.0)  # the tick fires the 5 timers at once into the mailbox
    ref.send({"isolate": 4})
    local.run()
    local.settle(1.0)
    got = ref.snapshot().state["got"]
    assert got[:5] == [f"self-{i}" for i in range(5)]
    assert sorted(got[5:10]) == [f"timer-{i}" for i in range(5)]
    assert sorted(got[10:]) == [f"iso-{i}" for i in range(4)]


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_max_mailbox_must_be_an_int_at_least_one(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"max_mailbox must be an int >= 1"):
        actor(name=f"bounded.bad{bad!r}", max_mailbox=bad)(lambda ctx, state, message: state)


def test_a_type_this_process_does_not_know_is_sent_to_unbounded(
    bank: ModuleType, local: LocalRunner
) -> None:
    """The limit is the sending process's view of the type: unknown there, no limit."""
    from celery_supervise.delivery import Delivery

    delivery = Delivery(bank.supervision.runtime)
    for i in range(5):
        delivery.send("bounded.elsewhere", "k", [(f"m{i}", b'"x"', False)])
    local.queue.clear()  # no task of that type exists here to run
    keys = bank.supervision.runtime.keyspace.actor("bounded.elsewhere", "k")
    assert bank.supervision.runtime.client.llen(keys.mailbox) == 5
