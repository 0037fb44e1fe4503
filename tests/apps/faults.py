"""The fault-injection test app (``tests/workers/test_faults.py``): one actor type,
configurable broker.

Workers and beat import this module (``celery -A tests.apps.faults``), configured from the
environment: ``FAULTS_BROKER_URL`` (Redis or RabbitMQ), ``FAULTS_REDIS_URL`` (state; defaults
to the broker when that is Redis), ``FAULTS_KEY_PREFIX``, ``FAULTS_QUEUE`` (a queue name of
its own so concurrent runs on one RabbitMQ never share messages), ``FAULTS_LEASE`` and
``FAULTS_TICK``. The test process builds its own app with the same settings through
:func:`make_app` (several runs in one pytest process use different servers).

The effects variant adds ``faults.effector`` (the same account, and per message one effect:
``ctx.send`` to a ``faults.sink``, ``ctx.reply``, ``ctx.isolate`` of ``faults.echo`` or
``ctx.send_after``; the isolate outcomes and timers come back to it and are recorded) and,
with ``FAULTS_DIE_AFTER_COMMIT=p``, kills its own pool process with probability ``p`` right
after a commit that left effects in the outbox, before the worker relays them: the moment
random kills from outside almost never hit.

The actor has ``max_attempts=1000`` and lives under a supervisor whose restart limits are
very high: the test kills workers at random, and every kill that lands mid-step counts an
attempt of the message at the head of that actor's mailbox (SPEC 4.1: a message that kills
its worker counts too). Two or three unlucky kills on the same message would dead-letter
it, and four restarts of one actor within 5 s would quarantine it -- correct behaviour, but
not what this test measures (that every message is applied exactly once in order).
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Mapping
from typing import Any

from celery import Celery

from celery_supervise import Supervision, actor

TYPE = "faults.account"
EFFECTOR = "faults.effector"
SINK = "faults.sink"
#: Seconds after which an effector's timer fires.
TIMER_SECONDS = 0.3
SUPERVISOR = "faults"

SUPERVISOR_SPEC = {
    "intensity": 100_000,
    "period": 5,
    "max_consecutive_crashes": 1000,
    "backoff": {"initial": 0.1, "factor": 2.0, "max": 1.0, "reset_after": 30},
}


def make_app(env: Mapping[str, str]) -> tuple[Celery, Supervision]:
    """A Celery app with celery_supervise installed, configured from ``env``."""
    broker = env.get("FAULTS_BROKER_URL", "redis://127.0.0.1:6379/0")
    queue = env.get("FAULTS_QUEUE", "celery")
    app = Celery("faults", broker=broker, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_default_queue=queue,
        supervise_key_prefix=env.get("FAULTS_KEY_PREFIX", "faults"),
        supervise_lease_seconds=float(env.get("FAULTS_LEASE", "2.0")),
        supervise_tick_interval=float(env.get("FAULTS_TICK", "0.5")),
        supervise_supervisors={SUPERVISOR: SUPERVISOR_SPEC},
    )
    if env.get("FAULTS_REDIS_URL"):
        app.conf.supervise_redis_url = env["FAULTS_REDIS_URL"]
    return app, Supervision(app)


app, supervision = make_app(os.environ)


@actor(
    name=TYPE,
    initial=lambda key: {"balance": 0, "seen": []},
    validate=lambda s: s["balance"] >= 0,
    supervisor=SUPERVISOR,
    max_attempts=1000,
)
def account(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Adds ``message["add"]`` and appends ``[sender, n]``: the sum and the order are checked."""
    state["balance"] += message["add"]
    state["seen"].append([message["s"], message["n"]])
    return state


def _prefix() -> str:
    return os.environ.get("FAULTS_KEY_PREFIX", "faults")


def died_after_commit_key(prefix: str) -> str:
    """Counts the pool processes killed right after a commit (``FAULTS_DIE_AFTER_COMMIT``)."""
    return f"{prefix}:probe:died-after-commit"


@actor(
    name=EFFECTOR,
    initial=lambda key: {"balance": 0, "seen": [], "outcomes": [], "fired": []},
    supervisor=SUPERVISOR,
    max_attempts=1000,
)
def effector(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """An account whose messages each ask for one effect (``fx``), named by ``tag``."""
    if "isolated" in message:
        state["outcomes"].append([message["isolated"], message["ok"]])
        return state
    if "fired" in message:
        state["fired"].append(message["fired"])
        return state
    state["balance"] += message["add"]
    state["seen"].append([message["s"], message["n"]])
    fx, tag = message.get("fx"), message.get("tag")
    if fx == "send":
        ctx.send(sink.ref(sink_key(tag)), {"from": ctx.key, "tag": tag})
    elif fx == "reply":
        ctx.reply({"key": ctx.key, "tag": tag})
    elif fx == "isolate":
        ctx.isolate(echo.s(tag), tag=tag, timeout=30)
    elif fx == "timer":
        ctx.send_after(TIMER_SECONDS, {"fired": tag})
    return state


def sink_key(tag: str) -> str:
    return f"sink-{sum(tag.encode()) % 4}"


@actor(name=SINK, initial={"got": []}, supervisor=SUPERVISOR, max_attempts=1000)
def sink(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    state["got"].append([message["from"], message["tag"]])
    return state


@app.task(name="faults.echo")  # type: ignore[untyped-decorator]  # celery has no hints
def echo(tag: str) -> str:
    """The isolated subtask: runs on the same (chaotic) workers."""
    return tag


def _die_after_commit(probability: float) -> None:
    """Wrap the relay a worker does right after its commit: sometimes SIGKILL the pool
    process first, so the committed effects are left for the tick to relay."""
    import redis

    from celery_supervise import runner

    relay = runner.relay_outbox
    probe = redis.Redis.from_url(os.environ.get("FAULTS_REDIS_URL")
                                 or os.environ.get("FAULTS_BROKER_URL", ""))

    def relay_or_die(rt: Any, type_name: str, key: str) -> Any:
        if type_name == EFFECTOR and random.random() < probability:
            probe.incr(died_after_commit_key(_prefix()))
            os.kill(os.getpid(), signal.SIGKILL)
        return relay(rt, type_name, key)

    runner.relay_outbox = relay_or_die


if os.environ.get("FAULTS_DIE_AFTER_COMMIT"):
    _die_after_commit(float(os.environ["FAULTS_DIE_AFTER_COMMIT"]))
