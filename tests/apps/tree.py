"""Actors and supervisors of the bank test app that exercise the supervision tree."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery_supervise import actor

from .bank import supervision

FAST = {"initial": 0.05, "factor": 1.0, "max": 0.05, "reset_after": 300}

# A crash-looping actor among healthy siblings: quarantine, budget per child.
supervision.supervisor("quarantining", intensity=3, period=5, max_consecutive_crashes=5,
                       backoff=FAST)
# The same budget over a window no load can outlast: among busy siblings the crash loop is
# caught by intensity, never by its consecutive crashes (tests/workers/test_supervision.py).
supervision.supervisor("crowded", intensity=3, period=60, max_consecutive_crashes=10,
                       backoff=FAST)
supervision.supervisor("holder", on_limit="quarantine", intensity=1, period=60, backoff=FAST)
# OTP escalation: a group restarted together, whose limit fails the group to its parent.
supervision.supervisor("escalating", parent="holder", strategy="one_for_all",
                       on_limit="escalate", intensity=3, period=60, backoff=FAST,
                       children=["tree.member:m0", "tree.member:m1", "tree.member:m2"])
# Escalates at its first restart; root (intensity 3) restarts it.
supervision.supervisor("dynesc", on_limit="escalate", intensity=0, period=60, backoff=FAST)
supervision.supervisor("ordered", strategy="rest_for_one", backoff=FAST,
                       children=["tree.member:r0", "tree.member:r1", "tree.member:r2"])
# Groups with a temporary and a transient sibling: a group restart stops the temporary one
# (OTP terminates it and never restarts it) and restarts the transient one.
supervision.supervisor("grouped", strategy="one_for_all", backoff=FAST,
                       children=["tree.member:g0", "tree.temporary:g1", "tree.transient:g2"])
supervision.supervisor("ordered_mixed", strategy="rest_for_one", backoff=FAST,
                       children=["tree.temporary:o0", "tree.member:o1", "tree.temporary:o2",
                                 "tree.transient:o3"])


def _apply(state: dict[str, Any], message: Any) -> dict[str, Any]:
    if isinstance(message, dict) and message.get("crash_once"):
        from .bank import probe

        if probe().set(f"crashed-once:{message['crash_once']}", 1, nx=True):
            raise RuntimeError("transient failure (crashes once)")
    if isinstance(message, dict) and message.get("sleep"):
        time.sleep(message["sleep"])
    if message == "crash" or (isinstance(message, dict) and message.get("crash")):
        raise RuntimeError("crash requested")
    state["n"] += 1
    return state


@actor(name="tree.worker", supervisor="quarantining", initial={"n": 0}, max_attempts=100)
def worker(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    return _apply(state, message)


@actor(name="tree.sibling", supervisor="crowded", initial={"n": 0}, max_attempts=100)
def sibling(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    return _apply(state, message)


@actor(name="tree.member", supervisor="escalating", initial={"n": 0}, max_attempts=100)
def member(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    return _apply(state, message)


@actor(name="tree.temporary", restart="temporary", initial={"n": 0}, max_attempts=100)
def temporary(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    return _apply(state, message)


@actor(name="tree.transient", restart="transient", initial={"n": 0}, max_attempts=100)
def transient(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    if message == "stop":
        ctx.stop()
        return state
    return _apply(state, message)


@actor(name="tree.resetting", recovery="reset", initial={"n": 0}, max_attempts=100)
def resetting(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    return _apply(state, message)


@actor(name="tree.strict", initial={"n": 0}, time_limit=0.5, max_attempts=2,
       validate=lambda s: s["n"] < 100)
def strict(ctx: Any, state: dict[str, Any], message: Any) -> Any:
    kind = message.get("kind")
    if kind == "sleep":
        time.sleep(message["seconds"])
    elif kind == "invalid":
        state["n"] = 1000
    elif kind == "unserializable":
        state["when"] = {1, 2}
    elif kind == "huge":
        state["blob"] = "x" * 2_000_000
    elif kind == "ask":
        from .bank import account

        account.ref("x").ask({"add": 1}, timeout=0.1)
    else:
        state["n"] += 1
    return state


@actor(name="tree.patient", initial={"n": 0}, time_limit=3.5, max_attempts=1)
def patient(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """Steps that take most of a ``time_limit`` longer than the lease (2 s in the tests)."""
    return _apply(state, message)


@actor(name="tree.slowloop", supervisor="quarantining", initial={"n": 0}, max_attempts=1)
def slowloop(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """Each crashing message is dead-lettered at once: crashes come only as often as
    messages do -- the essay's slow crash loop."""
    return _apply(state, message)


