"""Tick cost: ``run_tick(supervision)`` in this process, averaged over many ticks, with
1,000 and with N (1,000,000; ``--quick``: 100,000) registered idle actors.

The same 10 due actors in both cases (5 with a due backoff restart, 5 with a due durable
timer), re-armed before every tick so every tick does the same real work; ticks alternate
between the two sizes (two Redis servers). The idle actors are bulk-loaded (see
``memory.load_idle_actors``) as copies of what a real actor leaves after processing a
message. For scale, the details also show one tick with 1,000 due actors.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import KEY_PREFIX, Config, percentile
from benchmarks.memory import check_loader_matches_keyspace, load_idle_actors, make_template
from celery_supervise.testing import RedisServer


class DueWork:
    """The same 10 due actors before every tick: half with a due backoff restart, half with a
    due durable timer (the tick moves it to the mailbox and publishes the actor's task)."""

    def __init__(
        self, sup: Any, client: redis.Redis, meta: dict[bytes, bytes], hist: list[bytes], n: int
    ) -> None:
        from celery_supervise.mailbox import header_json

        self.sup = sup
        self.client = client
        load_idle_actors(client, sup.keyspace, meta, hist, 0, n, prefix="due-")
        self.refs = [sup.ref("bench.counter", f"due-{i:07d}") for i in range(n)]
        self.header_json = header_json

    def arm(self) -> None:
        sup, pipe = self.sup, self.client.pipeline(transaction=False)
        half = len(self.refs) // 2
        for i, ref in enumerate(self.refs):
            keys = ref.keys
            member = f"bench.counter:{ref.key}"
            if i < half:
                pipe.hset(
                    keys.meta,
                    mapping={"status": "backoff", "restart_at": 0, "halt_reason": "bench"},
                )
            else:
                entry = self.header_json(uuid.uuid4().hex, timer=True) + "\n1"
                pipe.delete(keys.mailbox)
                pipe.hset(keys.meta, mapping={"status": "idle", "sched": 0})
                pipe.zadd(keys.timers, {entry: 0})
            pipe.zadd(sup.keyspace.due_bucket(member), {member: 0})
        pipe.execute()


class TickTimer:
    """Times ``run_tick`` on one Redis server, with or without the due work re-armed."""

    def __init__(self, sup: Any, due: DueWork) -> None:
        self.sup, self.due = sup, due
        self.times: dict[str, list[float]] = {"due": [], "empty": []}
        self.outcomes: dict[str, dict[str, int]] = {"due": {}, "empty": {}}

    def tick(self, kind: str) -> None:
        from celery_supervise.tick import run_tick

        if kind == "due":
            self.due.arm()
        t0 = time.perf_counter()
        summary = run_tick(self.sup.runtime)
        elapsed = (time.perf_counter() - t0) * 1000
        if "skipped" in summary:
            raise AssertionError(f"tick skipped: {summary}")
        self.times[kind].append(elapsed)
        counts = self.outcomes[kind]
        for k, v in summary.items():
            if isinstance(v, int) and k != "ms":
                counts[k] = counts.get(k, 0) + v

    def reset(self) -> None:
        self.__init__(self.sup, self.due)  # type: ignore[misc]

    def result(self, kind: str) -> dict[str, Any]:
        times = self.times[kind]
        return {
            "mean_ms": statistics.fmean(times),
            "p50_ms": percentile(times, 50),
            "p99_ms": percentile(times, 99),
            "ticks": len(times),
            "outcomes_per_tick": {k: v / len(times) for k, v in self.outcomes[kind].items()},
        }


def _supervision_on(url: str, name: str) -> Any:
    """celery_supervise installed on a second Celery app whose state is on ``url``."""
    from celery import Celery

    from celery_supervise import Supervision

    app = Celery(f"bench_tick_{name}", broker=url, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue="bench_actors",
        supervise_key_prefix=KEY_PREFIX,
        supervise_redis_url=url,
    )
    return Supervision(app)


def bench_tick(
    cfg: Config, client: redis.Redis, actors: ModuleType, new_server: Callable[[], RedisServer]
) -> dict[str, Any]:
    """Two Redis servers, one holding 1,000 idle actors and one holding N; ticks alternate
    between them, so load from elsewhere on the machine hits both sizes alike."""
    client.flushdb()
    meta, hist = make_template(actors, client)
    check_loader_matches_keyspace(actors.supervision.keyspace)
    out: dict[str, Any] = {"template_fields": len(meta), "template_history": len(hist)}
    timers: dict[str, TickTimer] = {}
    for name, idle in (("small", cfg.idle_small), ("big", cfg.idle_big)):
        server = new_server()
        sup = _supervision_on(server.url, name)
        rc = redis.Redis.from_url(server.url)
        due = DueWork(sup, rc, meta, hist, cfg.due_actors)
        before = int(rc.info("memory")["used_memory"])
        t0 = time.monotonic()
        load_idle_actors(rc, sup.keyspace, meta, hist, 0, idle)
        out[name] = {
            "idle": idle,
            "load_seconds": time.monotonic() - t0,
            "bytes_per_idle_actor": (int(rc.info("memory")["used_memory"]) - before) / idle,
            "used_memory_mb": int(rc.info("memory")["used_memory"]) / 2**20,
            "dbsize": rc.dbsize(),
        }
        timers[name] = TickTimer(sup, due)
        for _ in range(5):  # warm-up: scripts loaded, connections made
            timers[name].tick("due")
        timers[name].reset()
    for kind in ("due", "empty"):
        for _ in range(cfg.ticks):
            for name in ("small", "big"):
                timers[name].tick(kind)
    for name in ("small", "big"):
        out[name]["due"] = timers[name].result("due")
        out[name]["empty"] = timers[name].result("empty")
    out["bytes_per_idle_actor"] = out["big"]["bytes_per_idle_actor"]
    # How a tick's cost grows with what is due: 1,000 due actors on the small server.
    small = timers["small"]
    many = DueWork(small.sup, small.due.client, meta, hist, cfg.many_due)
    many_timer = TickTimer(small.sup, many)
    for _ in range(3):
        many_timer.tick("due")
    out["many_due"] = {"due": cfg.many_due, **many_timer.result("due")}
    return out
