"""What an operator can do (``ActorRef`` methods and the CLI call these): restart, resume,
rollback, stop, delete an actor; requeue a dead letter; resume a supervisor. Each is one
compare-and-set script on the actor (or the supervisor's subtree), so it fences off a step
in flight, and each is reported as an event."""

from __future__ import annotations

from typing import Any

from .codec import encode
from .errors import ActorBusy, ConfigurationError, StateRejected
from .keyspace import ActorKeys
from .records import RestartOutcome
from .registry import registered
from .runtime import Runtime
from .store import ActorStore
from .tree_shell import forget_histories, restart_subtree

__all__ = ["delete_actor", "restart_actor", "resume_supervisor", "rollback_actor", "stop_actor"]

#: Statuses ``resume`` acts on; from any other it is refused ("skip").
HALTED = ("stopped", "quarantined", "backoff")


def restart_actor(
    rt: Runtime,
    keys: ActorKeys,
    *,
    recovery: str | None,
    only_halted: bool = False,
    fence: str = "",
) -> RestartOutcome:
    """Restart now (from any status, or with ``only_halted`` only a halted one; with
    ``fence`` (``store.fence_of``) only if the actor is still as that reader saw it). The
    outcome names the version the restart left (a reset's own), which a reader of the
    actor afterwards may no longer see: a worker can commit the next step first."""
    atype = registered(keys.type_name)
    recovery = recovery or atype.recovery
    if recovery not in ("last_good", "reset"):
        raise ConfigurationError(f"recovery must be 'last_good' or 'reset', got {recovery!r}")
    initial = atype.valid_initial(keys.key) if recovery == "reset" else None
    store = ActorStore(rt)
    if only_halted:
        meta, *_ = store.read_meta(keys)
        status = meta.get("status")
        if status not in HALTED and status != "crashed":
            return RestartOutcome("skip")
    outcome = store.restart(
        keys,
        mode="force",
        recovery=recovery,
        initial=initial,
        history=atype.history,
        clear_crashes=True,
        fence=fence,
        state_version=atype.state_version,
    )
    rt.events.record(
        "operator_restart", actor=keys.type_name, key=keys.key, recovery=recovery,
        outcome=outcome.outcome,
        **({"after": "replay"} if fence else {}),
    )
    return outcome


def rollback_actor(
    rt: Runtime, keys: ActorKeys, version: int, state: Any, state_version: int = 1
) -> int:
    """Commit ``state`` (that of ``version``, from history, of ``state_version``) upgraded
    to the type's state version as a new version, if it still passes ``validate``; a step
    in flight is fenced off."""
    atype = registered(keys.type_name)
    state = atype.upgrade(state, state_version)  # StateRejected('migration_failed')
    problem = atype.check(state)
    if problem:
        raise StateRejected("invalid_state", f"version {version} fails validate: {problem}")
    made = ActorStore(rt).restart(
        keys,
        mode="force",
        recovery="reset",
        initial=encode(state, what=f"state of version {version}"),
        history=atype.history,
        clear_crashes=True,
        rollback_of=version,
        state_version=atype.state_version,
    )
    rt.events.record("rollback", actor=keys.type_name, key=keys.key, to_version=version)
    return made.version


def stop_actor(rt: Runtime, keys: ActorKeys) -> str:
    """Stop the actor; its mailbox is kept and keeps accepting messages."""
    return ActorStore(rt).halt(keys, "stopped", reason="operator")


def delete_actor(rt: Runtime, keys: ActorKeys) -> str:
    """Delete every key of a stopped, quarantined or idle actor with nothing queued, no
    timers, no isolated subtask pending and nothing left to relay ('deleted' | 'missing',
    a retry after a lost reply); otherwise ``ActorBusy`` naming why, and nothing changes."""
    outcome, why = ActorStore(rt).delete(keys)
    if outcome == "busy":
        raise ActorBusy(f"{keys.type_name}:{keys.key}", why)
    if outcome == "deleted":
        rt.events.record("deleted", actor=keys.type_name, key=keys.key, by="operator")
    return outcome


def resume_supervisor(rt: Runtime, name: str) -> None:
    """Bring a stopped or quarantined supervisor (and its subtree) back."""
    rt.tree.spec(name)  # ConfigurationError names the known supervisors
    subtree = rt.tree.subtree(name)
    forget_histories(rt, subtree)
    restart_subtree(rt, name, 0.0, reason="operator resume")
    rt.events.record("resume_supervisor", supervisor=name)
