"""Send latency: p50/p99 of ``ref.send`` against a raw ``SET`` of the same payload with
redis-py on the same server, sampled interleaved.

Reported for an actor that is already scheduled (no Celery publish: the common case under
load); for an idle actor (after one step) while a run of its type is live, so the send only
adds it to the type's ready set; for an idle actor when no run is live (the send publishes
one); and for a send that creates its actor.
``apply_async`` of a plain task is shown for reference.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import KEY_PREFIX, Config, sample_interleaved

#: Untimed calls of each op first (connections, script loading).
WARMUP = 200


def _idle_actors(actors: ModuleType, n: int) -> list[Any]:
    """``n`` actors that have made one step and are idle (run here, by a LocalRunner)."""
    from celery_supervise.testing import LocalRunner

    runner = LocalRunner(actors.supervision)
    try:
        refs = [actors.counter.ref(f"idle{i}") for i in range(n)]
        for ref in refs:
            ref.send(0)
        runner.run(max_runs=10**6)
    finally:
        runner.close()
    return refs


def bench_latency(
    cfg: Config, client: redis.Redis, url: str, actors: ModuleType, plain: ModuleType
) -> dict[str, Any]:
    """No workers run meanwhile: only the client side is timed."""
    client.flushdb()
    raw = redis.Redis.from_url(url)
    scheduled = [actors.counter.ref(f"lat{i}") for i in range(20)]
    fresh = iter(range(10**9))
    idle = iter(_idle_actors(actors, 2 * (cfg.latency_samples + WARMUP)))
    rt = actors.supervision.runtime
    runs_key = rt.keyspace.ready_runs(actors.counter.name)

    def one_set(i: int) -> None:
        raw.set(f"{KEY_PREFIX}:lat:{i % 20}", b"1")

    def one_send(i: int) -> None:
        scheduled[i % 20].send(1)

    def one_wake(i: int) -> None:
        next(idle).send(1)

    def no_run_live(i: int) -> None:
        raw.delete(runs_key)  # untimed: the run the last wake published is forgotten

    def one_create(i: int) -> None:
        actors.counter.ref(f"wake{next(fresh)}").send(1)

    def one_apply(i: int) -> None:
        plain.add.apply_async(("lat", 1))

    ops = {"set": one_set, "send": one_send, "wake": one_wake, "wake_publish": one_wake,
           "create": one_create, "apply_async": one_apply}  # fmt: skip
    result = sample_interleaved(ops, cfg.latency_samples, WARMUP,
                                prepare={"wake_publish": no_run_live})  # fmt: skip
    raw.close()
    client.flushdb()
    return result
