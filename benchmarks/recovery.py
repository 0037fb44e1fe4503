"""Recovery: a worker is SIGKILLed (its whole process group) in the middle of a step;
time from the kill until the message is committed by another worker: with the library
defaults (lease 5 s, tick 1 s, beat running) and a 2 s step (``bench_recovery``), and with
lease 2 s, tick 0.5 s and a 1 s step (``bench_recovery_fast``). Also the detection delay of
each trial: from the dead worker's lease expiry (its last ``lease_until``, read right after
the kill) to the ``worker_lost`` crash the tick recorded (``crashed_at``), both on Redis'
clock; SPEC 4.7 and the docs promise it within about one tick.

Baseline: a plain ``acks_late=True`` task on the Redis broker, whose redelivery waits for
``visibility_timeout`` (default 3600 s, not waited for); measured with a reduced
visibility_timeout and restore sweep, stated.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import redis

from benchmarks.harness import (
    ACTOR_APP,
    KEY_PREFIX,
    PLAIN_APP,
    Config,
    Processes,
    redis_ms,
    wait_for,
)


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


def _detection_delay(client: redis.Redis, meta: str, lease_until: int) -> float:
    """Seconds from the lease's expiry to the ``worker_lost`` crash (Redis ms, both)."""
    record = json.loads(client.hget(meta, "last_crash") or b"{}")
    if record.get("reason") != "worker_lost" or not lease_until:
        raise AssertionError(f"no worker_lost crash after the kill: {record!r}")
    return (int(client.hget(meta, "crashed_at") or 0) - lease_until) / 1000


def _actor_recovery(
    cfg: Config,
    procs: Processes,
    env: dict[str, str],
    client: redis.Redis,
    actors: ModuleType,
    lease: float,
    tick: float,
    step: float,
    prefix: str,
) -> dict[str, Any]:
    """Two workers and beat with ``lease`` and ``tick``; trials kill the worker running a
    ``step``-second step."""
    out: dict[str, Any] = {"step_seconds": step, "lease_seconds": lease, "tick_interval": tick}
    client.flushdb()
    sup = actors.supervision
    with _sending_as_workers(sup.runtime, lease, tick):
        wenv = dict(env, BENCH_LEASE=f"{lease:g}", BENCH_TICK=f"{tick:g}")
        workers = [procs.worker(ACTOR_APP, f"{prefix}-{i}", wenv, cfg.concurrency)
                   for i in range(2)]  # fmt: skip
        procs.beat(ACTOR_APP, wenv)
        trials: list[float] = []
        detections: list[float] = []
        phases: list[dict[str, float]] = []
        # Where in the step the worker dies matters: its lease is renewed every lease/3, so a
        # kill just after a renewal leaves the longest lease to run out (the worst case).
        just_renewed = lease / 3 + 0.1
        offsets = [step / 2]
        if just_renewed < step - 0.1:
            offsets.append(just_renewed)
        out["kill_offsets"] = []
        for trial in range(cfg.recovery_trials):
            offset = offsets[trial % len(offsets)] if cfg.recovery_trials > 1 else offsets[-1]
            out["kill_offsets"].append(offset)
            ref = actors.slow.ref(f"{prefix}{trial}")
            started_key = f"{KEY_PREFIX}:started:{ref.key}"
            ref.send({"sleep": step})
            pid = int(wait_for(lambda k=started_key: client.get(k), 30, "slow step started"))
            time.sleep(offset)
            victim = _owner(workers, pid)
            killed_at = redis_ms(client)
            procs.kill(victim)
            workers.remove(victim)
            meta = ref.keys.meta
            lease_until = int(client.hget(meta, "lease_until") or 0)  # nobody renews it now
            wait_for(lambda m=meta: client.hget(m, "version") == b"1", 120,
                     "message committed elsewhere")  # fmt: skip
            committed_at = int(client.hget(meta, "committed_at") or 0)
            state = json.loads(client.hget(meta, "state") or b"null")
            if state != {"done": 1}:
                raise AssertionError(f"recovered actor state is {state!r}, expected done=1")
            trials.append((committed_at - killed_at) / 1000)
            detections.append(_detection_delay(client, meta, lease_until))
            phases.append(
                _recovery_phases(client, sup.keyspace.events, ref.key, killed_at, committed_at)
            )
            if trial + 1 < cfg.recovery_trials:
                workers.append(procs.worker(ACTOR_APP, f"{prefix}-r{trial}", wenv,
                                            cfg.concurrency))  # fmt: skip
        out["actor_trials"] = trials
        out["actor_phases"] = phases
        out["detection_delays"] = detections
        procs.kill_all()
        client.flushdb()
        return out


@contextmanager
def _sending_as_workers(rt: Any, lease: float, tick: float) -> Iterator[None]:
    """This process sends as the workers run: with their lease and tick (a send that starts
    a run makes it count as live for a lease)."""
    own = rt.settings
    rt.use_settings(dataclasses.replace(own, lease_seconds=lease, tick_interval=tick))
    try:
        yield
    finally:
        rt.use_settings(own)


def bench_recovery_fast(
    cfg: Config, procs: Processes, env: dict[str, str], client: redis.Redis, actors: ModuleType
) -> dict[str, Any]:
    """Lease 2 s, tick 0.5 s, a 1 s step (no plain baseline: it is the same as above)."""
    return _actor_recovery(
        cfg, procs, env, client, actors, cfg.fast_lease, cfg.fast_tick, cfg.fast_step, "f"
    )


def bench_recovery(
    cfg: Config,
    procs: Processes,
    env: dict[str, str],
    client: redis.Redis,
    actors: ModuleType,
    plain: ModuleType,
) -> dict[str, Any]:
    # celery_supervise: library defaults (lease 5 s, tick 1 s), beat running ------------------
    settings = actors.supervision.settings
    out = _actor_recovery(
        cfg,
        procs,
        env,
        client,
        actors,
        settings.lease_seconds,
        settings.tick_interval,
        cfg.step_seconds,
        "r",
    )
    kill_after = cfg.step_seconds / 2

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
