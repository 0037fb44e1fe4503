"""Tick capacity: how long real workers and beat take to settle a burst of due actors,
with 1 and with 2 workers (``--concurrency`` processes each), in the same run.

The burst is N idle actors (10,000; ``--quick``: 2,000) bulk-loaded as copies of a real
actor (``memory.load_idle_actors``), each given a durable timer due now and a due hint,
the way ``tick_cost.DueWork`` arms its timers: every one needs a tick's visit (fire the
timer, publish the actor's run) and then a step. Settled: every timer fired and every
mailbox empty, timed on Redis' clock from the arming. The workers and beat are started
(and ready) before the arming, so their start-up is not counted.

This is due timers, not lost leases: a lost lease's visit also records a ``worker_lost``
crash and asks the actor's supervisor for a restart; the tick's share of the work (a
visit, then a publish) is the same.
"""

from __future__ import annotations

import time
import uuid
from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import ACTOR_APP, Config, Processes, redis_ms
from benchmarks.memory import load_idle_actors, make_template


def _arm(sup: Any, client: redis.Redis, keys: list[Any]) -> None:
    from celery_supervise.mailbox import header_json

    pipe = client.pipeline(transaction=False)
    for i, k in enumerate(keys):
        member = f"bench.counter:{k.key}"
        pipe.hset(k.meta, mapping={"status": "idle", "sched": 0})
        pipe.zadd(k.timers, {header_json(uuid.uuid4().hex, timer=True) + "\n1": 0})
        pipe.zadd(sup.keyspace.due_bucket(member), {member: 0})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _left(client: redis.Redis, keys: list[Any]) -> int:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.zcard(k.timers)
        pipe.llen(k.mailbox)
    return sum(int(n) for n in pipe.execute())


def bench_settle(
    cfg: Config, procs: Processes, env: dict[str, str], client: redis.Redis, actors: ModuleType
) -> dict[str, Any]:
    n = 2_000 if cfg.quick else 10_000
    sup = actors.supervision
    out: dict[str, Any] = {"actors": n, "concurrency": cfg.concurrency}
    for workers in (1, 2):
        client.flushdb()
        meta, hist = make_template(actors, client)
        load_idle_actors(client, sup.keyspace, meta, hist, 0, n, prefix="due-")
        keys = [sup.keyspace.actor("bench.counter", f"due-{i:07d}") for i in range(n)]
        for w in range(workers):
            procs.worker(ACTOR_APP, f"settle{workers}-{w}", env, cfg.concurrency)
        procs.beat(ACTOR_APP, env)
        time.sleep(2.0)  # beat's first ticks: nothing due yet
        armed_at = redis_ms(client)
        _arm(sup, client, keys)
        deadline = time.monotonic() + 300
        while _left(client, keys):
            if time.monotonic() > deadline:
                raise AssertionError(f"{n} due actors not settled in 300 s with {workers}")
            time.sleep(0.2)
        out[f"seconds_{workers}"] = (redis_ms(client) - armed_at) / 1000
        procs.kill_all()
    client.flushdb()
    return out
