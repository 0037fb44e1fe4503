"""Example for docs/long-lived.md: a subscription that expires, reminds weekly, and can be
renewed or cancelled -- named and periodic timers.

tests/redis/test_named_timers.py imports and runs this file, so it stays correct.
"""

from __future__ import annotations

from typing import Any

from celery_supervise import actor

WEEK = 7 * 86400


# --8<-- [start:subscription]
@actor(name="example.subscription", initial={"plan": None, "reminders": 0, "expired": False})
def subscription(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    kind = message["kind"]
    if kind == "subscribe":  # also a renewal: each named timer replaces its pending one
        state.update(plan=message["plan"], expired=False)
        ctx.send_after(message["seconds"], {"kind": "expire"}, name="expiry")
        every = message.get("remind_every", WEEK)
        ctx.send_after(every, {"kind": "remind"}, name="reminder", every=every)
    elif kind == "cancel":
        ctx.cancel_timer("expiry")
        ctx.cancel_timer("reminder")
        state["plan"] = None
    elif kind == "remind":
        state["reminders"] += 1  # a real one would ctx.isolate() an e-mail here
    elif kind == "expire":
        ctx.cancel_timer("reminder")
        state.update(plan=None, expired=True)
    return state
# --8<-- [end:subscription]
