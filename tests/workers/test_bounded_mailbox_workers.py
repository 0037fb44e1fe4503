"""A bounded mailbox with real workers and beat: while its consumer is quarantined the
mailbox stops at ``max_mailbox``, senders (callers and actors) get ``MailboxFull``, and
after ``resume`` it drains."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import MailboxFull
from tests.harness import wait_until

# tests.apps.* is imported through the ``bank`` fixture only: imported at collection, the app
# would read its broker URL before the fixture points it at the test Redis.


def test_a_quarantined_consumers_mailbox_stops_at_the_limit_then_drains(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    worker = workers("w1")
    LIMIT, broken_flag = bank.bounded.LIMIT, bank.bounded.broken_flag
    box = bank.bounded.box.ref("q")
    redis_client.set(broken_flag("q"), 1)
    box.send("m0")  # crashes at every attempt: intensity 3 in 5 s quarantines it
    wait_until(lambda: box.snapshot().status == "quarantined", 40,
               message="the broken box was not quarantined")  # fmt: skip
    for i in range(1, LIMIT):
        box.send(f"m{i}")
    with pytest.raises(MailboxFull) as info:
        box.send("one too many")
    assert (info.value.limit, info.value.count) == (LIMIT, LIMIT)
    assert box.snapshot().pending == LIMIT  # stopped at the limit
    sender = bank.bounded.sender.ref("s")
    sender.send({"to": "q", "n": 2})  # an actor's sends: set aside on its side, with reason
    wait_until(lambda: sender.snapshot().undeliverable == 2, 20,
               message="the sender's refused sends were not set aside")  # fmt: skip
    assert all("mailbox_full" in e.error for e in sender.undeliverable_effects())
    redis_client.delete(broken_flag("q"))
    box.resume()
    wait_until(lambda: box.snapshot().pending == 0, 30, message="the box did not drain")
    assert box.snapshot().state == {"got": [f"m{i}" for i in range(LIMIT)]}
    box.send("after")  # room again
    wait_until(lambda: box.snapshot().state["got"][-1:] == ["after"], 20)

    # The tick ran all along (it quarantined the box), yet at INFO neither the worker nor
    # beat logged a line per tick; the decisions it made are logged at INFO.
    from celery_supervise.census import read_tick_histogram

    assert read_tick_histogram(bank.supervision.runtime).count >= 3
    worker_log, beat_log = worker.log_text(), beat.log_text()
    tick_lines = [line for line in worker_log.splitlines() if "celery_supervise.tick[" in line]
    assert tick_lines == [], tick_lines[:3]
    assert re.search(r"Task bounded\.box\[[\w-]+\] received", worker_log)  # others: INFO
    assert re.search(r"Sending due task \S+ \(celery_supervise\.tick\)", beat_log) is None
    assert '"event": "decision"' in worker_log  # decisions: one INFO line (JSON) each

