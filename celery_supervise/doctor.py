"""``supervise doctor``: is this deployment set up so the guarantees hold?

Each check reads a little (a ``CONFIG GET``, ``ACL DRYRUN``, ``SCRIPT EXISTS``, ``TIME``, the
tick's senders, Celery's ``active_queues``, ``MEMORY USAGE`` over a small sample) and says
``ok``, ``warn`` or ``problem`` with what to do. Nothing here writes to Redis and nothing scans
the keyspace. The verdicts are pure functions of what was read (``*_verdict``), so their
thresholds are tested without a server; the readers around them are tested on real servers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from .codec import text
from .isolation import ISOLATED_TASK
from .keyspace import parse_actor_member
from .registry import all_types
from .runtime import Runtime
from .scripts import source

__all__ = [
    "CHECKS",
    "Finding",
    "Verdict",
    "clock_verdict",
    "diagnose",
    "eviction_verdict",
    "persistence_verdict",
    "tick_verdict",
]

Verdict = Literal["ok", "warn", "problem"]

#: Actors of each type whose keys ``MEMORY USAGE`` measures (``ZRANDMEMBER`` of its index).
MEMORY_SAMPLE = 20
#: Used memory over this share of ``maxmemory`` is a warning: with ``noeviction`` a full
#: Redis refuses every send and commit.
MEMORY_WARN_SHARE = 0.8
#: Skew between this host's clock and Redis' over which doctor warns (s).
SKEW_WARN = 1.0
#: The commands celery_supervise sends itself besides the scripts (what ``ACL DRYRUN`` is
#: asked about; the scripts' own are read from their sources).
DIRECT_COMMANDS = (
    "BLPOP", "DEL", "EXISTS", "HGET", "HGETALL", "HMGET", "HSET", "LINDEX", "LLEN", "LRANGE",
    "PING", "SADD", "SCARD", "SMEMBERS", "SREM", "SET", "TIME", "UNLINK", "XADD", "XREVRANGE",
    "ZADD", "ZCARD", "ZRANDMEMBER", "ZRANGE", "ZRANGEBYSCORE", "ZREM", "ZREMRANGEBYSCORE",
    "ZREVRANGE", "ZSCORE",
)  # fmt: skip
_CALLED = re.compile(r"redis\.p?call\(\s*['\"](\w+)['\"]")


@dataclass(frozen=True)
class Finding:
    """One check's result: its name, a verdict, and a message saying what to do."""

    name: str
    status: Verdict
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Doctor:
    """What the checks read from: the runtime, the Celery app, the tick task's name."""

    rt: Runtime
    app: Any
    tick_task: str
    timeout: float = 1.0

    @property
    def client(self) -> redis.Redis:
        return self.rt.client

    def config(self, *names: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for name in names:
            found.update({text(k): text(v) for k, v in self.client.config_get(name).items()})
        return found


# -- the verdicts (pure) ---------------------------------------------------------------------
def persistence_verdict(appendonly: str, appendfsync: str) -> tuple[Verdict, str]:
    if appendonly != "yes":
        return "problem", (
            "appendonly is off: a Redis restart loses every step committed since the last "
            "snapshot; set `appendonly yes` and `appendfsync always` (or everysec)"
        )
    if appendfsync == "always":
        return "ok", "AOF on, appendfsync always: a committed step survives a Redis crash"
    if appendfsync == "everysec":
        return "warn", (
            "AOF on, appendfsync everysec: a Redis crash may lose about the last second of "
            "committed steps; set `appendfsync always` to lose none"
        )
    return "problem", (
        f"AOF on, appendfsync {appendfsync}: the OS decides when writes reach the disk, a "
        "crash may lose many seconds of committed steps; set `appendfsync always` (or everysec)"
    )


def eviction_verdict(policy: str) -> tuple[Verdict, str]:
    if policy == "noeviction":
        return "ok", "maxmemory-policy noeviction: Redis refuses writes when full, evicts nothing"
    return "problem", (
        f"maxmemory-policy is {policy}: under memory pressure Redis deletes keys (actor state, "
        "mailboxes, dedup marks); set `maxmemory-policy noeviction`"
    )


def clock_verdict(skew: float, error: float, tick_expires: float) -> tuple[Verdict, str]:
    """``skew``: Redis' clock minus this host's (s), measured within ``error``."""
    said = f"this host's clock is {abs(skew):.3f} s {'behind' if skew > 0 else 'ahead of'} Redis'"
    said += f" (+/- {error:.3f} s)"
    if abs(skew) - error > tick_expires:
        return "problem", (
            f"{said}: beyond the tick's expiry ({tick_expires:g} s), so a tick beat sends "
            "from this host reaches a worker on Redis' time already expired; run NTP"
        )
    if abs(skew) - error > SKEW_WARN:
        return "warn", (
            f"{said}: celery_supervise runs on Redis' clock, but Celery's countdown, eta "
            "and expires, and log times, use each host's own; run NTP"
        )
    return "ok", said


def tick_verdict(
    senders: Sequence[tuple[str, float]], now_ms: int, interval: float
) -> tuple[Verdict, str]:
    """``senders``: (origin, ms of its latest tick), newest first."""
    late = max(3 * interval, 5.0)
    stopped = max(10 * interval, 30.0)
    if not senders:
        return "problem", (
            "no tick task has run within the last hour: is `celery -A proj beat` running, "
            "and a worker consuming the tick's queue?"
        )
    age = max(0.0, (now_ms - senders[0][1]) / 1000)
    recent = [name for name, at in senders if now_ms - at <= late * 1000]
    if age > stopped:
        return "problem", (
            f"the last tick ran {age:.0f} s ago (from {senders[0][0]}), every "
            f"{interval:g} s expected: is beat running, and a worker consuming the tick's queue?"
        )
    if len(recent) > 1:
        return "warn", (
            f"{len(recent)} processes send the tick ({', '.join(sorted(recent))}): run exactly "
            "one beat (a second is harmless, ticks never double-act, but wasted work)"
        )
    if age > late:
        return "warn", (
            f"the last tick ran {age:.1f} s ago, every {interval:g} s expected: the tick waits "
            "behind other tasks; give it a queue of its own (docs/operations.md)"
        )
    return "ok", f"the last tick ran {age:.1f} s ago, sent by {senders[0][0]}"


# -- the checks ------------------------------------------------------------------------------
def persistence(d: Doctor) -> Finding:
    values = d.config("appendonly", "appendfsync")
    status, message = persistence_verdict(values.get("appendonly", ""),
                                          values.get("appendfsync", ""))  # fmt: skip
    return Finding("persistence", status, message, values)


def eviction(d: Doctor) -> Finding:
    policy = d.config("maxmemory-policy").get("maxmemory-policy", "")
    status, message = eviction_verdict(policy)
    return Finding("eviction", status, message, {"maxmemory-policy": policy})


def _probe_keys(rt: Runtime) -> list[str]:
    """Keys under the prefix in the shapes celery_supervise writes: an actor's, a global."""
    return [rt.keyspace.actor("doctor", "probe").meta, rt.keyspace.events]


def _script_commands() -> set[str]:
    from .scripts import SCRIPT_NAMES

    return {m.upper() for name in SCRIPT_NAMES for m in _CALLED.findall(source(name))}


def _command(client: Any, *args: Any) -> Any:
    """A command redis-py has no typed method for (``ACL DRYRUN``, ``COMMAND INFO``)."""
    return client.execute_command(*args)


def _dryrun_argv(spec: dict[str, Any], key: str) -> list[str]:
    """Arguments that satisfy a command's arity (``COMMAND INFO``), its key first if it
    takes one: ``ACL DRYRUN`` checks the arity, the command and the keys, and runs nothing."""
    arity = int(spec["arity"])
    needed = (arity if arity > 0 else -arity) - 1
    args = [key] if int(spec.get("first_key_pos", 0)) > 0 and needed > 0 else []
    return args + ["0"] * (needed - len(args))


def acl(d: Doctor) -> Finding:
    client, keys, prefix = d.client, _probe_keys(d.rt), d.rt.settings.key_prefix
    user = text(_command(client, "ACL", "WHOAMI"))
    commands = sorted(_script_commands() | set(DIRECT_COMMANDS))
    try:
        specs = _command(client, "COMMAND", "INFO", *commands)
    except redis.ResponseError as exc:  # a user that may not run COMMAND may not DRYRUN
        return _acl_without_dryrun(d, user, keys, exc)
    asks: list[tuple[str, list[str]]] = [("SCRIPT LOAD", ["SCRIPT", "LOAD", "return 1"])]
    for key in keys:
        asks.append((f"EVALSHA on {key}", ["EVALSHA", d.rt.scripts.send.sha, "1", key]))
        asks += [(f"{c} on {key}", [c, *_dryrun_argv(specs[c.lower()], key)]) for c in commands]
    pipe = client.pipeline(transaction=False)
    for _, argv in asks:
        _command(pipe, "ACL", "DRYRUN", user, *argv)
    answers = pipe.execute(raise_on_error=False)
    if isinstance(answers[0], redis.ResponseError):  # Redis < 7, or no right to DRYRUN
        return _acl_without_dryrun(d, user, keys, answers[0])
    refused = {what: str(answer) if isinstance(answer, Exception) else text(answer)
               for (what, _), answer in zip(asks, answers, strict=True)
               if isinstance(answer, Exception) or text(answer) != "OK"}  # fmt: skip
    if refused:
        first = next(iter(refused.values()))
        return Finding("acl", "problem", (
            f"user {user!r} may not run {len(refused)} of the {len(asks)} commands "
            f"celery_supervise needs on the key prefix {prefix!r} (e.g. {first}); grant it "
            f"`~{prefix}:* +@read +@write +@scripting` (SCRIPT LOAD and EVALSHA among them)"
        ), {"user": user, "refused": refused})  # fmt: skip
    return Finding("acl", "ok", (
        f"user {user!r} may run the scripts and every command celery_supervise sends on "
        f"{prefix}:* (ACL DRYRUN of {len(asks)} commands)"
    ), {"user": user, "checked": len(asks)})  # fmt: skip


def _acl_without_dryrun(d: Doctor, user: str, keys: list[str], why: Exception) -> Finding:
    """No ``ACL DRYRUN`` (Redis < 7, or this user may not run it): what can be told without
    it is whether EVALSHA on the prefix passes the ACL (an unknown SHA: NOSCRIPT if it does,
    NOPERM if not; nothing runs)."""
    for key in keys:
        try:
            d.client.evalsha("0" * 40, 1, key)
        except redis.exceptions.NoScriptError:
            continue
        except redis.ResponseError as exc:
            if "NOPERM" in str(exc) or "no permissions" in str(exc):
                return Finding("acl", "problem", (
                    f"user {user!r} may not run EVALSHA on {key}: every send and step fails; "
                    f"grant it `~{d.rt.settings.key_prefix}:* +@scripting`"
                ), {"user": user, "refused": {f"EVALSHA on {key}": str(exc)}})  # fmt: skip
            raise
    return Finding("acl", "warn", (
        f"user {user!r} may run EVALSHA on the key prefix, but the commands inside the scripts "
        f"could not be checked: ACL DRYRUN needs Redis 7 and the right to run it ({why})"
    ), {"user": user, "dryrun": str(why)})  # fmt: skip


def _primaries(client: redis.Redis) -> list[tuple[str, redis.Redis]]:
    """(name, client) of every primary: the one server of a plain URL."""
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    return [(str(where), client)]


def scripts(d: Doctor) -> Finding:
    shas = [s.sha for s in d.rt.scripts.all]
    missing: dict[str, list[str]] = {}
    for where, client in _primaries(d.client):
        present = client.script_exists(*shas)
        gone = [s.name for s, ok in zip(d.rt.scripts.all, present, strict=True) if not ok]
        if gone:
            missing[where] = gone
    if not missing:
        return Finding("scripts", "ok", f"all {len(shas)} scripts are loaded on every primary")
    said = "; ".join(f"{w}: {len(g)} missing ({', '.join(g[:3])}...)" for w, g in missing.items())
    return Finding("scripts", "warn", (
        f"{said}: the first call that meets NOSCRIPT loads them all again (after a Redis "
        "restart or flush, or workers running another celery_supervise than this host); "
        "nothing to do unless the acl check refuses SCRIPT LOAD"
    ), {"missing": missing})  # fmt: skip


def clock(d: Doctor) -> Finding:
    before = time.time()
    seconds, micros = d.client.time()
    after = time.time()
    skew = int(seconds) + int(micros) / 1e6 - (before + after) / 2
    error = (after - before) / 2
    expires = max(d.rt.settings.tick_interval * 10, 10.0)  # as Supervision schedules it
    status, message = clock_verdict(skew, error, expires)
    return Finding("clock", status, message, {"skew_seconds": round(skew, 6),
                                              "error_seconds": round(error, 6)})  # fmt: skip


def tick(d: Doctor) -> Finding:
    raw: list[tuple[Any, Any]] = d.client.zrevrange(  # type: ignore[assignment]
        d.rt.keyspace.tick_senders, 0, -1, withscores=True
    )  # redis-py types the reply as any reply; withscores gives (member, score) pairs
    senders = [(text(name), float(at)) for name, at in raw]
    now = d.rt.now_ms()
    status, message = tick_verdict(senders, now, d.rt.settings.tick_interval)
    return Finding("tick", status, message,
                   {"senders": {name: int(at) for name, at in senders}, "now_ms": now})


def _queues(d: Doctor) -> dict[str, list[str]]:
    """queue -> the tasks of celery_supervise routed to it (as ``send_task`` routes them)."""
    names = [d.tick_task, ISOLATED_TASK, *sorted(t for t in all_types() if t in d.app.tasks)]
    queues: dict[str, list[str]] = {}
    for name in names:
        queue = d.app.amqp.router.route({}, name).get("queue")
        queues.setdefault(getattr(queue, "name", str(queue)), []).append(name)
    return queues


def workers(d: Doctor) -> Finding:
    from kombu.exceptions import OperationalError  # Celery's dependency, as the app is

    queues = _queues(d)
    try:
        replies = d.app.control.inspect(timeout=d.timeout).active_queues() or {}
    except OperationalError as exc:
        return Finding("workers", "problem", (
            f"cannot reach the Celery broker to ask the workers ({exc}): nothing reaches "
            "the actors or the tick"
        ), {"queues": queues})  # fmt: skip
    consumed: dict[str, list[str]] = {}
    for worker, its in replies.items():
        for queue in its or []:
            consumed.setdefault(queue["name"], []).append(worker)
    details = {"queues": queues, "consumers": {q: consumed.get(q, []) for q in queues}}
    if not replies:
        return Finding("workers", "problem", (
            f"no worker answered within {d.timeout:g} s: nothing runs the actors or the tick; "
            f"start `celery -A proj worker -Q {','.join(sorted(queues))}`"
        ), details)  # fmt: skip
    idle = {q: tasks for q, tasks in queues.items() if q not in consumed}
    if idle:
        said = "; ".join(f"{q} ({', '.join(t[:3])})" for q, t in sorted(idle.items()))
        return Finding("workers", "problem", (
            f"no worker consumes {said}: those tasks wait forever; start a worker with "
            f"`-Q {','.join(sorted(idle))}`"
        ), details)  # fmt: skip
    return Finding("workers", "ok", ", ".join(
        f"{q}: {len(consumed[q])} worker(s)" for q in sorted(queues)), details)


def memory(d: Doctor) -> Finding:
    per_type: dict[str, dict[str, Any]] = {}
    for type_name in sorted(all_types()):
        index = d.rt.keyspace.type_index(type_name)
        count = int(d.client.zcard(index))
        if not count:
            continue
        members = [text(m) for m in d.client.zrandmember(index, MEMORY_SAMPLE) or []]
        pipe = d.client.pipeline(transaction=False)
        for member in members:
            for key in d.rt.keyspace.actor(*parse_actor_member(member)).owned:
                pipe.memory_usage(key)
        used = sum(int(b or 0) for b in pipe.execute())
        average = used / len(members) if members else 0.0
        per_type[type_name] = {"actors": count, "sampled": len(members),
                               "bytes_per_actor": round(average), "bytes": round(average * count)}
    info = d.client.info("memory")
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    said = "; ".join(f"{t}: ~{v['bytes_per_actor']} B per actor x {v['actors']} "
                     f"(sampled {v['sampled']})" for t, v in per_type.items()) or "no actors"
    details = {"types": per_type, "used_memory": used, "maxmemory": limit}
    if limit and used > MEMORY_WARN_SHARE * limit:
        return Finding("memory", "warn", (
            f"Redis uses {used} of maxmemory {limit} bytes ({used / limit:.0%}): when full it "
            f"refuses every send and commit; raise maxmemory or add memory ({said})"
        ), details)  # fmt: skip
    return Finding("memory", "ok", f"{said}; Redis uses {used} bytes", details)


CHECKS: tuple[Callable[[Doctor], Finding], ...] = (
    persistence, eviction, acl, scripts, clock, tick, workers, memory,
)  # fmt: skip


def diagnose(rt: Runtime, app: Any, *, tick_task: str, timeout: float = 1.0) -> list[Finding]:
    """Every check, in order. A check that could not read what it needs (a managed Redis
    refusing CONFIG, a broker away) is a ``warn`` saying so, never an exception."""
    d = Doctor(rt, app, tick_task, timeout)
    found = []
    for check in CHECKS:
        try:
            found.append(check(d))
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # Redis itself is away: the command says so and exits 69
        except Exception as exc:
            found.append(Finding(check.__name__, "warn", f"could not be checked: {exc}"))
    return found
