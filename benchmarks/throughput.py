"""Throughput: messages per second through celery_supervise against plain Celery tasks.

One row per ``harness.Shape``: A actors, each sent a number of messages per wave (500 for the
deep-mailbox row; 1-5, drawn with a seeded RNG, for the shallow rows, where nearly every
message finds its actor idle), each message an integer add, sent one ``ref.send`` at a time,
round-robin over the actors, while the worker runs; from one thread, or from four, each
sending to its own quarter of the actors. A wave is timed from its first send to its last
commit (``committed_at`` in the actors' meta hashes, Redis clock); the next wave starts when
the type's ``steps`` census counter says every message is committed, so each wave finds its
actors idle again. The rate is messages / the summed wave times.

Baseline: the same messages as plain Celery tasks ``add(key, 1)``, each committing the same
add to a Redis hash with one Lua script (value, version, commit time, a shared done counter),
sent with ``apply_async`` one at a time in the same order from the same number of threads,
timed the same way. Both: one worker, prefork, the same concurrency, ``-O fair``, the same
prefetch multiplier, the same broker (this Redis). Trials alternate the two sides; the median
counts (of two trials, the mean). CPU seconds of the sender (this process), the worker's main
process, its pool children and Redis are summed over each row's trials (``CpuMeter``).
"""

from __future__ import annotations

import json
import random
import statistics
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import (
    ACTOR_APP,
    PLAIN_APP,
    Config,
    CpuMeter,
    Processes,
    Shape,
    meta_fields,
    redis_ms,
    wait_for,
)
from benchmarks.memory import worker_memory_mb
from celery_supervise.keyspace import STAT_SHARDS


def plan(shape: Shape, seed: int) -> list[list[int]]:
    """Messages per actor for each wave (the same plan for both sides of one trial)."""
    rng = random.Random(seed)
    return [
        [rng.randint(shape.low, shape.high) for _ in range(shape.actors)]
        for _ in range(shape.waves)
    ]


