"""Actors and a flaky payment gateway exercising the effects (SPEC 2 ``ctx``, SPEC 6.4).

Imported at the end of ``tests.apps.bank`` so workers started with ``-A tests.apps.bank``
know these tasks. Everything a test needs to predict is a pure function of the arguments
(``gateway_plan``), and what a handler or the gateway did is written to the ``probe()``
side channel under the test key prefix.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from celery_supervise import actor
from tests.apps.bank import app, probe, supervision

PREFIX = os.environ.get("TEST_KEY_PREFIX", "supervise")
#: Queue the gateway's isolated subtasks run on (its own workers, so killing them never
#: touches an actor's step).
GATEWAY_QUEUE = "gateway"
# Crashes here are deliberate and many: a roomy restart budget and a short backoff, so the
# supervisor never quarantines a shop actor in these tests.
supervision.supervisor("shop", intensity=1000, period=5, max_consecutive_crashes=1000,
                       backoff={"initial": 0.1, "factor": 1.0, "max": 0.1, "reset_after": 300})

#: How long a "hang" call sleeps: far longer than any test waits, so it is always killed.
HANG_SECONDS = 60.0


class GatewayDeclined(Exception):
    """The payment gateway said no."""


def gateway_plan(idempotency_key: str) -> str:
    """What the gateway does for this key: ``"fail"`` (~30 %), ``"hang"`` (~15 %) or ``"ok"``."""
    bucket = int(hashlib.sha256(idempotency_key.encode()).hexdigest(), 16) % 100
    if bucket < 30:
        return "fail"
    if bucket < 45:
        return "hang"
    return "ok"


def probe_key(*parts: str) -> str:
    return ":".join((PREFIX, "probe", *parts))


@app.task(name="shop.gateway")
def gateway(idempotency_key: str, amount: int, delay: float = 0.0) -> dict[str, Any]:
    """A flaky payment gateway: deterministic from ``idempotency_key`` (``gateway_plan``)."""
    p = probe()
    p.set(probe_key("gw-pid", idempotency_key), os.getpid())
    p.hincrby(probe_key("gw-runs"), idempotency_key, 1)
    if delay:
        time.sleep(delay)
    plan = gateway_plan(idempotency_key)
    try:
        if plan == "hang":
            time.sleep(HANG_SECONDS)
        if plan == "fail":
            raise GatewayDeclined(f"card declined for {idempotency_key}")
        return {"charged": amount, "key": idempotency_key}
    finally:
        p.hincrby(probe_key("gw-done"), idempotency_key, 1)


@actor(name="shop.checkout", supervisor="shop", initial={"outcomes": [], "asked": []})
def checkout(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """``{"pay": [[key, amount, delay], ...], "timeout": t}`` isolates one gateway call per
    payment (``crash_after``: then crashes); each outcome message is recorded as it arrives."""
    if "isolated" in message:
        state["outcomes"].append(message)
        return state
    for idem, amount, delay in message["pay"]:
        sig = gateway.s(idem, amount, delay).set(queue=GATEWAY_QUEUE)
        ctx.isolate(sig, tag=idem, timeout=message.get("timeout"))
        state["asked"].append(idem)
    if message.get("crash_after"):
        raise RuntimeError("checkout crashed after ctx.isolate")
    return state


@actor(name="shop.sender", supervisor="shop", initial={"sent": []}, max_attempts=3)
def sender(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Sends ``{"n": n}`` to ``shop.receiver:<to>`` (twice if ``twice``), then maybe crashes:
    ``crash_first`` on the first attempt only, ``always_crash`` on every attempt."""
    n = message["n"]
    ctx.send(receiver.ref(message["to"]), {"n": n, "from": ctx.key})
    if message.get("twice"):
        ctx.send(receiver.ref(message["to"]), {"n": n, "from": ctx.key, "second": True})
    if message.get("always_crash") or (message.get("crash_first") and ctx.attempt == 1):
        raise RuntimeError(f"sender crashed after ctx.send of n={n} (attempt {ctx.attempt})")
    state["sent"].append(n)
    return state


@actor(name="shop.receiver", supervisor="shop", initial={"got": []})
def receiver(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    state["got"].append([message["from"], message["n"], bool(message.get("second"))])
    return state


@actor(name="shop.fanout", supervisor="shop", initial={"steps": 0})
def fanout(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Sends ``{"n": 10 * step + i, "from": key}`` to ``shop.receiver:<to[i]>`` for each
    ``to[i]``, in order, then replies ``{"steps": step}`` (an ``ask`` gets it)."""
    state["steps"] += 1
    for i, to in enumerate(message["to"]):
        ctx.send(receiver.ref(to), {"n": 10 * state["steps"] + i, "from": ctx.key})
    ctx.reply({"steps": state["steps"]})
    return state


@actor(name="shop.echo", supervisor="shop", initial={"n": 0}, max_attempts=2)
def echo(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Replies ``{"echo": ..., "n": ...}``; ``poison`` always crashes; ``silent`` never
    replies; ``ask_inside`` tries ``ref.ask`` from inside the handler."""
    if message.get("poison"):
        raise ValueError("poison message for echo")
    if message.get("ask_inside"):
        receiver.ref("nobody").ask({"n": 0, "from": ctx.key}, timeout=1.0)
    state["n"] += 1
    if not message.get("silent"):
        ctx.reply({"echo": message.get("echo"), "n": state["n"], "key": ctx.key})
    return state


@actor(name="shop.timer", supervisor="shop", initial={"fired": [], "set": []})
def timer(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """``{"after": s, "tag": t}`` sets a durable timer; ``crash_first`` crashes the first
    attempt after setting it. A fired timer records ``[tag, seconds late]``."""
    if "fired" in message:
        state["fired"].append([message["fired"], time.time() - message["due"]])
        return state
    due = time.time() + message["after"]
    ctx.send_after(message["after"], {"fired": message["tag"], "due": due})
    if message.get("crash_first") and ctx.attempt == 1:
        raise RuntimeError("timer step crashed after ctx.send_after")
    state["set"].append(message["tag"])
    return state


@actor(name="shop.stopper", supervisor="shop", initial={"n": 0}, restart="transient",
       max_attempts=2)
def stopper(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Counts messages; ``stop`` calls ``ctx.stop()``; ``crash`` crashes after it."""
    if message.get("stop"):
        ctx.stop()
    if message.get("crash"):
        raise RuntimeError("stopper crashed after ctx.stop()")
    state["n"] += 1
    return state


@actor(name="shop.clock", supervisor="shop", initial={"ticks": []}, max_attempts=100)
def clock(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Named and periodic timers (SPEC 7): ``{"set": name|None, "after": s, "every": e,
    "tag": t}`` sets one, ``{"cancel": name}`` cancels one; ``crash`` then crashes the step.
    A fired timer records ``[tag, message_id]``."""
    if "tick" in message:
        state["ticks"].append([message["tick"], ctx.message_id])
        return state
    if "cancel" in message:
        ctx.cancel_timer(message["cancel"])
    else:
        ctx.send_after(message["after"], {"tick": message["tag"]}, name=message.get("set"),
                       every=message.get("every"))
    if message.get("crash"):
        raise RuntimeError("clock step crashed after changing a timer")
    return state


import docs.examples.payments  # noqa: E402,F401  (the docs example runs on these workers)
