"""A Celery app using celery_supervise, for integration tests with real workers.

Configured from the environment so each test can point it at its own Redis server and key
prefix: ``TEST_BROKER_URL``, ``TEST_STATE_URL`` (where actor state lives, default: the
broker's server), ``TEST_KEY_PREFIX``, ``TEST_LEASE``, ``TEST_TICK`` and (to route the
supervisor tick to a queue of its own) ``TEST_TICK_QUEUE``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

from celery_supervise import Supervision, actor

BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("bank", broker=BROKER_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    supervise_key_prefix=os.environ.get("TEST_KEY_PREFIX", "supervise"),
    supervise_lease_seconds=float(os.environ.get("TEST_LEASE", "2.0")),
    supervise_tick_interval=float(os.environ.get("TEST_TICK", "0.5")),
    supervise_max_dead_letters=int(os.environ.get("TEST_MAX_DEAD_LETTERS", "10000")),
)
if os.environ.get("TEST_STATE_URL"):  # actor state elsewhere than the broker (a cluster)
    app.conf.supervise_redis_url = os.environ["TEST_STATE_URL"]
if os.environ.get("TEST_STATE_OPTIONS"):  # e.g. a sentinel's master_name, as JSON
    app.conf.supervise_redis_options = json.loads(os.environ["TEST_STATE_OPTIONS"])
if os.environ.get("TEST_REPLICA_ACKS"):
    app.conf.supervise_replica_acks = int(os.environ["TEST_REPLICA_ACKS"])
if os.environ.get("TEST_CODEC"):  # encryption at rest (keys in $SUPERVISE_FERNET_KEYS)
    app.conf.supervise_codec = os.environ["TEST_CODEC"]
if os.environ.get("TEST_TICK_QUEUE"):  # ticks on workers of their own (docs: routing)
    app.conf.task_routes = {"celery_supervise.tick": {"queue": os.environ["TEST_TICK_QUEUE"]}}
supervision = Supervision(app)

_probe: redis.Redis | None = None


def probe() -> redis.Redis:
    """A side channel for tests to see what a handler is doing (not actor state)."""
    global _probe
    if _probe is None:
        _probe = redis.Redis.from_url(BROKER_URL)
    return _probe


@actor(name="bank.account", initial=lambda key: {"balance": 0, "seen": []},
       validate=lambda s: s["balance"] >= 0)
def account(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Adds ``message["add"]``; records ``[sender, n]`` to check per-actor FIFO order."""
    state["balance"] += message["add"]
    if "n" in message:
        state["seen"].append([message.get("sender", ""), message["n"]])
    if message.get("sleep"):
        probe().set(f"{os.environ.get('TEST_KEY_PREFIX')}:started:{ctx.key}", os.getpid())
        time.sleep(message["sleep"])
    return state


@actor(name="bank.poison", initial={"applied": []}, max_attempts=3)
def poison(ctx: Any, state: dict[str, Any], message: Any) -> None:
    if message == "poison":
        raise ValueError("poison message")
    state["applied"].append(message)

import tests.apps.shop  # noqa: E402,F401

# the supervision-tree, replay, bounded-mailbox, state-version and encryption actors
from . import bounded, replaying, tree, vault, versions  # noqa: E402,F401