def send_wave(senders: int, counts: list[int], send_one: Callable[[int], None]) -> None:
    """Send ``counts[i]`` messages to actor ``i``, round-robin; actor ``i`` belongs to sender
    thread ``i % senders`` (so each key has one sender and its messages keep their order)."""

    def sender(me: int) -> None:
        mine = [i for i in range(len(counts)) if i % senders == me]
        for r in range(max((counts[i] for i in mine), default=0)):
            for i in mine:
                if counts[i] > r:
                    send_one(i)

    if senders == 1:
        sender(0)
        return
    errors: list[BaseException] = []

    def run(me: int) -> None:
        try:
            sender(me)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(me,)) for me in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _steps(client: redis.Redis, stats_keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in stats_keys:
        pipe.hget(key, "steps")
    return sum(int(v or 0) for v in pipe.execute())


def _trial(
    shape: Shape,
    client: redis.Redis,
    waves: list[list[int]],
    send_one: Callable[[int], None],
    done: Callable[[], int],
    stamp_keys: list[str],
    meter: CpuMeter,
) -> dict[str, Any]:
    total = seconds = send_seconds = 0.0
    for counts in waves:
        n = sum(counts)
        before = done()
        start = redis_ms(client)
        send_wave(shape.senders, counts, send_one)
        sent = redis_ms(client)
        wait_for(lambda b=before, n=n: done() - b >= n, 300, f"{shape.name}: wave committed", 0.02)
        end = max(int(at or 0) for (at,) in meta_fields(client, stamp_keys, "committed_at"))
        total += n
        seconds += (end - start) / 1000
        send_seconds += (sent - start) / 1000
    return {
        "messages": int(total),
        "rate": total / seconds,
        "seconds": seconds,
        "send_seconds": send_seconds,
        "cpu": meter.stop(),
    }


def _check(client: redis.Redis, keys: list[str], waves: list[list[int]], actor: bool) -> None:
    want = [sum(w[i] for w in waves) for i in range(len(keys))]
    field = "state" if actor else "total"
    got = [json.loads(v)["total"] if actor else int(v) for (v,) in meta_fields(client, keys, field)]
    bad = [(k, g, w) for k, g, w in zip(keys, got, want, strict=True) if g != w]
    if bad:
        side = "actor state" if actor else "plain total"
        raise AssertionError(f"{side} wrong after a throughput trial: {bad[:3]}")


def bench_throughput(
    cfg: Config,
    procs: Processes,
    env: dict[str, str],
    client: redis.Redis,
    actors: ModuleType,
    plain: ModuleType,
    shapes: list[Shape],
) -> dict[str, Any]:
    """Both workers run throughout (each app has its own queue); trials alternate
    celery_supervise and plain so that background load on the machine hits both alike."""
    client.flushdb()
    actor_worker = procs.worker(ACTOR_APP, "bench-actors", env, cfg.concurrency)
    plain_worker = procs.worker(PLAIN_APP, "bench-plain", env, cfg.concurrency)
    ks = actors.supervision.keyspace
    stats_keys = [ks.stats("bench.counter", s) for s in range(STAT_SHARDS)]
    # Warm-up: pool processes import, connect, load scripts.
    warm = [actors.counter.ref(f"warm{i}") for i in range(20)]
    for ref in warm:
        ref.send(1)
    for i in range(20):
        plain.add.apply_async((f"warm{i}", 1))
    wait_for(lambda: _steps(client, stats_keys) >= 20, 60, "actor warm-up")
    wait_for(lambda: int(client.get(plain.DONE_KEY) or 0) >= 20, 60, "plain warm-up")
    redis_pid = int(client.info("server")["process_id"])
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        actor_trials, plain_trials = [], []
        for trial in range(shape.trials or cfg.throughput_trials):
            waves = plan(shape, seed=trial)
            refs = [actors.counter.ref(f"{shape.name}-t{trial}-{i}") for i in range(shape.actors)]
            metas = [ref.keys.meta for ref in refs]
            meter = CpuMeter(actor_worker, redis_pid)
            actor_trials.append(
                _trial(
                    shape,
                    client,
                    waves,
                    lambda i, refs=refs: refs[i].send(1),
                    lambda: _steps(client, stats_keys),
                    metas,
                    meter,
                )
            )
            _check(client, metas, waves, actor=True)
            keys = [f"{shape.name}-t{trial}-{i}" for i in range(shape.actors)]
            hashes = [plain.state_key(k) for k in keys]
            meter = CpuMeter(plain_worker, redis_pid)
            plain_trials.append(
                _trial(
                    shape,
                    client,
                    waves,
                    lambda i, keys=keys: plain.add.apply_async((keys[i], 1)),
                    lambda: int(client.get(plain.DONE_KEY) or 0),
                    hashes,
                    meter,
                )
            )
            _check(client, hashes, waves, actor=False)
        rows.append(
            {
                "name": shape.name,
                "label": shape.label,
                "target": shape.target,
                "actors": shape.actors,
                "senders": shape.senders,
                "actor_trials": actor_trials,
                "plain_trials": plain_trials,
                "actor_rate": statistics.median(t["rate"] for t in actor_trials),
                "plain_rate": statistics.median(t["rate"] for t in plain_trials),
                "actor_cpu_ms": cpu_per_message(actor_trials),
                "plain_cpu_ms": cpu_per_message(plain_trials),
            }
        )
    out: dict[str, Any] = {
        "rows": rows,
        "actor_worker": worker_memory_mb(actor_worker),
        "plain_worker": worker_memory_mb(plain_worker),
    }
    procs.kill(actor_worker)
    procs.kill(plain_worker)
    client.flushdb()
    return out


def cpu_per_message(trials: list[dict[str, Any]]) -> dict[str, float]:
    """CPU milliseconds per message, by process group, over all of a row's trials."""
    messages = sum(t["messages"] for t in trials)
    keys = trials[0]["cpu"].keys()
    return {k: 1000 * sum(t["cpu"][k] for t in trials) / messages for k in keys}
