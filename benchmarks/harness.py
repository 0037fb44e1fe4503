"""What every benchmark shares: the run's configuration, the processes it started, and
small measuring helpers (Redis clock, percentiles, CPU time from /proc)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from celery_supervise.testing import start_beat, start_worker, wait_until

ACTOR_APP = "benchmarks.actor_app"
PLAIN_APP = "benchmarks.plain_app"
KEY_PREFIX = "bench"


class Shape:
    """One throughput row: ``actors`` actors, each sent ``low..high`` messages per wave
    (drawn with a seeded RNG, the same draw for both sides), ``waves`` waves one after the
    other (a wave is measured from its first send to its last commit; the next wave starts
    once it is all committed, so every wave finds its actors idle), from ``senders``
    threads (each sends to its own share of the actors, round-robin); ``trials`` trials per
    side (``None``: ``Config.throughput_trials``)."""

    def __init__(
        self,
        name: str,
        actors: int,
        low: int,
        high: int,
        waves: int,
        senders: int,
        target: float,
        trials: int | None = None,
    ) -> None:
        self.name, self.actors, self.low, self.high = name, actors, low, high
        self.waves, self.senders, self.target, self.trials = waves, senders, target, trials

    @property
    def label(self) -> str:
        per = f"{self.low}" if self.low == self.high else f"{self.low}-{self.high}"
        waves = f", {self.waves} waves" if self.waves > 1 else ""
        threads = f"{self.senders} sender threads" if self.senders > 1 else "1 sender"
        return f"{self.actors:,} actors x {per} msgs{waves}, {threads}"


class Config:
    def __init__(self, quick: bool, concurrency: int, prefetch: int) -> None:
        self.quick = quick
        self.concurrency = concurrency
        self.prefetch = prefetch
        deep = 100 if quick else 250
        waves100 = 3 if quick else 4
        trials1000 = 1 if quick else 2
        #: The throughput rows, by section: ``throughput20`` (deep mailboxes), then
        #: ``throughput100`` and ``throughput1000`` (shallow: 1-5 messages per actor per
        #: wave), each from one sender thread and from four.
        self.shapes: dict[str, list[Shape]] = {
            "throughput20": [Shape("deep20", 20, deep, deep, 1, 1, 10.0)],
            "throughput100": [
                Shape("shallow100", 100, 1, 5, waves100, 1, 5.0),
                Shape("shallow100x4", 100, 1, 5, waves100, 4, 5.0),
            ],
            "throughput1000": [
                Shape("shallow1000", 1000, 1, 5, 1, 1, 5.0, trials1000),
                Shape("shallow1000x4", 1000, 1, 5, 1, 4, 5.0, trials1000),
            ],
        }
        self.throughput_trials = 1 if quick else 3
        self.latency_samples = 1000 if quick else 5000
        self.idle_small = 1_000
        self.idle_big = 100_000 if quick else 1_000_000
        self.due_actors = 10
        self.many_due = 1_000
        self.ticks = 30 if quick else 200
        #: Memory: real actors taken through one step each (``memory.bench_memory``).
        self.memory_actors = 1_000 if quick else 5_000
        #: Recovery with the library defaults (lease 5 s, tick 1 s) and a 2 s step ...
        self.step_seconds = 2.0
        #: ... and with lease 2 s, tick 0.5 s and a 1 s step (target lease + tick + step).
        self.fast_lease, self.fast_tick, self.fast_step = 2.0, 0.5, 1.0
        self.recovery_trials = 1 if quick else 4
        self.plain_recovery_trials = 1 if quick else 2
        self.visibility_timeout = 10  # reduced, for the plain baseline only
        self.restore_interval = 1


# -- process bookkeeping --------------------------------------------------------------------


class Processes:
    """Everything this run started; ``kill_all`` is called whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.live: list[Any] = []

    def worker(self, app: str, name: str, env: dict[str, str], concurrency: int) -> Any:
        proc = start_worker(
            app,
            concurrency=concurrency,
            hostname=f"{name}@%h",
            env=env,
            log_dir=self.log_dir,
            ready_timeout=60,
        )
        self.live.append(proc)
        return proc

    def beat(self, app: str, env: dict[str, str]) -> Any:
        proc = start_beat(app, env=env, schedule_dir=self.log_dir / f"beat-{len(self.live)}")
        self.live.append(proc)
        return proc

    def kill(self, proc: Any) -> None:
        proc.kill()
        with contextlib.suppress(ValueError):
            self.live.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self.live):
            with contextlib.suppress(Exception):
                proc.kill()
        self.live.clear()


# -- small helpers ----------------------------------------------------------------------------


def redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    return wait_until(predicate, timeout=timeout, interval=interval, message=what)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def sample_interleaved(
    ops: dict[str, Callable[[int], None]],
    samples: int,
    warmup: int = 200,
    prepare: dict[str, Callable[[int], None]] | None = None,
) -> dict[str, dict[str, float]]:
    """Time each of ``ops`` ``samples`` times (ms), after ``warmup`` untimed calls each,
    in rounds of 100 taking every op in turn, so background load hits all alike; p50, p99,
    mean and n of each. ``prepare[name](i)``, if given, runs before each call, untimed."""
    prepare = prepare or {}
    for name, op in ops.items():  # warm-up: connections, script loading
        for i in range(warmup):
            if name in prepare:
                prepare[name](i)
            op(i)
    clock = time.perf_counter_ns
    timed: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(samples // 100):
        for name, op in ops.items():
            bucket = timed[name]
            before = prepare.get(name)
            for i in range(100):
                if before is not None:
                    before(i)
                t0 = clock()
                op(i)
                bucket.append((clock() - t0) / 1e6)
    return {
        name: {
            "p50": percentile(v, 50),
            "p99": percentile(v, 99),
            "mean": statistics.fmean(v),
            "n": len(v),
        }
        for name, v in timed.items()
    }


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU seconds spent by this process, one worker (main + pool) and Redis meanwhile."""

    def __init__(self, worker: Any, redis_pid: int) -> None:
        self.groups = {
            "worker main": [worker.pid],
            "pool children": worker.child_pids(),
            "redis": [redis_pid],
        }
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        t = os.times()
        out = {"sender (this process)": t.user + t.system}
        for name, pids in self.groups.items():
            out[name] = sum(cpu_seconds(p) for p in pids)
        return out

    def stop(self) -> dict[str, float]:
        end = self._read()
        return {k: round(end[k] - self.start[k], 2) for k in end}


def meta_fields(client: redis.Redis, keys: list[str], *fields: str) -> list[list[Any]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, list(fields))
    return pipe.execute()
