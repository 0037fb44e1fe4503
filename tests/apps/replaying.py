"""Actors with a bug and its fix, for replay before release: which entry kinds the handler
knows is read from ``TEST_FIX`` (comma separated) at every step, so a worker or a CLI
process started with another value runs "the fixed code"."""

from __future__ import annotations

import os
from typing import Any

from celery_supervise import actor

from . import tree  # noqa: F401  (declares the supervisor "quarantining" used below)


def _apply(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    if "isolated" in message:  # the refund gateway's outcome: nothing to book
        return state
    kind = message["kind"]
    known = ["deposit", *os.environ.get("TEST_FIX", "").split(",")]
    if kind not in known:
        raise KeyError(f"no rule for entry kind {kind!r}")  # the bug the fix removes
    if kind == "spin":
        while True:  # a fix that loops forever
            pass
    sign = -1 if kind in ("refund", "fee") else 1
    state["balance"] += sign * message["amount"]
    state["kinds"].append(kind)
    if kind == "refund":  # effects a replay must report and never perform
        ctx.send(ledger.ref("audit"), {"kind": "deposit", "amount": 0})
        ctx.send_after(60, {"kind": "deposit", "amount": 0})
        ctx.isolate({"task": "replay.refund_gateway", "args": [message["amount"]], "kwargs": {}},
                    tag="gateway")  # fmt: skip
        ctx.reply(state["balance"])
    return state


@actor(name="replay.ledger", supervisor="quarantining", initial={"balance": 0, "kinds": []},
       validate=lambda s: s["balance"] >= 0, max_attempts=100)  # fmt: skip
def ledger(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    return _apply(ctx, state, message)


@actor(name="replay.journal", initial={"balance": 0, "kinds": []},
       validate=lambda s: s["balance"] >= 0, max_attempts=2)  # fmt: skip
def journal(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Dead-letters a message it cannot handle after two attempts, and goes on."""
    return _apply(ctx, state, message)
