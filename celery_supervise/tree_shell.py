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
from collections.abc import Callable, Sequence
from typing import Any

from .codec import text
from .decisions import (
    Action,
    ClearHistory,
    Exit,
    NotifyParent,
    Quarantine,
    RecordRestart,
    RestartChild,
    RestartRecord,
    RootGaveUp,
    StopChild,
    StopSupervisor,
    decide,
    describe,
    next_backoff_level,
    parse_action,
    should_restart,
)
from .keyspace import ActorKeys, Keyspace
from .registry import ActorSpec, all_types, registered
from .runtime import Runtime
from .specs import RestartType, SupervisorTree, is_actor_child, split_actor_child
from .status import RUNNING_STATUSES
from .store import ActorStore

__all__ = ["decide_exit", "restart_subtree", "stop_subtree", "supervisor_chain"]

#: How long a stored plan is kept (it is only needed until the exit is settled).
PLAN_TTL_SECONDS = 3600
#: Statuses from which a collateral (strategy) restart takes an actor down and back up.
RUNNING = RUNNING_STATUSES


def child_id(type_name: str, key: str) -> str:
    return f"{type_name}:{key}"


def supervisor_chain(
    tree: SupervisorTree, type_name: str, key: str, type_supervisor: str
) -> list[str]:
    """The actor's supervisor and its ancestors up to root."""
    name: str | None = tree.supervisor_of_actor(child_id(type_name, key), type_supervisor)
    chain = []
    while name is not None:
        chain.append(name)
        name = tree.parent(name)
    return chain


def read_histories(rt: Runtime) -> dict[str, list[RestartRecord]]:
    pipe = rt.client.pipeline(transaction=False)
    names = rt.tree.names()
    for name in names:
        pipe.zrange(rt.keyspace.supervisor_history(name), 0, -1, withscores=True)
    out: dict[str, list[RestartRecord]] = {}
    for name, rows in zip(names, pipe.execute(), strict=True):
        out[name] = [
            RestartRecord(*Keyspace.parse_restart_member(text(member)), float(score))
            for member, score in rows
        ]
    return out


def _exit_of(rt: Runtime, atype: ActorSpec[Any], keys: ActorKeys, meta: dict[str, str]) -> Exit:
    """The exit the actor's meta hash describes: its latest crash, or a normal stop."""
    child = child_id(keys.type_name, keys.key)
    supervisor = rt.tree.supervisor_of_actor(child, atype.supervisor)
    if meta.get("status") != "crashed":
        return Exit(
            f"{child}#stop{meta.get('stopped_at')}",
            child,
            supervisor,
            "normal",
            rt.clock(),
            atype.restart,
            0,
            int(meta.get("backoff_level", "0")),
        )
    last = json.loads(meta.get("last_crash") or "{}")
    last_at = meta.get("last_crash_at")
    return Exit(
        exit_id=f"{child}#{meta['crash_seq']}",
        child=child,
        supervisor=supervisor,
        reason="worker_lost" if last.get("reason") == "worker_lost" else "crash",
        at=rt.clock(),  # Redis' clock: restart histories are compared across ticks
        restart_type=atype.restart,
        consecutive_crashes=max(1, int(meta.get("crashes_in_row", "1"))),
        backoff_level=int(meta.get("backoff_level", "0")),
        previous_crash_at=int(last_at) / 1000 if last_at else None,
    )


def static_restart_types(tree: SupervisorTree) -> dict[str, RestartType]:
    """The ``restart`` option of every static actor child whose type is registered here
    (``decide`` stops a temporary sibling that a group restart takes down)."""
    types = all_types()
    out: dict[str, RestartType] = {}
    for name in tree.names():
        for child in tree.static_children(name):
            atype = types.get(split_actor_child(child)[0]) if is_actor_child(child) else None
            if atype is not None:
                out[child] = atype.restart
    return out


