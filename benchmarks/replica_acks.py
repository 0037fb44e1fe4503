"""What ``supervise_replica_acks`` costs: ``send`` p50/p99 to an already scheduled actor on a
primary with one replica, with ``supervise_replica_acks`` 0 and 1, and a raw ``SET`` of the
same payload on the same primary, sampled interleaved.

With acks = 1 each ``send`` ends with ``WAIT 1 1000`` in its pipeline: one replication round
trip more (the replica's ``REPLCONF ACK`` answers the primary's ``GETACK``). A commit pays the
same once per step, not measured here (``docs/scaling.md``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import KEY_PREFIX, Config, sample_interleaved
from celery_supervise.testing.redis_server import RedisServer


def _in_sync(replica: RedisServer) -> bool:
    with replica.client() as client:
        return client.info("replication").get("master_link_status") == "up"


def bench_replica_acks(
    cfg: Config, actors: ModuleType, new_server: Callable[[], RedisServer]
) -> dict[str, Any]:
    """No workers run: only ``send`` is timed (the actors' first sends publish their runs to
    the broker, which nobody consumes; later sends find them scheduled)."""
    primary = new_server()
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    try:
        deadline = time.monotonic() + 30
        while not _in_sync(replica):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's replica did not sync within 30 s")
            time.sleep(0.05)
        return _measure(cfg, actors, primary)
    finally:
        replica.close()


def _measure(cfg: Config, actors: ModuleType, primary: RedisServer) -> dict[str, Any]:
    rt = actors.supervision.runtime
    before = rt.settings
    raw = redis.Redis.from_url(primary.url)
    refs = [actors.counter.ref(f"ack{i}") for i in range(20)]
    rt.use_settings(dataclasses.replace(before, redis_url=primary.url))  # new clients, once
    on_primary = rt.settings

    def with_acks(n: int) -> Callable[[int], None]:
        settings = dataclasses.replace(on_primary, replica_acks=n)

        def one(i: int) -> None:
            # Only the acks differ, read at each send: swap the settings, keep the clients
            # (use_settings would connect again).
            rt.settings = settings
            refs[i % 20].send(1)

        return one

    def one_set(i: int) -> None:
        raw.set(f"{KEY_PREFIX}:ack:{i % 20}", b"1")

    ops = {"set": one_set, "acks0": with_acks(0), "acks1": with_acks(1)}
    try:
        result: dict[str, Any] = sample_interleaved(ops, cfg.latency_samples)
        waits = int(raw.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    finally:
        rt.use_settings(before)
        raw.close()
    sent_with_acks = result["acks1"]["n"] + 200  # and the warm-up's
    if waits < sent_with_acks:  # the row would measure nothing
        raise RuntimeError(f"{waits} WAIT calls for {sent_with_acks} sends with acks = 1")
    result["wait_calls"] = waits
    return result
