"""Memory: Redis ``used_memory`` delta per bulk-loaded idle actor (the tick-cost benchmark
loads them, with ``load_idle_actors``); worker RSS (main process + pool children, from
/proc) of the celery_supervise worker and of the plain worker after the throughput run.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import redis


def process_memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB, from /proc."""
    rss = pss = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def worker_memory_mb(proc: Any) -> dict[str, float]:
    pids = [proc.pid, *proc.child_pids()]
    rss = pss = 0
    for pid in pids:
        r, p = process_memory_kb(pid)
        rss, pss = rss + r, pss + p
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "processes": len(pids)}


def make_template(
    actors: ModuleType, client: redis.Redis
) -> tuple[dict[bytes, bytes], list[bytes]]:
    """One real actor, processed through the real code path (send, claim, step, commit,
    release) in this process; its meta hash and history are what every idle copy gets."""
    from celery_supervise.testing import LocalRunner

    sup = actors.supervision
    runner = LocalRunner(sup)
    try:
        ref = actors.counter.ref("template")
        ref.send(1)
        runner.run()
        if runner.failures:
            raise AssertionError(f"template actor failed: {runner.failures}")
    finally:
        runner.close()
    meta = client.hgetall(ref.keys.meta)
    hist = client.lrange(ref.keys.history, 0, -1)
    if meta.get(b"status") != b"idle" or b"lease_until" in meta or client.llen(ref.keys.mailbox):
        raise AssertionError(f"template actor is not idle after processing: {meta!r}")
    # Leave no trace of the template: its keys and its (transient) due hint.
    member = "bench.counter:template"
    client.zrem(sup.keyspace.due_bucket(member), member)
    client.delete(ref.keys.meta, ref.keys.history, ref.keys.mailbox)
    return meta, hist


def load_idle_actors(
    client: redis.Redis,
    keyspace: Any,
    meta: dict[bytes, bytes],
    hist: list[bytes],
    start: int,
    stop: int,
    prefix: str = "idle-",
) -> None:
    """Bulk-load idle actors ``prefix{start..stop-1}`` of type ``bench.counter``.

    Creating a million actors through ``send`` plus a worker run each would take far too long
    for a benchmark, so each is written directly, pipelined (one round trip per 2,000
    commands), as exactly what ``send.lua`` + ``claim.lua`` + ``commit.lua`` + ``release.lua``
    leave behind for an actor that handled one message and went idle: the template's meta
    hash (type, key, version, status=idle, token, seq, consumed, sched=0, state, committed_at,
    ...; no lease) with its own ``key`` field, and its one-entry history list. The mailbox
    is empty (an empty Redis list does not exist) and there is NO due hint: the tick drops an
    idle actor's last hint once it has looked at it, so idle actors are invisible to it.
    """
    pipe = client.pipeline(transaction=False)
    queued = 0
    for i in range(start, stop):
        key = f"{prefix}{i:07d}"
        base = f"{keyspace.prefix}:a:{{bench.counter:{key}}}"
        fields = dict(meta)
        fields[b"key"] = key.encode()
        pipe.hset(f"{base}:meta", mapping=fields)
        if hist:
            pipe.rpush(f"{base}:hist", *hist)
        queued += 2
        if queued >= 2000:
            pipe.execute()
            queued = 0
    pipe.execute()


def check_loader_matches_keyspace(keyspace: Any) -> None:
    keys = keyspace.actor("bench.counter", "idle-0000001")
    assert keys.meta == f"{keyspace.prefix}:a:{{bench.counter:idle-0000001}}:meta", keys.meta
    assert keys.history == f"{keyspace.prefix}:a:{{bench.counter:idle-0000001}}:hist"