def _stored_plan(rt: Runtime, exit: Exit) -> list[Action] | None:
    """The plan for ``exit``: decided now and stored, or the one a tick stored before."""
    plan_key = rt.keyspace.plan(exit.exit_id)
    stored = rt.client.get(plan_key)
    if stored is None:
        restart_types = static_restart_types(rt.tree)
        plan = decide(rt.tree, exit, read_histories(rt), exit.at, restart_types=restart_types)
        rt.client.set(
            plan_key, json.dumps([describe(a) for a in plan]), nx=True, ex=PLAN_TTL_SECONDS
        )
        stored = rt.client.get(plan_key)
    if stored is None:  # decided and applied by a concurrent tick since we looked
        return None
    return [parse_action(a) for a in json.loads(stored)]


def decide_exit(rt: Runtime, atype: ActorSpec[Any], keys: ActorKeys) -> str:
    """Decide (or re-apply the stored decision for) this actor's latest exit."""
    meta = {text(k): text(v) for k, v in rt.client.hgetall(keys.meta).items()}
    crashed = meta.get("status") == "crashed"
    if not crashed and not _unreported_stop(meta):
        return "checked"  # settled by a concurrent tick since our look
    exit = _exit_of(rt, atype, keys, meta)
    plan = _stored_plan(rt, exit)
    if plan is None:
        return "checked"
    if crashed and not any(_names(a, exit.child) for a in plan):
        # The plan stops this actor's supervisor (escalation) instead of deciding about the
        # actor: record it as stopped by that supervisor *before* applying the plan, so the
        # supervisor's restart -- perhaps in this very plan -- brings it back too.
        rt.client.sadd(rt.keyspace.supervisor_members(exit.supervisor), exit.child)
    shell = _PlanShell(rt, keys, meta, exit)
    finish: Callable[[], object] | None = None
    for action in plan:
        # Reported before it is applied: whoever sees its effect finds it in the events. A
        # tick killed in between leaves the actor 'crashed', so the next tick re-applies the
        # plan and reports it again (at least once; exit_id + action identify a repeat).
        fields = {("notice" if k == "event" else k): v for k, v in describe(action).items()}
        rt.events.record("decision", exit_id=exit.exit_id, reason=exit.reason, **fields)
        finish = shell.apply(action) or finish
    # The exited actor is settled last: until then it still reads 'crashed' (or its
    # normal exit is unreported), so a tick that dies mid-plan leaves it for the next
    # tick, which re-applies the stored plan.
    if finish is not None:
        finish()
    elif crashed:  # not named by the plan (its supervisor was stopped): it stays stopped
        shell.settle("stopped", 0.0, None, "supervisor stopped")
    if not crashed:
        rt.client.hset(keys.meta, "exit_reported", meta.get("stopped_at", ""))
    # The plan stays until it expires: a tick that looked before this one settled the actor
    # finds it (or the status check above stops it) instead of deciding the exit again.
    return plan[-1].name if plan else "checked"


def _unreported_stop(meta: dict[str, str]) -> bool:
    return (
        meta.get("status") == "stopped"
        and meta.get("stopped_normally") == "1"
        and meta.get("exit_reported") != meta.get("stopped_at")
    )


def _names(action: Action, child: str) -> bool:
    return isinstance(action, RestartChild | StopChild | Quarantine) and action.child == child


