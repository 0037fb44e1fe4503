"""Throughput: messages per second through celery_supervise against plain Celery tasks.

A actors x M messages (each message an integer add), sent one ``ref.send`` at a time,
round-robin over the actors, by this process while the worker runs; time from the first
send to the last commit (``committed_at`` in the actors' meta hashes, Redis clock).
Baseline: the same number of plain Celery tasks ``add(key, 1)``, each committing the
same add to a Redis hash with one Lua script (value, version, commit time), sent with
``apply_async`` one at a time, timed the same way. Both: one worker, prefork, the same
concurrency, ``-O fair``, the same prefetch multiplier, the same broker (this Redis).
The workers' memory is read at the end of the run (``memory``).
"""

from __future__ import annotations

import json
import statistics
from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import (
    ACTOR_APP,
    PLAIN_APP,
    Config,
    CpuMeter,
    Processes,
    meta_fields,
    redis_ms,
    wait_for,
)
from benchmarks.memory import worker_memory_mb


def _actor_trial(
    cfg: Config, client: redis.Redis, actors: ModuleType, trial: int, meter: CpuMeter
) -> dict[str, Any]:
    refs = [actors.counter.ref(f"t{trial}-{i}") for i in range(cfg.actors)]
    metas = [ref.keys.meta for ref in refs]

    def versions() -> int:
        return sum(int(v or 0) for (v,) in meta_fields(client, metas, "version"))

    start = redis_ms(client)
    for _ in range(cfg.per_actor):
        for ref in refs:
            ref.send(1)
    sent = redis_ms(client)
    wait_for(lambda: versions() == cfg.actors * cfg.per_actor, 600, "actor messages committed")
    rows = meta_fields(client, metas, "committed_at", "state")
    end = max(int(at) for at, _ in rows)
    bad = [st for _, st in rows if json.loads(st)["total"] != cfg.per_actor]
    if bad:
        raise AssertionError(f"actor state wrong after throughput run: {bad[:3]}")
    total = cfg.actors * cfg.per_actor
    return {
        "rate": total / ((end - start) / 1000),
        "seconds": (end - start) / 1000,
        "send_seconds": (sent - start) / 1000,
        "cpu": meter.stop(),
    }


def _plain_trial(
    cfg: Config, client: redis.Redis, plain: ModuleType, trial: int, meter: CpuMeter
) -> dict[str, Any]:
    keys = [f"t{trial}-{i}" for i in range(cfg.actors)]
    hashes = [plain.state_key(k) for k in keys]

    def versions() -> int:
        return sum(int(v or 0) for (v,) in meta_fields(client, hashes, "version"))

    start = redis_ms(client)
    for _ in range(cfg.per_actor):
        for key in keys:
            plain.add.apply_async((key, 1))
    sent = redis_ms(client)
    wait_for(lambda: versions() == cfg.actors * cfg.per_actor, 600, "plain tasks committed")
    end = max(int(at) for (at,) in meta_fields(client, hashes, "committed_at"))
    total = cfg.actors * cfg.per_actor
    return {
        "rate": total / ((end - start) / 1000),
        "seconds": (end - start) / 1000,
        "send_seconds": (sent - start) / 1000,
        "cpu": meter.stop(),
    }


def bench_throughput(
    cfg: Config,
    procs: Processes,
    env: dict[str, str],
    client: redis.Redis,
    actors: ModuleType,
    plain: ModuleType,
) -> dict[str, Any]:
    """Both workers run (each app has its own queue); trials alternate celery_supervise and
    plain so that background load on the machine hits both alike; the median trial counts."""
    client.flushdb()
    actor_worker = procs.worker(ACTOR_APP, "bench-actors", env, cfg.concurrency)
    plain_worker = procs.worker(PLAIN_APP, "bench-plain", env, cfg.concurrency)
    # Warm-up: pool processes import, connect, load scripts.
    warm = [actors.counter.ref(f"warm{i}") for i in range(cfg.actors)]
    for ref in warm:
        ref.send(1)
    for i in range(cfg.actors):
        plain.add.apply_async((f"warm{i}", 1))
    wait_for(
        lambda: all(client.hget(r.keys.meta, "version") == b"1" for r in warm), 60, "actor warm-up"
    )
    wait_for(
        lambda: all(
            client.hget(plain.state_key(f"warm{i}"), "version") == b"1" for i in range(cfg.actors)
        ),
        60,
        "plain warm-up",
    )
    actor_trials, plain_trials = [], []
    redis_pid = int(client.info("server")["process_id"])
    for trial in range(cfg.throughput_trials):
        meter = CpuMeter(actor_worker, redis_pid)
        actor_trials.append(_actor_trial(cfg, client, actors, trial, meter))
        meter = CpuMeter(plain_worker, redis_pid)
        plain_trials.append(_plain_trial(cfg, client, plain, trial, meter))
    out: dict[str, Any] = {
        "messages": cfg.actors * cfg.per_actor,
        "actors": cfg.actors,
        "actor_trials": actor_trials,
        "plain_trials": plain_trials,
        "actor_rate": statistics.median(t["rate"] for t in actor_trials),
        "plain_rate": statistics.median(t["rate"] for t in plain_trials),
        "actor_worker": worker_memory_mb(actor_worker),
        "plain_worker": worker_memory_mb(plain_worker),
    }
    procs.kill(actor_worker)
    procs.kill(plain_worker)
    client.flushdb()
    return out
