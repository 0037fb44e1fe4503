"""Memory: Redis memory per idle actor, and worker memory.

``bench_memory``: N real actors of type ``bench.memo`` (state ``{"total": 1, "name":
"actor-000000"}`` after its step, 35 bytes of JSON), each sent one message and taken through
the real code path (send, claim, step, commit, release) by ``LocalRunner`` in this process,
then two ticks (which drop the transient due hints): the growth of Redis ``used_memory``
divided by N. Everything an actor costs counts: its own keys, its members in its type's
status index, any hint left. A warm-up of 320 actors first creates the type's shared census
keys (16 shards), so they are not charged to the measured ones. The details list one actor's
keys (``MEMORY USAGE``) and meta fields, to show where the bytes go.

Also: worker RSS (main process + pool children, from /proc) of the celery_supervise worker
and of the plain worker after the throughput run; and (``tick_cost``) ``used_memory`` per
bulk-loaded copy of an idle ``bench.counter``, ``load_idle_actors``.
"""

from __future__ import annotations

import contextlib
import json
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


def bench_memory(n: int, client: redis.Redis, actors: ModuleType) -> dict[str, Any]:
    """Redis memory per idle actor after one step (see the module docstring)."""
    from celery_supervise.testing import LocalRunner

    client.flushdb()
    sup = actors.supervision
    runner = LocalRunner(sup)

    def step_all(keys: list[str]) -> None:
        for start in range(0, len(keys), 500):
            for key in keys[start : start + 500]:
                actors.memo.ref(key).send(1)
            runner.run()
            if runner.failures:
                raise AssertionError(f"memory actors failed: {runner.failures[:3]}")

    try:
        step_all([f"warm-{i:06d}" for i in range(320)])
        runner.tick()
        runner.tick()
        before = int(client.info("memory")["used_memory"])
        keys_before = client.dbsize()
        keys = [f"m{i:06d}" for i in range(n)]
        step_all(keys)
        after_step = int(client.info("memory")["used_memory"])
        keys_after_step = client.dbsize()
        runner.tick()
        runner.tick()
        after = int(client.info("memory")["used_memory"])
        keys_after = client.dbsize()
    finally:
        runner.close()
    sample = actors.memo.ref(keys[0])
    meta = client.hgetall(sample.keys.meta)
    if meta.get(b"status") != b"idle" or b"lease_until" in meta:
        raise AssertionError(f"memory actor is not idle after its step: {meta!r}")
    state = meta.get(b"state", b"")
    if json.loads(state)["total"] != 1:
        raise AssertionError(f"memory actor state wrong: {state!r}")
    own = sorted(client.scan_iter(match=f"*{{bench.memo:{keys[0]}}}*", count=1000))
    out = {
        "actors": n,
        "bytes_per_actor": (after - before) / n,
        "bytes_per_actor_before_tick": (after_step - before) / n,
        "keys_per_actor": (keys_after - keys_before) / n,
        "keys_per_actor_before_tick": (keys_after_step - keys_before) / n,
        "state_bytes": len(state),
        "meta_fields": {k.decode(): len(v) for k, v in meta.items()},
        "history_entries": client.llen(sample.keys.history)
        if client.type(sample.keys.history) == b"list"
        else 0,
        "own_keys": {
            k.decode(): {
                "type": client.type(k).decode(),
                "memory_usage": int(client.memory_usage(k) or 0),
            }
            for k in own
        },
    }
    client.flushdb()
    return out