class _PlanShell:
    """Applies one exit's plan; an action on the exited actor itself is returned, to run
    last (see ``decide_exit``)."""

    def __init__(self, rt: Runtime, keys: ActorKeys, meta: dict[str, str], exit: Exit) -> None:
        self.rt, self.keys, self.meta, self.exit = rt, keys, meta, exit
        self.store = ActorStore(rt)

    def apply(self, action: Action) -> Callable[[], object] | None:
        me, ks = self.exit.child, self.rt.keyspace
        match action:
            case RecordRestart(supervisor=name, record=record):
                self.record_restart(name, record)
            case RestartChild(child=child) if child == me:
                return self.restart_me(action)
            case RestartChild():
                self.restart_sibling(action)
            case StopChild(child=child) if child == me:
                why = f"{self.exit.restart_type} actor not restarted"
                return lambda: self.settle("stopped", 0.0, None, why)
            case StopChild(child=child, cause_exit_id=cause):
                # A temporary sibling that a group restart takes down stays down (OTP).
                self.store.halt(_keys(self.rt, child), "stopped", reason=f"stop:{me}",
                                only_from=RUNNING, cause=cause)  # fmt: skip
            case Quarantine(child=child, cause=cause) if child == me:
                return lambda: self.settle("quarantined", 0.0, None, f"limit:{cause}")
            case Quarantine(child=child, cause=cause):
                _set_supervisor(self.rt, child, "quarantined", f"limit:{cause}")
            case StopSupervisor(supervisor=name, cause_exit_id=cause):
                stop_subtree(
                    self.rt, name, reason=f"escalated:{me}", cause=cause + ":stop", exited=me
                )
            case ClearHistory(supervisor=name):
                self.rt.client.delete(ks.supervisor_history(name))
            case RootGaveUp():
                _set_supervisor(self.rt, "root", "stopped", "root gave up")
            case NotifyParent():
                pass  # a notice is only reported
        return None

    def record_restart(self, supervisor: str, record: RestartRecord) -> None:
        ks = self.rt.keyspace
        hist = ks.supervisor_history(supervisor)
        member = ks.restart_member(record.exit_id, record.child)
        if self.rt.client.zadd(hist, {member: record.at}):  # once per exit: a replay adds 0
            self.rt.client.hincrby(ks.supervisor(supervisor), "restarts_total", 1)
        period = self.rt.tree.spec(supervisor).period
        self.rt.client.zremrangebyscore(hist, "-inf", record.at - max(period * 2, 60))

    def restart_sibling(self, action: RestartChild) -> None:
        """A collateral restart: an actor sibling backs off with the group; a supervisor
        child restarts its whole subtree."""
        delay = max(0.0, action.restart_at - self.rt.clock())
        reason, cause = f"restart:{self.exit.child}", action.cause_exit_id
        if is_actor_child(action.child):
            target = _keys(self.rt, action.child)
            if _crash_seq(self.rt, target) is not None:  # crashed, not decided yet: as OTP
                absorb_crash(self.rt, target, action.supervisor, "backoff", delay, reason)
                return
            self.store.halt(target, "backoff", reason=reason, delay=delay, only_from=RUNNING,
                            cause=cause)  # fmt: skip
        else:
            restart_subtree(self.rt, action.child, delay, reason=reason, cause=cause)

    def restart_me(self, action: RestartChild) -> Callable[[], object]:
        if self.meta.get("status") == "crashed":
            delay = max(0.0, action.restart_at - self.rt.clock())
            return lambda: self.settle("backoff", delay, action.backoff_level, "restart")
        # a permanent actor that stopped normally comes back
        return lambda: self.store.restart(
            self.keys,
            mode="force",
            recovery="last_good",
            initial=None,
            history=1,
            clear_crashes=False,
        )

    def settle(self, status: str, delay: float, level: int | None, reason: str) -> None:
        if self.meta.get("status") != "crashed":
            return
        self.store.settle(
            self.keys,
            crash_seq=self.meta["crash_seq"],
            status=status,
            delay=delay,
            level=level if level is not None else self.meta.get("backoff_level", "0"),
            reason=reason,
        )


def _set_supervisor(rt: Runtime, name: str, status: str, reason: str, cause: str = "") -> None:
    """Set a supervisor's status; ``cause`` (the exit id a plan acts for) is kept with it, so
    a plan applied twice acts once (``_applied``)."""
    rt.client.hset(
        rt.keyspace.supervisor(name), mapping={"status": status, "reason": reason, "cause": cause}
    )


def _applied(rt: Runtime, name: str, cause: str, also: str = "") -> bool:
    """True if the supervisor's last transition was made for ``cause`` (or ``also``). The
    causes of one exit come in order -- "X:stop" (escalation), then "X" (the restart) -- so a
    stop re-applied after its restart is stale too."""
    if not cause:
        return False
    last = rt.client.hget(rt.keyspace.supervisor(name), "cause")
    return last is not None and text(last) in (cause, also or cause)


def _keys(rt: Runtime, child: str) -> ActorKeys:
    return rt.keyspace.actor(*split_actor_child(child))


