"""A six-node Redis Cluster (three primaries, a replica each) under real workers and beat:
one primary is SIGKILLed under load and its replica takes over. Clients, workers and the
tick find the new owner of the slots by themselves, scripts are loaded again on the promoted
node (its script cache is empty: ``NOSCRIPT``), a lease claimed on the dead primary is
fenced, and a crash loop is still quarantined.

What it proves, and what it does not: a Redis Cluster replicates asynchronously (and
``supervise_replica_acks`` is refused on one, see ``docs/scaling.md``), so a write the dead
primary acknowledged in its last milliseconds may be gone. What must hold anyway is checked
for every message: none is applied twice, none out of its sender's order, none that was
never sent, no actor is left stranded, and every message sent after the failover is applied
exactly once."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celery_supervise import RedisUnavailable
from celery_supervise.testing import LocalRunner
from celery_supervise.testing.pointing import clear_keys, use_redis
from celery_supervise.testing.topologies import LocalCluster
from tests.harness import CeleryProcess, start_beat, start_worker, wait_until
from tests.redis.test_replay import REFUND

BANK = "tests.apps.bank"
ACTORS = 24
SENDERS = 2


@pytest.fixture
def six() -> Iterator[LocalCluster]:
    """Its own cluster: the test kills one of its nodes."""
    with LocalCluster(primaries=3, replicas=1) as cluster:
        yield cluster


def _key_on(bank: ModuleType, cluster: LocalCluster, node: Any) -> str:
    """A bank.account key whose actor lives in a slot ``node`` serves."""
    from redis.crc import key_slot

    for i in itertools.count():
        tag = bank.supervision.runtime.keyspace.actor("bank.account", f"k{i}").meta
        if cluster.owner(key_slot(tag.encode())) is node:
            return f"k{i}"
    raise AssertionError("unreachable")


def _retried(send: Any) -> None:
    """``send``, retried once. This client's slot map still names the dead node (for its
    old slots, and for the due buckets there): the first command meeting it fails (nothing
    sent; redis-py reads the map again as it raises). A send never repeats itself on its
    own; its caller retries, with the same message id."""
    try:
        send()
    except RedisUnavailable:
        send()  # the second must go through: the slot map was read again


def test_a_client_that_knew_the_dead_primary_finds_the_promoted_replica(
    bank: ModuleType, six: LocalCluster
) -> None:
    """This process's client learnt the slots (and loaded the scripts) before the failover:
    the dead node refuses connections, the promoted replica's script cache is empty
    (``NOSCRIPT``). Sends and steps to an actor on a surviving primary, and to one on the
    promoted replica, still go through."""
    before = use_redis(bank.supervision, six.url)
    local = LocalRunner(bank.supervision)
    try:
        clear_keys(bank.supervision)
        # The node redis-py sends its own questions to (its "default node") is the one to
        # kill: redis-py 8 went on asking a dead one (see test_cluster.py, COMMAND GETKEYS).
        default = bank.supervision.runtime.client_once.get_default_node()
        victim = next(s for s in six.primaries() if s.port == default.port)
        key = _key_on(bank, six, next(s for s in six.primaries() if s is not victim))
        ref = bank.account.ref(key)
        ref.send({"add": 1, "n": 0, "sender": "s0"}, message_id="m0")
        local.run()
        promoted = six.kill_primary(victim)
        _retried(lambda: ref.send({"add": 1, "n": 1, "sender": "s0"}, message_id="m1"))
        _retried(lambda: ref.send_many([{"add": 1, "n": 2, "sender": "s0"}], message_ids=["m2"]))
        moved = bank.account.ref(_key_on(bank, six, promoted))  # NOSCRIPT there
        _retried(lambda: moved.send({"add": 1, "n": 0, "sender": "s0"}, message_id="m3"))
        wait_until(lambda: not local.run() and local.tick() is not None and not local.queue
                   and ref.snapshot().pending == moved.snapshot().pending == 0,
                   timeout=30, message="both actors stepped")  # fmt: skip
        assert ref.snapshot().state["seen"] == [["s0", 0], ["s0", 1], ["s0", 2]]
        assert moved.snapshot().state["seen"] == [["s0", 0]]
    finally:
        local.close()
        bank.supervision.runtime.use_settings(before)


def _sent(send: Any) -> bool:
    try:
        send()
        return True
    except RedisUnavailable:
        return False


def _sender(bank: ModuleType, who: int, stop: threading.Event,
            acked: list[list[tuple[int, float]]]) -> None:  # fmt: skip
    """Send until ``stop`` (and at least 30); ``acked[who]``: (n, when acknowledged)."""
    last: BaseException | None = None
    for n in itertools.count():
        if stop.is_set() and n >= 30:
            return
        ref = bank.supervision.ref("bank.account", f"c{(who * 5 + n) % ACTORS}")  # no app here
        for _ in range(300):  # a send whose reply was lost is retried with the same id
            try:
                ref.send({"add": 1, "n": n, "sender": f"s{who}"}, message_id=f"s{who}-{n}")
                acked[who].append((n, time.monotonic()))
                break
            except RedisUnavailable as exc:
                last = exc
                time.sleep(0.1)
        else:
            raise AssertionError(f"s{who}-{n} never acknowledged: {last}")
        time.sleep(0.004)


@pytest.mark.faults
def test_a_primary_killed_under_load_is_replaced_by_its_replica(
    bank: ModuleType, bank_env: dict[str, str], six: LocalCluster, tmp_path: Path
) -> None:
    env = {**bank_env, "TEST_STATE_URL": six.url}
    before = use_redis(bank.supervision, six.url)
    clear_keys(bank.supervision)
    procs: list[CeleryProcess] = []
    stop, senders = threading.Event(), []
    acked: list[list[tuple[int, float]]] = [[] for _ in range(SENDERS)]
    try:
        for name in ("f1", "f2"):
            procs.append(start_worker(BANK, concurrency=2, hostname=f"{name}@%h", env=env,
                                      log_dir=tmp_path))  # fmt: skip
        procs.append(start_beat(BANK, env=env, schedule_dir=tmp_path / "beat"))
        ledger = bank.replaying.ledger.ref("loop-" + uuid.uuid4().hex[:6])
        senders = [threading.Thread(target=_sender, args=(bank, i, stop, acked))
                   for i in range(SENDERS)]  # fmt: skip
        for t in senders:
            t.start()
        wait_until(lambda: min(map(len, acked)) > 40, timeout=60, message="senders under way")

        victim = six.primaries()[0]
        promoted = six.kill_primary(victim)
        failed_over = time.monotonic()
        assert promoted in six.primaries() and victim not in six.primaries()
        # A crash loop started after the failover. This process's client may still know
        # the dead node: its first command there fails once (nothing sent), then it knows.
        wait_until(lambda: _sent(lambda: ledger.send_many(REFUND, message_ids=["r1", "r2", "r3"])),
                   timeout=30, message="the crash loop's messages sent")  # fmt: skip
        wait_until(lambda: min(sum(t > failed_over for _, t in a) for a in acked) > 40,
                   timeout=90, message="sends acknowledged after the failover")  # fmt: skip
        stop.set()
        for t in senders:
            t.join(120)
        assert not any(t.is_alive() for t in senders)

        def settled() -> Any:
            snaps = [bank.account.ref(f"c{i}").snapshot() for i in range(ACTORS)]
            if all(s.status == "idle" and s.pending == 0 for s in snaps):
                return snaps
            busy[:] = [(s.key, s.status, s.pending, s.version, s.received) for s in snaps
                       if s.status != "idle" or s.pending]  # fmt: skip
            return None

        busy: list[Any] = []
        try:
            snaps = wait_until(settled, timeout=120, message="every actor idle, mailbox empty")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: (key, status, pending, version, received) {busy}") from None
        lost: list[str] = []
        for i, snap in enumerate(snaps):
            assert snap.state["balance"] == len(snap.state["seen"])
            for who in range(SENDERS):
                seen = [n for s, n in snap.state["seen"] if s == f"s{who}"]
                mine = [(n, t) for n, t in acked[who] if (who * 5 + n) % ACTORS == i]
                assert seen == sorted(set(seen)), (i, who, seen)  # once each, in order
                assert set(seen) <= {n for n, _ in mine}, (i, who)  # nothing never sent
                after = [n for n, t in mine if t > failed_over]
                assert set(after) <= set(seen), (i, who, sorted(set(after) - set(seen)))
                lost += [f"s{who}-{n}" for n, _ in mine if n not in seen]
        # Only what the dead primary acknowledged in its last moments may be gone.
        assert len(lost) <= 20, lost
        wait_until(lambda: ledger.snapshot().status == "quarantined", timeout=60,
                   message="the crash loop quarantined by the tick after the failover")
    finally:
        stop.set()  # a failed test leaves no sender running into the next tests
        for t in senders:
            t.join(60)
        for proc in procs:
            proc.kill()
        bank.supervision.runtime.use_settings(before)
