"""Applying the decision core's plans to Redis: the supervision tree's imperative shell.

``decisions.decide`` is pure; this module feeds it what Redis knows (the exit, the restart
histories) and applies the plan. A plan is stored under its exit id before anything is
applied, and re-applied (never re-decided) if a tick dies half-way: every action is
idempotent (history entries are keyed by exit id, actor transitions are compare-and-set),
and the crashed actor is settled last, since its 'crashed' status is what makes a tick
look at the exit again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .codec import text
from .decisions import Exit, ExitReason, RestartRecord, decide, describe
from .specs import RestartType, is_actor_child, split_actor_child
from .status import RUNNING_STATUSES
from .store import run_pipeline

if TYPE_CHECKING:
    from .actors import ActorType
    from .ref import ActorRef
    from .supervision import Supervision

__all__ = ["decide_exit", "resume_supervisor", "supervisor_chain"]

#: How long a stored plan is kept (it is only needed until the exit is settled).
PLAN_TTL_SECONDS = 3600
#: Statuses from which a collateral (strategy) restart takes an actor down and back up.
RUNNING = ",".join(RUNNING_STATUSES)


def child_id(type_name: str, key: str) -> str:
    return f"{type_name}:{key}"


def supervisor_chain(sup: Supervision, type_name: str, key: str, type_supervisor: str) -> list[str]:
    """The actor's supervisor and its ancestors up to root."""
    name: str | None = sup.tree.supervisor_of_actor(child_id(type_name, key), type_supervisor)
    chain = []
    while name is not None:
        chain.append(name)
        name = sup.tree.parent(name)
    return chain


def read_histories(sup: Supervision) -> dict[str, list[RestartRecord]]:
    pipe = sup.client.pipeline(transaction=False)
    names = sup.tree.names()
    for name in names:
        pipe.zrange(sup.keyspace.supervisor_history(name), 0, -1, withscores=True)
    out: dict[str, list[RestartRecord]] = {}
    for name, rows in zip(names, pipe.execute(), strict=True):
        records = []
        for member, score in rows:
            exit_id, _, child = text(member).partition("\n")
            records.append(RestartRecord(exit_id, child, float(score)))
        out[name] = records
    return out


def static_restart_types(sup: Supervision) -> dict[str, RestartType]:
    """The ``restart`` option of every static actor child whose type is registered here
    (``decide`` stops a temporary sibling that a group restart takes down)."""
    from .actors import all_types

    types = all_types()
    out: dict[str, RestartType] = {}
    for name in sup.tree.names():
        for child in sup.tree.static_children(name):
            atype = types.get(split_actor_child(child)[0]) if is_actor_child(child) else None
            if atype is not None:
                out[child] = atype.restart
    return out


