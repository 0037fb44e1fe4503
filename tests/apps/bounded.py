"""Actors of the bank test app with a bounded mailbox (``@actor(max_mailbox=N)``)."""

from __future__ import annotations

import os
from typing import Any

from celery_supervise import actor

from .bank import probe
from .tree import count_calls

LIMIT = 3


def broken_flag(key: str) -> str:
    """While this probe key is set, ``bounded.box`` KEY crashes at every message."""
    return f"{os.environ.get('TEST_KEY_PREFIX')}:broken:{key}"


@actor(name="bounded.box", supervisor="quarantining", initial={"got": []},
       max_attempts=100, max_mailbox=LIMIT)  # fmt: skip
def box(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """Records each message; ``{"self": n}`` sends itself n messages, ``{"timers": n}`` sets
    n timers due at once and ``{"isolate": n}`` starts n subtasks, all past the limit."""
    if probe().get(broken_flag(ctx.key)):
        raise RuntimeError("box is broken")
    if isinstance(message, dict) and "self" in message:
        for i in range(message["self"]):
            ctx.send(box.ref(ctx.key), f"self-{i}")
    elif isinstance(message, dict) and "timers" in message:
        for i in range(message["timers"]):
            ctx.send_after(0, f"timer-{i}")
    elif isinstance(message, dict) and "isolate" in message:
        for i in range(message["isolate"]):
            ctx.isolate(count_calls.s(f"{ctx.key}-{i}", 0), tag=f"iso-{i}")
    else:
        state["got"].append(message.get("isolated") if isinstance(message, dict) else message)
    return state


@actor(name="bounded.sender", initial={"sent": 0})
def sender(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Sends ``message["n"]`` messages to ``bounded.box`` ``message["to"]``."""
    for i in range(message["n"]):
        ctx.send(box.ref(message["to"]), f"from-{ctx.key}-{i}")
    state["sent"] += message["n"]
    return state