def stop_subtree(
    rt: Runtime, name: str, *, reason: str, cause: str = "", exited: str = ""
) -> None:
    """Stop every supervisor of the subtree and its static actor children. Dynamic children
    are stopped the next time they run (their run checks their supervisors' status), so no
    scan of all actors is ever needed; each one so stopped is recorded for the restart.
    ``exited`` (the actor whose exit is being decided) is left alone: it is settled after
    the rest of its plan (decide_exit records it as a member first)."""
    store = ActorStore(rt)
    if _applied(rt, name, cause, also=cause.removesuffix(":stop")):
        return  # this stop (or the restart that follows it) was applied by an earlier tick
    for sname in rt.tree.subtree(name):
        _set_supervisor(rt, sname, "stopped", reason, cause)
        for child in rt.tree.static_children(sname):
            if not is_actor_child(child) or child == exited:
                continue
            keys, why = _keys(rt, child), f"supervisor:{sname}"
            if _crash_seq(rt, keys) is not None:
                stopped = absorb_crash(rt, keys, sname, "stopped", 0.0, why)
            else:
                halted = store.halt(keys, "stopped", reason=why, only_from=RUNNING, cause=cause)
                stopped = halted == "ok"
            if stopped:
                rt.client.sadd(rt.keyspace.supervisor_members(sname), child)


def restart_subtree(rt: Runtime, name: str, delay: float, *, reason: str, cause: str = "") -> None:
    """Restart a supervisor: the actors it stopped (static or dynamic) come back after
    ``delay``, and so do its running static children (a group restart); actors stopped by
    someone else (an operator, their own restart type) stay as they are. Its histories are
    cleared by the plan's ClearHistory actions."""
    store = ActorStore(rt)
    if _applied(rt, name, cause):
        return  # applied by an earlier tick re-applying the same stored plan
    for sname in rt.tree.subtree(name):
        _set_supervisor(rt, sname, "running", reason, cause)
        members = {text(m) for m in rt.client.smembers(rt.keyspace.supervisor_members(sname))}
        static = {c for c in rt.tree.static_children(sname) if is_actor_child(c)}
        for child in sorted(members | static):
            keys = _keys(rt, child)
            if _crash_seq(rt, keys) is not None:
                absorb_crash(rt, keys, sname, "backoff", delay, reason)
                continue
            back_from = (*RUNNING, "stopped") if child in members else RUNNING
            store.halt(keys, "backoff", reason=reason, delay=delay, only_from=back_from,
                       cause=cause)  # fmt: skip
        rt.client.delete(rt.keyspace.supervisor_members(sname))


def _crash_seq(rt: Runtime, keys: ActorKeys) -> str | None:
    """The crash a child is waiting to have decided, if it is 'crashed'."""
    status, crash_seq = rt.client.hmget(keys.meta, ["status", "crash_seq"])
    return text(crash_seq) if status is not None and text(status) == "crashed" else None


def absorb_crash(
    rt: Runtime, keys: ActorKeys, supervisor: str, status: str, delay: float, reason: str
) -> bool:
    """A group restart or an escalation takes down a child that crashed but whose crash was
    not decided yet. As in OTP, where that exit then finds no child to restart, the crash
    counts for no restart of its own: the child goes with the group. But it still is a
    crash: its restart type is kept (a temporary child is not restarted) and its backoff
    level advances. Returns True if the child goes with the group (``status``)."""
    meta = {text(k): text(v) for k, v in rt.client.hgetall(keys.meta).items()}
    if meta.get("status") != "crashed":
        return False
    atype = registered(keys.type_name)
    store = ActorStore(rt)
    if not should_restart(atype.restart, "crash"):
        store.settle(keys, crash_seq=meta["crash_seq"], status="stopped", delay=0.0,
                     level=meta.get("backoff_level", "0"),
                     reason=f"{atype.restart} actor not restarted")  # fmt: skip
        return False
    last_at = meta.get("last_crash_at")
    level = next_backoff_level(
        rt.tree.spec(supervisor).backoff,
        int(meta.get("backoff_level") or 0),
        int(last_at) / 1000 if last_at else None,
        rt.clock(),
    )
    store.settle(keys, crash_seq=meta["crash_seq"], status=status, delay=delay, level=level,
                 reason=reason)  # fmt: skip
    return True


def forget_histories(rt: Runtime, names: Sequence[str]) -> None:
    for sname in names:
        rt.client.delete(rt.keyspace.supervisor_history(sname))