def decide_exit(
    sup: Supervision, atype: ActorType[Any], ref: ActorRef, meta: dict[str, str]
) -> str:
    """Decide (or re-apply the stored decision for) this actor's latest exit."""
    child = child_id(ref.type_name, ref.key)
    supervisor = sup.tree.supervisor_of_actor(child, atype.supervisor)
    crashed = meta.get("status") == "crashed"
    reason: ExitReason
    if crashed:
        exit_id = f"{child}#{meta['crash_seq']}"
        last = json.loads(meta.get("last_crash") or "{}")
        reason = "worker_lost" if last.get("reason") == "worker_lost" else "crash"
    else:
        exit_id = f"{child}#stop{meta.get('stopped_at')}"
        reason = "normal"
    plan_key = f"{sup.keyspace.prefix}:plan:{{{exit_id}}}"
    if crashed and text(sup.client.hget(ref.keys.meta, "crash_seq") or b"") != meta["crash_seq"]:
        return "checked"  # a newer crash: this exit was decided and overtaken meanwhile
    if crashed and text(sup.client.hget(ref.keys.meta, "status") or b"") != "crashed":
        return "checked"  # settled by a concurrent tick since our look
    stored = sup.client.get(plan_key)
    if stored is None:
        now = time.time()
        last_at = meta.get("last_crash_at")
        exit = Exit(
            exit_id=exit_id,
            child=child,
            supervisor=supervisor,
            reason=reason,
            at=now,
            restart_type=atype.restart,
            consecutive_crashes=max(1, int(meta.get("crashes_in_row", "1"))) if crashed else 0,
            backoff_level=int(meta.get("backoff_level", "0")),
            previous_crash_at=int(last_at) / 1000 if last_at else None,
        )
        decided = decide(
            sup.tree, exit, read_histories(sup), now, restart_types=static_restart_types(sup)
        )
        plan = [describe(a) for a in decided]
        sup.client.set(plan_key, json.dumps(plan), nx=True, ex=PLAN_TTL_SECONDS)
        stored = sup.client.get(plan_key)
    if stored is None:  # decided and applied by a concurrent tick since we looked
        return "checked"
    plan = json.loads(stored)
    names_me = any(
        a.get("child") == child and a["action"] in ("restart", "stop", "quarantine") for a in plan
    )
    if crashed and not names_me:
        # The plan stops this actor's supervisor (escalation) instead of deciding about the
        # actor: record it as stopped by that supervisor *before* applying the plan, so the
        # supervisor's restart -- perhaps in this very plan -- brings it back too.
        sup.client.sadd(sup.keyspace.supervisor_members(supervisor), child)
    finish: Callable[[], None] | None = None
    for action in plan:
        finish = _apply(sup, action, ref, meta) or finish
        fields = {("notice" if k == "event" else k): v for k, v in action.items()}
        sup.log_event("decision", exit_id=exit_id, reason=reason, **fields)
    # The exited actor is settled last: until then it still reads 'crashed' (or its
    # normal exit is unreported), so a tick that dies mid-plan leaves it for the next
    # tick, which re-applies the stored plan.
    if finish is not None:
        finish()
    elif crashed:  # not named by the plan (its supervisor was stopped): it stays stopped
        _settle(sup, ref, meta, "stopped", 0.0, None, "supervisor stopped")
    if not crashed:
        sup.client.hset(ref.keys.meta, "exit_reported", meta.get("stopped_at", ""))
    # The plan stays until it expires: a tick that looked before this one settled the actor
    # finds it (or the status check above stops it) instead of deciding the exit again.
    return plan[-1]["action"] if plan else "checked"


def _settle(
    sup: Supervision,
    ref: ActorRef,
    meta: dict[str, str],
    status: str,
    delay: float,
    level: int | None,
    reason: str,
) -> None:
    if meta.get("status") != "crashed":
        return

    def build(pipe: Any) -> None:
        if status == "backoff":
            sup.store.add_hint(pipe, ref.type_name, ref.key, delay)
        sup.scripts.settle(
            keys=[ref.keys.meta],
            args=[
                meta["crash_seq"],
                status,
                int(delay * 1000),
                level if level is not None else meta.get("backoff_level", "0"),
                reason,
            ],
            client=pipe,
        )

    run_pipeline(sup, build)


def _actor_ref(sup: Supervision, child: str) -> ActorRef:
    type_name, key = split_actor_child(child)
    return sup.ref(type_name, key)


