"""The fault-injection test app (``tests/workers/test_faults.py``): one actor type,
configurable broker.

Workers and beat import this module (``celery -A tests.apps.faults``), configured from the
environment: ``FAULTS_BROKER_URL`` (Redis or RabbitMQ), ``FAULTS_REDIS_URL`` (state; defaults
to the broker when that is Redis), ``FAULTS_KEY_PREFIX``, ``FAULTS_QUEUE`` (a queue name of
its own so concurrent runs on one RabbitMQ never share messages), ``FAULTS_LEASE`` and
``FAULTS_TICK``. The test process builds its own app with the same settings through
:func:`make_app` (several runs in one pytest process use different servers).

The actor has ``max_attempts=1000`` and lives under a supervisor whose restart limits are
very high: the test kills workers at random, and every kill that lands mid-step counts an
attempt of the message at the head of that actor's mailbox (SPEC 4.1: a message that kills
its worker counts too). Two or three unlucky kills on the same message would dead-letter
it, and four restarts of one actor within 5 s would quarantine it -- correct behaviour, but
not what this test measures (that every message is applied exactly once in order).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery

from celery_supervise import Supervision, actor

TYPE = "faults.account"
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
