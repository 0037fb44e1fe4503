"""Failures the state machine (``tests/redis/state_machine.py``) found, each reduced to one
deterministic interleaving (real Redis, ``LocalRunner``). Each was marked
``xfail(strict=True)`` until fixed; the fix removed the mark, and the test guards it."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise.store import ActorStore
from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


class _Died(Exception):
    """The operator's process dies here."""


def test_requeue_interrupted_after_its_send_leaves_the_message_in_one_place(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    """delivery.py Delivery.requeue(): the send (send.lua: append to the mailbox) and the
    removal of the letter (LREM on the dead list) are two round trips. An operator process
    (CLI, admin page) dying between them leaves the message in the mailbox *and* in the
    dead letters: once it is handled it is applied and still dead-lettered (or dead twice),
    against SPEC 4.8 / 6.3 (every message ends in exactly one of committed, dead-lettered,
    queued). Nothing repairs it unless the operator happens to requeue it again. Both keys
    are on the actor's slot, so one script can move the letter atomically."""
    sup = bank.supervision
    ref = sup.ref("bank.poison", "requeue-dies")
    ref.send("poison", message_id="p")
    local.run()
    # Until its attempts are spent (backoffs in real time: a loaded machine fits fewer ticks
    # into a fixed time).
    local.settle(30.0, until=lambda: bool(ref.dead_letters()))
    assert [d.message_id for d in ref.dead_letters()] == ["p"]

    # Fixed: the requeue is one script (requeue.lua), so the process can die only after it.
    real = ActorStore.requeue

    def died(self: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        raise _Died

    monkeypatch.setattr(ActorStore, "requeue", died)
    with pytest.raises(_Died):
        ref.requeue_dead_letter("p")
    monkeypatch.undo()
    queued = redis_client.lrange(ref.keys.mailbox, 0, -1)
    in_mailbox = sum(1 for e in queued if e.endswith(b'\n"poison"'))
    in_dead = sum(1 for d in ref.dead_letters() if d.message_id == "p")
    assert in_mailbox + in_dead == 1, f"in the mailbox {in_mailbox}x, dead {in_dead}x"
