"""A delete racing sends, with real worker processes (issue 14): every send lands, in the
actor as it was or in a fresh one; nothing is half deleted or half applied."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import redis

from celery_supervise import ActorBusy
from celery_supervise.testing import wait_until

MESSAGES = 300


def test_deletes_racing_sends_lose_nothing_and_apply_each_message_once(
    bank: ModuleType, workers: Any, redis_client: redis.Redis
) -> None:
    workers("w1")
    workers("w2")
    ref = bank.account.ref("racing")
    outcomes: list[str] = []
    sending = threading.Event()
    sending.set()

    def deleter() -> None:
        while sending.is_set():
            try:
                outcomes.append(ref.delete())
            except ActorBusy as exc:
                outcomes.append(exc.reason)

    def idle() -> bool:
        snap = ref.snapshot()
        return snap.pending == 0 and snap.status == "idle"

    thread = threading.Thread(target=deleter)
    thread.start()
    try:
        for n in range(MESSAGES):
            ref.send({"add": 1, "sender": "s", "n": n})
            if n % 60 == 59:  # let it drain now and then, so that some deletes succeed
                wait_until(idle, 60, interval=0.05, message="the actor did not drain")
    finally:
        sending.clear()
        thread.join()
    wait_until(idle, 60, interval=0.1, message="the actor did not drain")
    assert "deleted" in outcomes and set(outcomes) - {"deleted", "missing"}
    keys = ref.keys
    if redis_client.exists(keys.meta):
        seq, version = (int(redis_client.hget(keys.meta, f) or 0) for f in ("seq", "version"))
        seen = [n for _, n in ref.snapshot().state["seen"]]
    else:  # the last delete came after the last message
        seq, version = (int(x) for x in (redis_client.get(keys.tombstone) or b"").split()[:2])
        seen = []
    # Numbering goes on across deletions: every message was received once and, since a
    # delete needs an empty mailbox, applied once by one of the incarnations.
    assert seq == version == MESSAGES
    # The last incarnation holds an unbroken, in-order tail of what was sent.
    assert seen == list(range(MESSAGES - len(seen), MESSAGES))
    assert ref.snapshot().state["balance"] == len(seen)