def _apply(
    sup: Supervision, action: dict[str, Any], ref: ActorRef, meta: dict[str, str]
) -> Callable[[], None] | None:
    """Apply one action; an action on the exited actor itself is returned, to run last."""
    kind = action["action"]
    me = child_id(ref.type_name, ref.key)
    ks = sup.keyspace
    if kind == "record_restart":
        record = action["record"]
        hist = ks.supervisor_history(action["supervisor"])
        sup.client.zadd(hist, {f"{record['exit_id']}\n{record['child']}": record["at"]})
        period = sup.tree.spec(action["supervisor"]).period
        sup.client.zremrangebyscore(hist, "-inf", record["at"] - max(period * 2, 60))
    elif kind == "restart":
        delay = max(0.0, action["restart_at"] - time.time())
        child = action["child"]
        if child == me and meta.get("status") == "crashed":
            level = action["backoff_level"]
            return lambda: _settle(sup, ref, meta, "backoff", delay, level, "restart")
        if child == me:  # a permanent actor that stopped normally comes back
            return lambda: _restart_stopped(sup, ref)
        elif is_actor_child(child):
            sup.store.halt(
                _actor_ref(sup, child),
                "backoff",
                reason=f"restart:{me}",
                delay=delay,
                only_from=RUNNING,
                cause=action["cause_exit_id"],
            )
        else:
            restart_subtree(
                sup, child, delay, reason=f"restart:{me}", cause=action["cause_exit_id"]
            )
    elif kind == "stop" and action["child"] == me:
        return lambda: _settle(sup, ref, meta, "stopped", 0.0, None, ref_reason(sup, ref))
    elif kind == "stop" and is_actor_child(action["child"]):
        # A temporary sibling taken down by a group restart: stopped, never restarted (OTP).
        sup.store.halt(
            _actor_ref(sup, action["child"]),
            "stopped",
            reason=f"stop:{me}",
            only_from=RUNNING,
            cause=action["cause_exit_id"],
        )
    elif kind == "quarantine":
        if action["child"] == me:
            why = f"limit:{action['cause']}"
            return lambda: _settle(sup, ref, meta, "quarantined", 0.0, None, why)
        else:
            sup.client.hset(
                ks.supervisor(action["child"]),
                mapping={"status": "quarantined", "reason": f"limit:{action['cause']}"},
            )
    elif kind == "stop_supervisor":
        stop_subtree(
            sup,
            action["supervisor"],
            reason=f"escalated:{me}",
            cause=action["cause_exit_id"] + ":stop",
        )
    elif kind == "clear_history":
        sup.client.delete(ks.supervisor_history(action["supervisor"]))
    elif kind == "root_gave_up":
        sup.client.hset(
            ks.supervisor("root"), mapping={"status": "stopped", "reason": "root gave up"}
        )
    return None


def _restart_stopped(sup: Supervision, ref: ActorRef) -> None:
    sup.store.restart(
        ref, mode="force", recovery="last_good", initial=None, history=1, clear_crashes=False
    )


def ref_reason(sup: Supervision, ref: ActorRef) -> str:
    from .actors import registered

    return f"{registered(ref.type_name).restart} actor not restarted"


def stop_subtree(sup: Supervision, name: str, *, reason: str, cause: str = "") -> None:
    """Stop every supervisor of the subtree and its static actor children. Dynamic children
    are stopped the next time they run (their run checks their supervisors' status), so no
    scan of all actors is ever needed; each one so stopped is recorded for the restart."""
    for sname in sup.tree.subtree(name):
        sup.client.hset(
            sup.keyspace.supervisor(sname), mapping={"status": "stopped", "reason": reason}
        )
        for child in sup.tree.static_children(sname):
            if is_actor_child(child):
                target = _actor_ref(sup, child)
                if (
                    sup.store.halt(
                        target,
                        "stopped",
                        reason=f"supervisor:{sname}",
                        only_from=RUNNING + ",crashed",
                        cause=cause,
                    )
                    == "ok"
                ):
                    sup.client.sadd(sup.keyspace.supervisor_members(sname), child)


def restart_subtree(
    sup: Supervision, name: str, delay: float, *, reason: str, cause: str = ""
) -> None:
    """Restart a supervisor: every actor it stopped (static or dynamic) comes back after
    ``delay``; its histories are cleared by the plan's ClearHistory actions."""
    for sname in sup.tree.subtree(name):
        sup.client.hset(
            sup.keyspace.supervisor(sname), mapping={"status": "running", "reason": reason}
        )
        members = {text(m) for m in sup.client.smembers(sup.keyspace.supervisor_members(sname))}
        members |= {c for c in sup.tree.static_children(sname) if is_actor_child(c)}
        for child in sorted(members):
            sup.store.halt(
                _actor_ref(sup, child),
                "backoff",
                reason=reason,
                delay=delay,
                only_from=RUNNING + ",stopped,crashed",
                cause=cause,
            )
        sup.client.delete(sup.keyspace.supervisor_members(sname))


def resume_supervisor(sup: Supervision, name: str) -> None:
    """Operator: bring a stopped or quarantined supervisor (and its subtree) back."""
    sup.tree.spec(name)
    for sname in sup.tree.subtree(name):
        sup.client.delete(sup.keyspace.supervisor_history(sname))
    restart_subtree(sup, name, 0.0, reason="operator resume")
    sup.log_event("resume_supervisor", supervisor=name)
