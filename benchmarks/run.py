#!/usr/bin/env python
"""celery_supervise benchmark: one run, one machine, one table.

    python benchmarks/run.py            # full run (a few minutes)
    python benchmarks/run.py --quick    # smoke run (about a minute)
    make bench

It starts its own Redis servers (``celery_supervise.testing.RedisServer``: no persistence,
a free port) and real ``celery worker`` / ``celery beat`` subprocesses for two apps in this
directory -- ``benchmarks.actor_app`` (celery_supervise) and ``benchmarks.plain_app`` (plain
Celery tasks doing the same work) -- configured through ``BENCH_*`` environment variables.
Every process it started is killed on exit, on an error and on Ctrl-C / SIGTERM.

What is measured (``docs/performance.md`` has the results and the discussion):

throughput
    A actors x M messages (each message an integer add), sent one ``ref.send`` at a time,
    round-robin over the actors, by this process while the worker runs; time from the first
    send to the last commit (``committed_at`` in the actors' meta hashes, Redis clock).
    Baseline: the same number of plain Celery tasks ``add(key, 1)``, each committing the
    same add to a Redis hash with one Lua script (value, version, commit time), sent with
    ``apply_async`` one at a time, timed the same way. Both: one worker, prefork, the same
    concurrency, ``-O fair``, the same prefetch multiplier, the same broker (this Redis).
send latency
    p50/p99 of ``ref.send`` against a raw ``SET`` of the same payload with redis-py on the same
    server, sampled interleaved. Reported twice: to an actor that is already scheduled (no
    Celery publish: the common case under load) and to an idle actor (the send publishes the
    actor's Celery task). ``apply_async`` of a plain task is shown for reference.
tick cost
    ``run_tick(supervision)`` in this process, averaged over many ticks, with 1,000 and with
    N (1,000,000; ``--quick``: 100,000) registered idle actors, and the same 10 due actors in
    both cases (5 with a due backoff restart, 5 with a due durable timer), re-armed before
    every tick so every tick does the same real work; ticks alternate between the two sizes
    (two Redis servers). The idle actors are bulk-loaded (see ``load_idle_actors``) as
    copies of what a real actor leaves after processing a message. For scale, the details
    also show one tick with 1,000 due actors.
recovery
    A worker is SIGKILLed (its whole process group) in the middle of a 2 s step; time from
    the kill until the message is committed by another worker, with the library defaults
    (lease 5 s, tick 1 s, beat running). Baseline: a plain ``acks_late=True`` task on the
    Redis broker, whose redelivery waits for ``visibility_timeout`` (default 3600 s, not
    waited for); measured with a reduced visibility_timeout and restore sweep, stated.
memory
    Redis ``used_memory`` delta per bulk-loaded idle actor; worker RSS (main process + pool
    children, from /proc) of the celery_supervise worker and of the plain worker after the
    throughput run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from celery_supervise.testing import (  # noqa: E402
    RedisServer,
    start_beat,
    start_worker,
    wait_until,
)

ACTOR_APP = "benchmarks.actor_app"
PLAIN_APP = "benchmarks.plain_app"
KEY_PREFIX = "bench"


class Config:
    def __init__(self, quick: bool, concurrency: int, prefetch: int) -> None:
        self.quick = quick
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.actors = 20
        self.per_actor = 100 if quick else 500
        self.throughput_trials = 1 if quick else 3
        self.latency_samples = 1000 if quick else 5000
        self.idle_small = 1_000
        self.idle_big = 100_000 if quick else 1_000_000
        self.due_actors = 10
        self.many_due = 1_000
        self.ticks = 30 if quick else 200
        self.step_seconds = 2.0
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


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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


# -- throughput -------------------------------------------------------------------------------


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


# -- send latency -----------------------------------------------------------------------------


def bench_latency(
    cfg: Config, client: redis.Redis, url: str, actors: ModuleType, plain: ModuleType
) -> dict[str, Any]:
    """No workers run meanwhile: only the client side is timed."""
    client.flushdb()
    raw = redis.Redis.from_url(url)
    scheduled = [actors.counter.ref(f"lat{i}") for i in range(20)]
    fresh = iter(range(10**9))
    clock = time.perf_counter_ns
    samples: dict[str, list[float]] = {"set": [], "send": [], "wake": [], "apply_async": []}

    def one_set(i: int) -> None:
        raw.set(f"{KEY_PREFIX}:lat:{i % 20}", b"1")

    def one_send(i: int) -> None:
        scheduled[i % 20].send(1)

    def one_wake(i: int) -> None:
        actors.counter.ref(f"wake{next(fresh)}").send(1)

    def one_apply(i: int) -> None:
        plain.add.apply_async(("lat", 1))

    ops = {"set": one_set, "send": one_send, "wake": one_wake, "apply_async": one_apply}
    for op in ops.values():  # warm-up: connections, script loading
        for i in range(200):
            op(i)
    rounds, per_round = cfg.latency_samples // 100, 100
    for _ in range(rounds):  # interleaved, so background load hits all alike
        for name, op in ops.items():
            bucket = samples[name]
            for i in range(per_round):
                t0 = clock()
                op(i)
                bucket.append((clock() - t0) / 1e6)
    raw.close()
    client.flushdb()
    return {
        name: {
            "p50": percentile(v, 50),
            "p99": percentile(v, 99),
            "mean": statistics.fmean(v),
            "n": len(v),
        }
        for name, v in samples.items()
    }


# -- tick cost and memory per idle actor ------------------------------------------------------


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


def _check_loader_matches_keyspace(keyspace: Any) -> None:
    keys = keyspace.actor("bench.counter", "idle-0000001")
    assert keys.meta == f"{keyspace.prefix}:a:{{bench.counter:idle-0000001}}:meta", keys.meta
    assert keys.history == f"{keyspace.prefix}:a:{{bench.counter:idle-0000001}}:hist"


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
    _check_loader_matches_keyspace(actors.supervision.keyspace)
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


# -- recovery after SIGKILL -------------------------------------------------------------------


def _owner(workers: list[Any], pid: int) -> Any:
    for worker in workers:
        if pid == worker.pid or pid in worker.child_pids():
            return worker
    raise AssertionError(f"pid {pid} belongs to none of the workers")


def _recovery_phases(
    client: redis.Redis, events: str, key: str, killed_at: int, committed_at: int
) -> dict[str, float]:
    """Seconds from the kill to each decision the tick logged (stream ids are Redis ms)."""
    phases: dict[str, float] = {}
    for entry_id, fields in client.xrange(events, min=str(killed_at)):
        record = json.loads(fields[b"event"])
        if record.get("key") != key:
            continue
        at = int(entry_id.decode().split("-")[0])
        name = record["event"] + (f":{record['reason']}" if "reason" in record else "")
        phases.setdefault(name, (at - killed_at) / 1000)
    phases["committed"] = (committed_at - killed_at) / 1000
    return phases


def bench_recovery(
    cfg: Config,
    procs: Processes,
    env: dict[str, str],
    client: redis.Redis,
    actors: ModuleType,
    plain: ModuleType,
) -> dict[str, Any]:
    out: dict[str, Any] = {"step_seconds": cfg.step_seconds}
    kill_after = cfg.step_seconds / 2

    # celery_supervise: library defaults (lease 5 s, tick 1 s), beat running ------------------
    client.flushdb()
    sup = actors.supervision
    out["lease_seconds"] = sup.settings.lease_seconds
    out["tick_interval"] = sup.settings.tick_interval
    workers = [procs.worker(ACTOR_APP, f"rec-{i}", env, cfg.concurrency) for i in range(2)]
    procs.beat(ACTOR_APP, env)
    trials: list[float] = []
    phases: list[dict[str, float]] = []
    # Where in the step the worker dies matters: its lease is renewed every lease/3, so a
    # kill just after a renewal leaves the longest lease to run out (the worst case).
    just_renewed = sup.settings.lease_seconds / 3 + 0.1
    offsets = [kill_after]
    if just_renewed < cfg.step_seconds - 0.1:
        offsets.append(just_renewed)
    out["kill_offsets"] = []
    for trial in range(cfg.recovery_trials):
        offset = offsets[trial % len(offsets)] if cfg.recovery_trials > 1 else offsets[-1]
        out["kill_offsets"].append(offset)
        ref = actors.slow.ref(f"r{trial}")
        started_key = f"{KEY_PREFIX}:started:{ref.key}"
        ref.send({"sleep": cfg.step_seconds})
        pid = int(wait_for(lambda k=started_key: client.get(k), 30, "slow step started"))
        time.sleep(offset)
        victim = _owner(workers, pid)
        killed_at = redis_ms(client)
        procs.kill(victim)
        workers.remove(victim)
        meta = ref.keys.meta
        wait_for(
            lambda m=meta: client.hget(m, "version") == b"1", 120, "message committed elsewhere"
        )
        committed_at = int(client.hget(meta, "committed_at") or 0)
        state = json.loads(client.hget(meta, "state") or b"null")
        if state != {"done": 1}:
            raise AssertionError(f"recovered actor state is {state!r}, expected done=1")
        trials.append((committed_at - killed_at) / 1000)
        phases.append(
            _recovery_phases(client, sup.keyspace.events, ref.key, killed_at, committed_at)
        )
        if trial + 1 < cfg.recovery_trials:
            workers.append(procs.worker(ACTOR_APP, f"rec-r{trial}", env, cfg.concurrency))
    out["actor_trials"] = trials
    out["actor_phases"] = phases
    procs.kill_all()

    # plain Celery, acks_late=True, reduced visibility_timeout --------------------------------
    client.flushdb()
    penv = dict(
        env,
        BENCH_VISIBILITY_TIMEOUT=str(cfg.visibility_timeout),
        BENCH_RESTORE_INTERVAL=str(cfg.restore_interval),
    )
    workers = [procs.worker(PLAIN_APP, f"prec-{i}", penv, cfg.concurrency) for i in range(2)]
    plain_trials: list[float] = []
    for trial in range(cfg.plain_recovery_trials):
        token = f"p{trial}"
        started_key = f"{KEY_PREFIX}:started:{token}"
        plain.slow.apply_async((token, cfg.step_seconds))
        pid = int(wait_for(lambda k=started_key: client.get(k), 30, "plain slow task started"))
        time.sleep(kill_after)
        victim = _owner(workers, pid)
        killed_at = redis_ms(client)
        procs.kill(victim)
        workers.remove(victim)
        key = plain.state_key(token)
        wait_for(
            lambda k=key: client.hget(k, "version"),
            cfg.visibility_timeout + 120,
            "plain task redelivered and finished",
            interval=0.1,
        )
        plain_trials.append((int(client.hget(key, "committed_at") or 0) - killed_at) / 1000)
        if trial + 1 < cfg.plain_recovery_trials:
            workers.append(procs.worker(PLAIN_APP, f"prec-r{trial}", penv, cfg.concurrency))
    out["plain_trials"] = plain_trials
    out["visibility_timeout"] = cfg.visibility_timeout
    procs.kill_all()
    client.flushdb()
    return out


# -- report -----------------------------------------------------------------------------------


def machine_info(client: redis.Redis) -> dict[str, Any]:
    import celery
    import kombu

    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = client.info("server")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": str(server.get("redis_version"))
        + (f" (valkey {server['valkey_version']})" if "valkey_version" in server else ""),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_py": redis.__version__,
    }


def fmt(value: float, digits: int = 2) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def build_table(cfg: Config, r: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def row(
        metric: str, ours: str, base: str, ratio: float | None, target: str, met: bool | None
    ) -> None:
        rows.append(
            [
                metric,
                ours,
                base,
                "" if ratio is None else f"{ratio:.2f}x",
                target,
                "" if met is None else ("yes" if met else "NO"),
            ]
        )

    if "throughput" in r:
        t = r["throughput"]
        ratio = t["actor_rate"] / t["plain_rate"]
        row(
            f"throughput, msg/s ({t['actors']} actors x {t['messages'] // t['actors']})",
            fmt(t["actor_rate"]),
            fmt(t["plain_rate"]) + " (plain tasks)",
            ratio,
            ">= 3x",
            ratio >= 3,
        )
    if "latency" in r:
        lat = r["latency"]
        s, w, base, ap = lat["send"], lat["wake"], lat["set"], lat["apply_async"]
        for label, series in (("actor already scheduled", s), ("wakes idle actor: + publish", w)):
            for pct in ("p50", "p99"):
                ratio = series[pct] / base[pct]
                row(
                    f"send {pct}, ms ({label})",
                    fmt(series[pct], 3),
                    fmt(base[pct], 3) + " (redis SET)",
                    ratio,
                    "<= 3x" if pct == "p50" else "-",
                    ratio <= 3 if pct == "p50" else None,
                )
        row(
            "  for reference: apply_async p50 / p99, ms",
            "",
            f"{fmt(ap['p50'], 3)} / {fmt(ap['p99'], 3)}",
            None,
            "-",
            None,
        )
    if "tick" in r:
        tk = r["tick"]
        big, small = tk["big"], tk["small"]
        ratio = big["due"]["mean_ms"] / small["due"]["mean_ms"]
        row(
            f"tick, ms mean ({cfg.due_actors} due; {big['idle']:,} vs {small['idle']:,} idle)",
            fmt(big["due"]["mean_ms"]),
            fmt(small["due"]["mean_ms"]) + f" ({small['idle']:,} idle)",
            ratio,
            "<= 2",
            ratio <= 2,
        )
        row(
            f"tick, ms mean (nothing due; {big['idle']:,} vs {small['idle']:,} idle)",
            fmt(big["empty"]["mean_ms"]),
            fmt(small["empty"]["mean_ms"]) + f" ({small['idle']:,} idle)",
            big["empty"]["mean_ms"] / small["empty"]["mean_ms"],
            "-",
            None,
        )
        row(
            "Redis memory per idle actor, bytes",
            fmt(tk["bytes_per_idle_actor"], 0),
            "",
            None,
            "-",
            None,
        )
    if "recovery" in r:
        rc = r["recovery"]
        ours = max(rc["actor_trials"])
        limit = rc["lease_seconds"] + 2 * rc["tick_interval"] + rc["step_seconds"]
        plain_t = max(rc["plain_trials"]) if rc["plain_trials"] else float("nan")
        row(
            f"recovery after SIGKILL mid-step, s (worst of {len(rc['actor_trials'])}; step "
            f"{rc['step_seconds']:g} s)",
            fmt(ours),
            f"{fmt(plain_t)} (acks_late, visibility_timeout={rc['visibility_timeout']} s)",
            ours / plain_t,
            f"<= {limit:g} s (lease+2 ticks+step)",
            ours <= limit,
        )
        row(
            "  plain Celery with the default visibility_timeout",
            "",
            ">= 3600 (not waited for)",
            None,
            "-",
            None,
        )
    if "throughput" in r:
        t = r["throughput"]
        a, p = t["actor_worker"], t["plain_worker"]
        row(
            f"worker RSS, MB (main + {cfg.concurrency} children)",
            fmt(a["rss_mb"], 1),
            fmt(p["rss_mb"], 1) + " (plain worker)",
            a["rss_mb"] / p["rss_mb"],
            "-",
            None,
        )
    return rows


def render(rows: list[list[str]]) -> str:
    header = ["metric", "celery_supervise", "plain Celery / baseline", "ratio", "target", "met?"]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in table
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~1 min)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=1,
        help="worker_prefetch_multiplier for both apps (default 1)",
    )
    parser.add_argument(
        "--only", default="throughput,latency,tick,recovery", help="comma-separated sections to run"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results here")
    parser.add_argument("--keep-logs", action="store_true", help="keep worker logs")
    args = parser.parse_args()
    cfg = Config(args.quick, args.concurrency, args.prefetch)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    log_dir = Path(tempfile.mkdtemp(prefix="celery-supervise-bench-"))
    procs = Processes(log_dir)
    servers: list[RedisServer] = []

    def new_server() -> RedisServer:
        srv = RedisServer(extra_args=["--maxmemory-policy", "noeviction"])
        servers.append(srv)
        return srv.start()

    results: dict[str, Any] = {"quick": cfg.quick}
    started = time.monotonic()
    ok = False
    try:
        server = new_server()
        env = {
            "BENCH_REDIS_URL": server.url,
            "BENCH_KEY_PREFIX": KEY_PREFIX,
            "BENCH_PREFETCH": str(cfg.prefetch),
            # Workers import benchmarks.* from the project root, wherever this was run from.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        for name in (
            "BENCH_LEASE",
            "BENCH_TICK",
            "BENCH_VISIBILITY_TIMEOUT",
            "BENCH_RESTORE_INTERVAL",
        ):
            os.environ.pop(name, None)  # the library defaults, whatever the caller's shell says
        os.environ.update(env)
        from benchmarks import actor_app, plain_app

        actor_app.app.set_current()  # the last app created is current; refs resolve through it

        client = redis.Redis.from_url(server.url)
        results["machine"] = machine_info(client)
        results["loadavg_start"] = os.getloadavg()
        print(
            f"celery_supervise benchmark ({'quick' if cfg.quick else 'full'}) - Redis at "
            f"{server.url}, logs in {log_dir}",
            flush=True,
        )
        print(
            f"load average at start: {' '.join(f'{x:.2f}' for x in results['loadavg_start'])}",
            flush=True,
        )
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("throughput", lambda: bench_throughput(cfg, procs, env, client, actor_app, plain_app)),
            ("latency", lambda: bench_latency(cfg, client, server.url, actor_app, plain_app)),
            ("recovery", lambda: bench_recovery(cfg, procs, env, client, actor_app, plain_app)),
            ("tick", lambda: bench_tick(cfg, client, actor_app, new_server)),
        ]
        for name, step in steps:
            if name not in sections:
                continue
            t0 = time.monotonic()
            print(f"- {name} ...", end=" ", flush=True)
            results[name] = step()
            print(f"{time.monotonic() - t0:.0f} s", flush=True)
        results["loadavg_end"] = os.getloadavg()
        results["seconds"] = time.monotonic() - started
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything this run started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        procs.kill_all()
        for srv in servers:
            with contextlib.suppress(Exception):
                srv.close()
        if not ok:
            print(f"worker logs kept in {log_dir}", file=sys.stderr)
        elif not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    m = results["machine"]
    print()
    print(render(build_table(cfg, results)))
    print()
    print(
        f"{m['date']} | {m['cores']} cores {m['cpu']} | {m['ram_gib']} GiB | {m['os']} | "
        f"Python {m['python']} | Redis {m['redis']} | celery {m['celery']} | kombu {m['kombu']}"
        f" | redis-py {m['redis_py']}"
    )
    la0, la1 = results["loadavg_start"], results["loadavg_end"]
    print(
        f"load average (1/5/15 min): start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, "
        f"end {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}; run took {results['seconds']:.0f} s; "
        f"worker: prefork -c {cfg.concurrency}, -O fair, prefetch {cfg.prefetch}"
    )
    details(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def details(r: dict[str, Any]) -> None:
    """The numbers behind the table, for the curious and for docs/performance.md."""
    print("\ndetails:")
    if "throughput" in r:
        t = r["throughput"]
        for label, key in (
            ("celery_supervise", "actor_trials"),
            ("plain Celery    ", "plain_trials"),
        ):
            print(
                f"  throughput {label}: "
                + "; ".join(
                    f"{x['rate']:,.0f} msg/s ({t['messages']} in {x['seconds']:.2f} s, sending "
                    f"{x['send_seconds']:.2f} s)"
                    for x in t[key]
                )
            )
            print(f"    CPU seconds during the first trial: {t[key][0]['cpu']}")
        a, p = t["actor_worker"], t["plain_worker"]
        print(
            f"  worker memory: celery_supervise RSS {a['rss_mb']:.1f} MB PSS {a['pss_mb']:.1f} MB;"
            f" plain RSS {p['rss_mb']:.1f} MB PSS {p['pss_mb']:.1f} MB "
            f"({a['processes']} processes each)"
        )
    if "latency" in r:
        for name, v in r["latency"].items():
            print(
                f"  latency {name:12s} p50 {v['p50']:.3f} ms  p99 {v['p99']:.3f} ms  "
                f"mean {v['mean']:.3f} ms  (n={v['n']})"
            )
    if "tick" in r:
        tk = r["tick"]
        for size in ("small", "big"):
            for kind in ("due", "empty"):
                v = tk[size][kind]
                print(
                    f"  tick {tk[size]['idle']:>9,} idle, {kind:5s}: mean {v['mean_ms']:.2f} ms "
                    f"p50 {v['p50_ms']:.2f} p99 {v['p99_ms']:.2f} over {v['ticks']} ticks; "
                    f"outcomes/tick {v['outcomes_per_tick']}"
                )
        for size in ("small", "big"):
            v = tk[size]
            print(
                f"  bulk load {v['idle']:,} idle actors: {v['dbsize']:,} keys, "
                f"{v['used_memory_mb']:.0f} MB used_memory, {v['bytes_per_idle_actor']:.0f} B "
                f"per actor, loaded in {v['load_seconds']:.1f} s"
            )
        md = tk["many_due"]
        print(
            f"  tick with {md['due']:,} due actors (half restarts, half timers): mean "
            f"{md['mean_ms']:.0f} ms over {md['ticks']} ticks = "
            f"{md['mean_ms'] / md['due']:.2f} ms per due actor; outcomes/tick "
            f"{md['outcomes_per_tick']}"
        )
        print(
            f"  idle actor template: {tk['template_fields']} meta fields, "
            f"{tk['template_history']} history entries"
        )
    if "recovery" in r:
        rc = r["recovery"]
        for offset, phases in zip(rc["kill_offsets"], rc["actor_phases"], strict=True):
            print(
                f"  recovery, killed {offset:.2f} s into the step; s after SIGKILL: "
                + ", ".join(f"{k} {v:.2f}" for k, v in sorted(phases.items(), key=lambda kv: kv[1]))
            )
        print(
            f"  recovery trials: celery_supervise {[round(x, 2) for x in rc['actor_trials']]} s;"
            f" plain (visibility_timeout={rc['visibility_timeout']} s, restore sweep every 1 s) "
            f"{[round(x, 2) for x in rc['plain_trials']]} s"
        )


if __name__ == "__main__":
    sys.exit(main())
