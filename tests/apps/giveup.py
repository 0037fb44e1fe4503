"""A test app whose ``root`` escalates: past its limit root gives up and everything under it
stays stopped until an operator resumes it (SPEC 4.6). A separate app because the bank
app's root quarantines (the default), which the other tests rely on.

Configured like the bank app: ``TEST_BROKER_URL``, ``TEST_LEASE``, ``TEST_TICK``; its keys
start with ``g``.

- ``group`` (``on_limit="escalate"``, intensity 0) fails to root at its first restart;
- root (``on_limit="escalate"``, intensity 1 in 60 s) restarts ``group`` once, and gives
  up at the second failure.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from celery_supervise import Supervision, actor

BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
FAST = {"initial": 0.05, "factor": 1.0, "max": 0.05, "reset_after": 300}
#: While this key exists, ``giveup.flaky`` crashes on every message (the cause an operator
#: fixes before resuming root).
BROKEN = "giveup:broken"

app = Celery("giveup", broker=BROKER_URL, set_as_current=False)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    supervise_key_prefix="g",
    supervise_lease_seconds=float(os.environ.get("TEST_LEASE", "2.0")),
    supervise_tick_interval=float(os.environ.get("TEST_TICK", "0.5")),
    supervise_supervisors={
        "root": {"on_limit": "escalate", "intensity": 1, "period": 60, "backoff": FAST},
        "group": {"on_limit": "escalate", "intensity": 0, "period": 60, "backoff": FAST},
    },
)
supervision = Supervision(app)
_probe = redis.Redis.from_url(BROKER_URL)


@actor(name="giveup.flaky", supervisor="group", initial={"n": 0}, max_attempts=100)
def flaky(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    if _probe.exists(BROKEN):
        raise RuntimeError("broken until the operator fixes it")
    state["n"] += 1
    return state


@actor(name="giveup.counter", initial={"n": 0})
def counter(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """A healthy actor right under root."""
    state["n"] += 1
    return state
