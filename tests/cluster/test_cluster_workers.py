"""Real workers and beat with their actor state on a real Redis Cluster, while thousands of
slots migrate between the primaries under load (``MOVED`` / ``ASK`` / ``TRYAGAIN``): every
message applied exactly once and in order per sender, and a crash loop still quarantined by
the tick."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

from celery_supervise import RedisUnavailable
from celery_supervise.testing.topologies import LocalCluster, slots_of
from tests.harness import CeleryProcess, wait_until
from tests.redis.test_replay import REFUND

ACTORS = 40
SENDERS = 4
PER_SENDER = 150


def _send_all(cbank: ModuleType, sender: int, errors: list[BaseException],
              stop: threading.Event, sent: list[int]) -> None:  # fmt: skip
    """Send until ``stop`` is set (and at least PER_SENDER); ``sent[sender]``: how many."""
    for n in itertools.count():
        if n >= PER_SENDER and stop.is_set():
            return
        sent[sender] = n + 1
        time.sleep(0.002)  # a steady load, not a flood the machine's two cores drown in
        # A thread has no current app: address the actor through its Supervision.
        ref = cbank.supervision.ref("bank.account", f"w{(sender * 7 + n) % ACTORS}")
        mid = f"s{sender}-{n}"
        for _ in range(50):  # a send whose reply was lost is retried with the same id
            try:
                ref.send({"add": 1, "n": n, "sender": f"s{sender}"}, message_id=mid)
                break
            except RedisUnavailable as exc:
                errors.append(exc)
                time.sleep(0.1)
        else:
            raise AssertionError(f"send {mid} kept failing: {errors[-3:]}")


def test_a_live_reshard_under_load_loses_reorders_and_repeats_nothing(
    cbank: ModuleType,
    cluster: LocalCluster,
    cluster_workers: Callable[..., CeleryProcess],
    cluster_beat: CeleryProcess,
) -> None:
    cluster_workers("c1")
    cluster_workers("c2")
    ledger = cbank.replaying.ledger.ref("loop-" + uuid.uuid4().hex[:6])
    ledger.send_many(REFUND)  # its refund crashes every time: a crash loop
    errors: list[BaseException] = []
    stop, sent = threading.Event(), [0] * SENDERS
    senders = [threading.Thread(target=_send_all, args=(cbank, i, errors, stop, sent))
               for i in range(SENDERS)]  # fmt: skip
    for t in senders:
        t.start()
    try:
        wait_until(lambda: min(sent) > 20, timeout=30, message="senders under way")
        first, second, third = cluster.primaries()
        moved = cluster.migrate_slots(slots_of(cluster.slot_map()[first])[:1500], first, second)
        moved += cluster.migrate_slots(slots_of(cluster.slot_map()[third])[:1000], third, first)
        during = list(sent)
    finally:
        stop.set()  # a failed test leaves no sender running into the next tests
        for t in senders:
            t.join(120)
    assert moved > 0 and not any(t.is_alive() for t in senders)
    assert all(n > 0 for n in during), during  # the reshard ran under load
    cluster.wait_ok()

    def settled() -> Any:
        snaps = [cbank.account.ref(f"w{i}").snapshot() for i in range(ACTORS)]
        done = sum(s.state["balance"] for s in snaps) == sum(sent)
        return snaps if done and all(s.status == "idle" for s in snaps) else None

    snaps = wait_until(settled, timeout=120, message="every message applied")
    for i, snap in enumerate(snaps):
        for s in range(SENDERS):
            seen = [n for who, n in snap.state["seen"] if who == f"s{s}"]
            expected = [n for n in range(sent[s]) if (s * 7 + n) % ACTORS == i]
            assert seen == expected, (i, s, seen, expected)  # exactly once, in order
    wait_until(lambda: ledger.snapshot().status == "quarantined", timeout=60,
               message="the crash loop quarantined by the tick")  # fmt: skip
