"""The state machine's test app (``tests/redis/test_state_machine.py``): two actor types that
record every message they apply, crash on demand and ask for every kind of effect.

A message is a dict; ``tag`` names it for the model. The handler, in this order: crashes
while ``ctx.attempt <= message["crash"]``; appends ``[ctx.message_id, tag]`` to
``state["applied"]``; then asks for the effects the message names -- ``send_to: [type, key]``
(a message tagged ``relay:<id>``), ``after: seconds`` (a timer tagged ``timer:<id>``),
``iso: ok`` (an isolated ``machine.job`` whose outcome comes back tagged ``iso:<id>``),
``stop: true`` (``ctx.stop()``). An isolated outcome message is recorded with its tag.

The app is built by :func:`make_app` (the test session's Redis URL is only known then), with
a short lease so lease expiry is a short real sleep, on its own key prefix.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from celery_supervise import Supervision, actor

PREFIX = "sm"
LEASE = 0.4
TICK = 0.1
RECORDER = "machine.rec"
RESETTER = "machine.reset"
JOB = "machine.job"
SUPERVISOR = "machine"
#: High limits: quarantine is not what the machine checks; restarts are.
SUPERVISOR_SPEC = {
    "intensity": 1_000_000,
    "period": 5,
    "max_consecutive_crashes": 1_000_000,
    "backoff": {"initial": 0.02, "factor": 1.0, "max": 0.02, "reset_after": 300},
}
#: Kept versions: enough that history() holds every version a test case makes.
HISTORY = 10_000

_built: dict[str, tuple[Celery, Supervision]] = {}


def make_app(redis_url: str) -> tuple[Celery, Supervision]:
    """The app on ``redis_url`` (one per URL per process: Supervision(app) is per app)."""
    if redis_url in _built:
        return _built[redis_url]
    app = Celery("machine", broker=redis_url, set_as_current=False)
    app.conf.update(
        supervise_redis_url=redis_url,
        supervise_key_prefix=PREFIX,
        supervise_lease_seconds=LEASE,
        supervise_tick_interval=TICK,
        supervise_supervisors={SUPERVISOR: SUPERVISOR_SPEC},
    )
    supervision = Supervision(app)

    @app.task(name=JOB)  # type: ignore[untyped-decorator]  # celery has no type hints
    def job(ok: bool) -> str:
        if not ok:
            raise ValueError("job failed on purpose")
        return "done"

    app.finalize()
    _built[redis_url] = (app, supervision)
    return app, supervision


class _To:
    """What ``ctx.send`` needs of a ref (its type and key), without a Supervision lookup."""

    def __init__(self, type_name: str, key: str) -> None:
        self.type_name, self.key = type_name, key


def handle(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    if "isolated" in message:
        state["applied"].append([ctx.message_id, "iso:" + message["isolated"]])
        return state
    if ctx.attempt <= message.get("crash", 0):
        raise RuntimeError(f"crash requested (attempt {ctx.attempt})")
    state["applied"].append([ctx.message_id, message.get("tag")])
    mid = ctx.message_id
    if "send_to" in message:
        ctx.send(_To(*message["send_to"]), {"tag": f"relay:{mid}"})
    if "after" in message:
        ctx.send_after(message["after"], {"tag": f"timer:{mid}"})
    if "iso" in message:
        signature = {"task": JOB, "args": [message["iso"]], "kwargs": {}}
        ctx.isolate(signature, tag=mid, timeout=message.get("iso_timeout"))
    if message.get("stop"):
        ctx.stop()
    return state


recorder = actor(
    name=RECORDER,
    initial=lambda key: {"applied": []},
    supervisor=SUPERVISOR,
    max_attempts=3,
    history=HISTORY,
)(handle)

resetter = actor(
    name=RESETTER,
    initial=lambda key: {"applied": []},
    supervisor=SUPERVISOR,
    recovery="reset",
    max_attempts=3,
    history=HISTORY,
)(handle)
