"""The celery_supervise side of the benchmark: a Celery app with two actor types.

Configured from the environment (``benchmarks/run.py`` sets these for its workers and for
itself):

``BENCH_REDIS_URL``   broker and state store (default ``redis://127.0.0.1:6379/0``)
``BENCH_KEY_PREFIX``  ``supervise_key_prefix`` (default ``bench``)
``BENCH_PREFETCH``    ``worker_prefetch_multiplier`` (default 1; the plain app reads it too)
``BENCH_LEASE``, ``BENCH_TICK``  lease and tick interval; unset = the library defaults (5 s, 1 s)
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

from celery_supervise import Supervision, actor

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = os.environ.get("BENCH_KEY_PREFIX", "bench")

app = Celery("bench_actors", broker=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "1")),
    worker_hijack_root_logger=False,
    task_default_queue="bench_actors",  # its own queue: both apps' workers can run at once
    supervise_key_prefix=KEY_PREFIX,
)
if os.environ.get("BENCH_LEASE"):
    app.conf.supervise_lease_seconds = float(os.environ["BENCH_LEASE"])
if os.environ.get("BENCH_TICK"):
    app.conf.supervise_tick_interval = float(os.environ["BENCH_TICK"])
supervision = Supervision(app)

_probe: redis.Redis | None = None
_probe_pid = 0


def probe() -> redis.Redis:
    """A side channel (not actor state) telling the benchmark which process runs a step."""
    global _probe, _probe_pid
    if _probe is None or _probe_pid != os.getpid():
        _probe, _probe_pid = redis.Redis.from_url(REDIS_URL), os.getpid()
    return _probe


@actor(name="bench.counter", initial={"total": 0})
def counter(ctx: Any, state: dict[str, Any], message: int) -> dict[str, Any]:
    """The throughput workload: add a small integer to the state."""
    state["total"] += message
    return state


#: The memory workload's state after its one step: ``{"total": 1, "name": "actor-000000"}``,
#: 35 bytes of JSON (the issue's "~30-byte state").
MEMO_NAME = "actor-000000"


@actor(name="bench.memo", initial={"total": 0, "name": MEMO_NAME})
def memo(ctx: Any, state: dict[str, Any], message: int) -> dict[str, Any]:
    """The memory workload: one step, then idle for good."""
    state["total"] += message
    return state


@actor(name="bench.slow", initial={"done": 0})
def slow(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """The recovery workload: a long-ish step that says where (which pid) it runs."""
    probe().set(f"{KEY_PREFIX}:started:{ctx.key}", os.getpid())
    time.sleep(message["sleep"])
    state["done"] += 1
    return state
