#!/usr/bin/env python
"""Diagnostic: Redis commands per ``ref.send`` and per committed step, and what redis-py's
per-pipeline ``SCRIPT EXISTS`` costs.

    python benchmarks/roundtrips.py

redis-py's ``Pipeline.execute`` calls ``load_scripts()`` whenever a ``Script`` object was
queued on the pipeline, and that sends ``SCRIPT EXISTS <sha>`` as an immediate command: a
second round trip before the pipeline's own. celery_supervise queues its Lua scripts on
pipelines (``send``, ``claim``, ``commit``, ``release``, ``crash``), so each of those costs
two round trips instead of one. This script counts the commands with ``INFO commandstats``
and then times ``ref.send`` and in-process steps with and without that extra round trip
(the "without" case patches ``Pipeline.load_scripts`` to do nothing after the scripts were
loaded once -- a stand-in for a fix, not a fix).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redis.client  # noqa: E402

from celery_supervise.testing import LocalRunner, RedisServer  # noqa: E402


def commands(client: redis.Redis) -> dict[str, int]:
    return {k: v["calls"] for k, v in client.info("commandstats").items()}


def main() -> int:
    with RedisServer() as server:
        os.environ.update(BENCH_REDIS_URL=server.url, BENCH_KEY_PREFIX="rt")
        from benchmarks import actor_app

        actor_app.app.set_current()
        sup = actor_app.supervision
        raw = redis.Redis.from_url(server.url)
        runner = LocalRunner(sup)
        refs = [actor_app.counter.ref(f"x{i}") for i in range(20)]
        for i in range(200):  # warm-up: scripts loaded, every actor scheduled
            refs[i % 20].send(1)
        runner.run()
        for ref in refs:
            ref.send(1)

        n = 1000
        raw.config_resetstat()
        for i in range(n):
            refs[i % 20].send(1)
        sends = commands(raw)
        raw.config_resetstat()
        runner.run()
        steps = commands(raw)
        print(f"per ref.send (actor already scheduled), over {n} sends:")
        for name, calls in sorted(sends.items(), key=lambda kv: -kv[1]):
            if not name.startswith("cmdstat_config"):
                print(f"  {name:28s} {calls / n:5.2f}")
        total_steps = n + len(refs)
        print(f"per committed step (batches of up to 32), over {total_steps} steps:")
        for name, calls in sorted(steps.items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {name:28s} {calls / total_steps:5.2f}")

        original = redis.client.Pipeline.load_scripts
        patched = lambda self: None  # noqa: E731
        results: dict[str, dict[str, list[float]]] = {
            mode: {"send": [], "steps": []} for mode in ("as is", "no SCRIPT EXISTS")
        }
        set_times: list[float] = []
        for _ in range(6):  # interleaved rounds: background load hits both alike
            for mode in results:
                redis.client.Pipeline.load_scripts = original if mode == "as is" else patched
                for i in range(500):
                    t0 = time.perf_counter_ns()
                    refs[i % 20].send(1)
                    results[mode]["send"].append((time.perf_counter_ns() - t0) / 1e6)
                    t0 = time.perf_counter_ns()
                    raw.set("rt:k", b"1")
                    set_times.append((time.perf_counter_ns() - t0) / 1e6)
                runner.run()
                for i in range(2000):
                    refs[i % 20].send(1)
                t0 = time.perf_counter_ns()
                runner.run()
                results[mode]["steps"].append(2000 / ((time.perf_counter_ns() - t0) / 1e9))
        redis.client.Pipeline.load_scripts = original
        runner.close()
        set_p50 = statistics.median(set_times)
        print(f"\nredis SET p50 {set_p50:.3f} ms")
        for mode, r in results.items():
            p50 = statistics.median(r["send"])
            print(
                f"{mode:17s} ref.send p50 {p50:.3f} ms ({p50 / set_p50:.2f}x SET); in-process "
                f"steps/s median {statistics.median(r['steps']):,.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
