"""SPEC 6.1-6.3 with real worker processes: FIFO, one step at a time with fencing, exactly
once under SIGKILL and SIGSTOP, caller-id deduplication and dead letters."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from types import ModuleType
from typing import Any

import redis

from tests.harness import wait_until


def _started_pid(redis_client: redis.Redis, key: str) -> int:
    raw = wait_until(
        lambda: redis_client.get(f"t:started:{key}"), 30, message=f"no handler started for {key}"
    )
    return int(raw)


def test_many_senders_many_actors_exact_and_fifo(bank: ModuleType, workers: Any) -> None:
    workers("w1")
    workers("w2")
    actors = [bank.account.ref(f"acct-{i}") for i in range(50)]
    per_thread = 1250  # 4 threads x 1250 = 5,000 messages

    def sender(tid: int) -> None:
        counters: Counter[int] = Counter()
        for i in range(per_thread):
            index = (i * 7 + tid) % len(actors)
            actors[index].send({"add": 1, "sender": f"s{tid}", "n": counters[index]})
            counters[index] += 1

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def all_done() -> bool:
        return sum(a.snapshot().version for a in actors) == 4 * per_thread

    wait_until(all_done, 120, interval=0.5, message="not every message was committed")
    for ref in actors:
        snap = ref.snapshot()
        assert snap.state["balance"] == snap.version == len(snap.state["seen"])
        by_sender: dict[str, list[int]] = {}
        for sender_id, n in snap.state["seen"]:
            by_sender.setdefault(sender_id, []).append(n)
        for sequence in by_sender.values():
            assert sequence == list(range(len(sequence))), f"{ref} out of order"
        assert snap.pending == 0 and snap.status == "idle"


def test_sigkill_mid_step_applies_once_elsewhere(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    doomed = workers("doomed", concurrency=1)
    ref = bank.account.ref("k1")
    ref.send({"add": 5, "sleep": 1.5})
    _started_pid(redis_client, "k1")
    doomed.kill()  # the whole worker: its Celery message is gone until visibility_timeout
    redis_client.delete("t:started:k1")
    started = time.monotonic()
    workers("survivor", concurrency=1)
    snap = wait_until(
        lambda: (s := ref.snapshot()).version == 1 and s,
        30,
        message="message not recovered by lease + tick",
    )
    # lease 2 s + ticks of 0.5 s + backoff 0.5 s + the 1.5 s step, far from the 1 h
    # visibility_timeout a redelivery would need
    assert time.monotonic() - started < 15
    assert snap.state["balance"] == 5
    assert snap.last_crash is not None and snap.last_crash["reason"] == "worker_lost"
    time.sleep(1.0)
    assert ref.snapshot().version == 1


def test_sigstopped_worker_cannot_commit_after_waking(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    paused = workers("paused", concurrency=1)
    ref = bank.account.ref("k2")
    ref.send({"add": 7, "sleep": 3})
    pid = _started_pid(redis_client, "k2")
    assert pid in paused.child_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        redis_client.delete("t:started:k2")
        workers("other", concurrency=1)
        wait_until(lambda: ref.snapshot().version == 1, 30, message="takeover did not commit")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(
        lambda: "lease_lost" in paused.log_text(),
        15,
        message="the paused worker never tried (and failed) to commit",
    )
    snap = ref.snapshot()
    assert snap.version == 1 and snap.state["balance"] == 7
    assert [h.version for h in ref.history()] == [1]


def test_same_message_id_is_applied_once(bank: ModuleType, workers: Any) -> None:
    worker = workers("w1")
    # the test server runs without persistence: the worker says so at start-up
    wait_until(lambda: "appendonly is off" in worker.log_text(), 10)
    ref = bank.account.ref("dedup")
    assert ref.send({"add": 1}, message_id="pay-1") == "pay-1"
    assert ref.send({"add": 1}, message_id="pay-1") == "pay-1"
    wait_until(lambda: ref.snapshot().version == 1, 15)
    ref.send({"add": 1}, message_id="pay-1")  # after it was applied: still remembered
    ref.send({"add": 10}, message_id="pay-2")
    wait_until(lambda: ref.snapshot().version == 2, 15)
    assert ref.snapshot().state["balance"] == 11


def test_poison_message_is_dead_lettered_and_the_next_applied(
    bank: ModuleType, workers: Any, beat: Any
) -> None:
    workers("w1")
    ref = bank.poison.ref("p")
    ref.send("first")
    bad = ref.send("poison")
    ref.send("after")
    wait_until(
        lambda: ref.snapshot().state == {"applied": ["first", "after"]},
        30,
        message="the poison message blocked the mailbox",
    )
    (letter,) = ref.dead_letters()
    assert letter.message_id == bad and letter.message == "poison"
    assert [c["attempt"] for c in letter.crashes] == [1, 2, 3]
    assert all(c["type"] == "ValueError" and c["traceback"] for c in letter.crashes)
    ref.requeue_dead_letter(bad)
    assert ref.dead_letters() == []
    # requeued: it crashes three more times and comes back as a dead letter, nothing lost
    wait_until(lambda: len(ref.dead_letters()) == 1, 30)
    assert ref.snapshot().state == {"applied": ["first", "after"]}


def test_message_that_kills_its_worker_is_dead_lettered_after_max_attempts(
    bank: ModuleType, workers: Any, beat: Any
) -> None:
    """SPEC 4.1: "kill" SIGKILLs its own pool process each time it is handled. Each death is
    a worker_lost crash counting an attempt; at max_attempts=2 the message is dead-lettered
    and the next one applied, instead of being redelivered without end."""
    worker = workers("w1", concurrency=1)
    ref = bank.supervision.ref("tree.killer", "k")
    ref.send("first")
    bad = ref.send("kill")
    ref.send("after")
    wait_until(
        lambda: ref.snapshot().state == {"applied": ["first", "after"]},
        60,
        message="the message that kills its worker blocked the mailbox",
    )
    (letter,) = ref.dead_letters()
    assert letter.message_id == bad and letter.message == "kill"
    assert [c["attempt"] for c in letter.crashes] == [1, 2]
    assert [c["reason"] for c in letter.crashes] == ["worker_lost", "worker_lost"]
    assert worker.log_text().count("WorkerLostError") >= 2  # two real pool deaths
    snap = ref.snapshot()
    assert (snap.version, snap.pending, snap.status) == (2, 0, "idle")