from .bank import app, probe  # noqa: E402


@app.task(name="tree.count_calls")  # type: ignore[untyped-decorator]  # celery has no hints
def count_calls(name: str, seconds: float = 0.0) -> int:
    """A subtask with an outside side effect: it counts its runs (and takes ``seconds``)."""
    calls = int(probe().incr(f"calls:{name}"))
    time.sleep(seconds)
    return calls


@actor(name="tree.isolator", initial={"outcomes": []})
def isolator(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    if isinstance(message, dict) and "isolated" in message:
        state["outcomes"].append(message)
    else:
        ctx.isolate(count_calls.s(message, 0.5), tag=message)
    return state


@actor(name="tree.dynamic", supervisor="dynesc", initial={"n": 0}, max_attempts=100)
def dynamic(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """A dynamic child (not listed in its supervisor's children)."""
    return _apply(state, message)


@actor(
    name="tree.reset_invalid",
    initial=lambda key: {"n": -1},
    validate=lambda s: s["n"] >= 0,
    recovery="reset",
    max_attempts=100,
)
def reset_invalid(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    state["n"] = max(state["n"], 0) + 1
    return state


@actor(name="tree.killer", initial={"applied": []}, max_attempts=2)
def killer(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """``"kill"`` SIGKILLs the pool process running the step (a segfault, the OOM killer)."""
    if message == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    state["applied"].append(message)
    return state


# Pool processes that die mid-step (tests/workers/test_child_lost_workers.py): restarts
# within a few seconds, one per death, must not reach a supervisor's limit.
supervision.supervisor("lenient", intensity=100, period=5, backoff=FAST)


@actor(name="tree.oom", initial={"applied": []}, max_attempts=2, supervisor="lenient")
def oom(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """Its pool process dies mid-step, as under the OOM killer: ``"die"`` at every attempt,
    ``"die_once"`` at its first only."""
    if message == "die" or (message == "die_once" and ctx.attempt == 1):
        os.kill(os.getpid(), signal.SIGKILL)
    state["applied"].append(message)
    return state


def _under_cap(state: dict[str, Any]) -> bool:
    """An invariant an operator can tighten at run time (the probe key ``capped:cap``): a
    state committed under the old cap may fail it later."""
    cap = probe().get("capped:cap")
    return cap is None or state["balance"] <= int(cap)


@actor(name="tree.capped", initial={"balance": 0}, validate=_under_cap, max_attempts=100)
def capped(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Adds ``message["add"]``; with ``sleep``, says it started (probe) and takes that long;
    with ``hold``, says it started and waits (at most ``hold`` seconds) until the test sets
    the probe key ``capped:release:KEY``: a step in flight for as long as a test needs."""
    if message.get("sleep"):
        probe().set(f"capped:started:{ctx.key}", os.getpid())
        time.sleep(message["sleep"])
    if message.get("hold"):
        probe().set(f"capped:started:{ctx.key}", os.getpid())
        deadline = time.monotonic() + message["hold"]
        while time.monotonic() < deadline and not probe().exists(f"capped:release:{ctx.key}"):
            time.sleep(0.05)
    state["balance"] += message["add"]
    return state
