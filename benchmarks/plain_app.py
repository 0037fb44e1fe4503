"""The baseline side of the benchmark: plain Celery tasks doing the same work.

``add`` commits the same integer add to a Redis hash per task (one Lua script, one round
trip: the "state after every step" a plain task would have to write itself), so the
comparison is task machinery against task machinery, not "writes state" against "does not".
It carries none of celery_supervise's guarantees (no FIFO per key, no fencing, no
exactly-once).

Environment: ``BENCH_REDIS_URL``, ``BENCH_KEY_PREFIX``, ``BENCH_PREFETCH`` as for
``actor_app``; ``BENCH_VISIBILITY_TIMEOUT`` (default 3600, the Redis transport's default)
and ``BENCH_RESTORE_INTERVAL`` (kombu ``unacked_restore_interval`` with
``unacked_restore_throttle=1``; unset = kombu's defaults) for the recovery measurement.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = os.environ.get("BENCH_KEY_PREFIX", "bench")

transport_options: dict[str, Any] = {
    "visibility_timeout": int(os.environ.get("BENCH_VISIBILITY_TIMEOUT", "3600")),
}
if os.environ.get("BENCH_RESTORE_INTERVAL"):
    transport_options["unacked_restore_interval"] = int(os.environ["BENCH_RESTORE_INTERVAL"])
    transport_options["unacked_restore_throttle"] = 1

app = Celery("bench_plain", broker=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "1")),
    worker_hijack_root_logger=False,
    task_default_queue="bench_plain",  # its own queue: both apps' workers can run at once
    broker_transport_options=transport_options,
)

# The same shape of write an actor step commits: value, version, commit time (Redis clock),
# and a shared counter of tasks done (KEYS[2]), as a commit bumps its type's ``steps`` census
# counter; the benchmark polls it to know when a trial is over.
_COMMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HINCRBY', KEYS[1], 'total', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'committed_at', now)
redis.call('INCR', KEYS[2])
return now
"""

_client: redis.Redis | None = None
_client_pid = 0
_commit: Any = None


def client() -> redis.Redis:
    """One connection per process, made after the prefork fork."""
    global _client, _client_pid, _commit
    if _client is None or _client_pid != os.getpid():
        _client, _client_pid = redis.Redis.from_url(REDIS_URL), os.getpid()
        _commit = _client.register_script(_COMMIT)
    return _client


def state_key(key: str) -> str:
    return f"{KEY_PREFIX}:plain:{{{key}}}"


#: Tasks done so far (``add`` and ``slow``), one counter.
DONE_KEY = f"{KEY_PREFIX}:plain:done"


# Same task options as an actor type's task (ignore_result=True, acks_late left default).
@app.task(name="bench_plain.add", ignore_result=True)  # type: ignore[untyped-decorator]
def add(key: str, x: int) -> None:
    client()
    _commit(keys=[state_key(key), DONE_KEY], args=[x])


@app.task(name="bench_plain.slow", ignore_result=True, acks_late=True)  # type: ignore[untyped-decorator]
def slow(token: str, seconds: float) -> None:
    """The recovery workload: acks_late, so a killed worker's message is redelivered."""
    c = client()
    c.set(f"{KEY_PREFIX}:started:{token}", os.getpid())
    time.sleep(seconds)
    _commit(keys=[state_key(token), DONE_KEY], args=[1])
