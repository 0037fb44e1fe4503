"""Send latency: p50/p99 of ``ref.send`` against a raw ``SET`` of the same payload with
redis-py on the same server, sampled interleaved.

Reported twice: to an actor that is already scheduled (no Celery publish: the common case
under load) and to an idle actor (the send publishes the actor's Celery task).
``apply_async`` of a plain task is shown for reference.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import KEY_PREFIX, Config, sample_interleaved


def bench_latency(
    cfg: Config, client: redis.Redis, url: str, actors: ModuleType, plain: ModuleType
) -> dict[str, Any]:
    """No workers run meanwhile: only the client side is timed."""
    client.flushdb()
    raw = redis.Redis.from_url(url)
    scheduled = [actors.counter.ref(f"lat{i}") for i in range(20)]
    fresh = iter(range(10**9))

    def one_set(i: int) -> None:
        raw.set(f"{KEY_PREFIX}:lat:{i % 20}", b"1")

    def one_send(i: int) -> None:
        scheduled[i % 20].send(1)

    def one_wake(i: int) -> None:
        actors.counter.ref(f"wake{next(fresh)}").send(1)

    def one_apply(i: int) -> None:
        plain.add.apply_async(("lat", 1))

    ops = {"set": one_set, "send": one_send, "wake": one_wake, "apply_async": one_apply}
    result = sample_interleaved(ops, cfg.latency_samples)
    raw.close()
    client.flushdb()
    return result
