"""A prefork pool process that dies mid-step (here: its handler SIGKILLs it, as the OOM
killer or a segfault in a C extension would) is noticed by its parent at once, which ends
the dead step's lease (``child_lost.py``): the ``worker_lost`` crash, the retry and the
dead-lettering at ``max_attempts`` follow without waiting for the lease.

The worker and beat run with a 30 s lease and the test waits far less than that for three
pool deaths: waiting for even one lease to run out would time it out. A whole worker killed
leaves no parent to notice; that case still recovers by the lease
(``tests/workers/test_guarantees.py::test_sigkill_mid_step_applies_once_elsewhere``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from tests.conftest import BANK
from tests.harness import start_beat, start_worker, wait_until

#: The lease the worker runs with (seconds): longer than the test waits.
LEASE = 30.0
#: How long the test waits for three pool deaths to be recovered (seconds).
WAIT = LEASE - 10.0


def _events(redis_client: redis.Redis, name: str) -> list[dict[str, Any]]:
    found = [json.loads(f[b"event"]) for _, f in redis_client.xrange("t:events")]
    return [e for e in found if e["event"] == name]


def test_a_pool_process_dying_mid_step_is_recovered_without_waiting_for_its_lease(
    bank: ModuleType, bank_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = {**bank_env, "TEST_LEASE": str(LEASE)}
    with contextlib.ExitStack() as stack:
        worker = start_worker(BANK, concurrency=2, hostname="oom@%h", env=env, log_dir=tmp_path)
        stack.callback(worker.kill)
        beat = start_beat(BANK, env=env, schedule_dir=tmp_path / "beat")
        stack.callback(beat.kill)
        ref = bank.supervision.ref("tree.oom", "k")
        ref.send("first")
        ref.send("die_once")
        bad = ref.send("die")
        ref.send("after")
        wait_until(
            lambda: ref.snapshot().state == {"applied": ["first", "die_once", "after"]},
            WAIT,
            interval=0.2,
            message="pool deaths were not recovered before the lease would have run out",
        )
        log = worker.log_text()
    assert log.count("WorkerLostError") >= 3, log[-3000:]  # three real pool deaths
    # "die_once": one worker_lost crash at its first attempt, applied at its second
    # "die": dead-lettered after its two attempts, each a worker_lost crash
    (letter,) = ref.dead_letters()
    assert letter.message_id == bad and letter.message == "die"
    assert [(c["reason"], c["attempt"]) for c in letter.crashes] == [
        ("worker_lost", 1), ("worker_lost", 2),
    ]  # fmt: skip
    crashes = [json.loads(c) for c in redis_client.lrange(ref.keys.crashes, 0, -1)][::-1]
    assert [(c["reason"], c["attempt"]) for c in crashes] == [
        ("worker_lost", 1), ("worker_lost", 1), ("worker_lost", 2),
    ]  # fmt: skip
    # Each dead process's parent named it and ended its lease, then visited the actor at
    # once; a tick in the other pool process, finding the hint due in that millisecond,
    # may record the same crash first (the parent's visit then only checks: one crash).
    lost = _events(redis_client, "child_lost")
    assert [e["lease"] for e in lost] == ["ended"] * 3
    assert all(e["outcome"] in ("worker_lost", "checked") for e in lost), lost
    assert [e["worker"] for e in lost] == [c["worker"] for c in crashes]
    assert len({e["worker"] for e in lost}) == 3  # three pool processes, "oom@host:pid"
    assert all(e["worker"].startswith("oom@") for e in lost)
    snap = ref.snapshot()
    assert (snap.version, snap.pending, snap.status) == (3, 0, "idle")
