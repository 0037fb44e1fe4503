"""The restart decision: what a supervisor does when one of its children exits.

A pure core modelled on OTP's ``supervisor.erl`` (``do_restart``, ``add_restart``): given the
tree, one ``Exit``, the supervisors' restart histories at time ``now`` and the restart types
of the static actor children, ``decide`` returns a ``RestartPlan``, a tuple of actions for the
impure shell (Redis scripts, the tick) to apply in order. Nothing here reads a clock, Redis or
Celery, so every rule is tested exhaustively.

Idempotency. A tick may die half-way through a plan, or two ticks may handle the same exit, so
the shell may apply a plan twice. Hence:

* a restart history is a set of ``RestartRecord`` keyed by ``exit_id``: recording one exit
  twice counts once, and ``decide`` ignores a record of the exit it is deciding, so deciding
  again after ``RecordRestart`` was applied gives the same answer;
* every action carries ``cause_exit_id`` and absolute values (``restart_at``, the new
  ``backoff_level``), never increments, so the shell can apply each one as "set", or skip it
  when it already applied that action for that exit.

Escalation (``on_limit="escalate"``) is decided here in one go, up the tree: the plan stops the
failing supervisor and then holds its parent's decision about it, and so on up to ``root``.
The same ``exit_id`` is used at every level (each supervisor has its own history).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, assert_never

from celery_supervise.errors import ConfigurationError
from celery_supervise.specs import (
    BackoffSpec,
    Recovery,
    RestartType,
    Strategy,
    SupervisorSpec,
    SupervisorTree,
    is_actor_child,
)

__all__ = [
    "Action",
    "ClearHistory",
    "Exit",
    "ExitReason",
    "LimitCause",
    "NotifyParent",
    "Quarantine",
    "RecordRestart",
    "Recovery",
    "RestartChild",
    "RestartPlan",
    "RestartRecord",
    "RestartType",
    "RootGaveUp",
    "StopChild",
    "StopSupervisor",
    "backoff_delay",
    "decide",
    "describe",
    "next_backoff_level",
    "parse_action",
    "restarts_in_window",
    "restarts_with_group",
    "should_restart",
    "strategy_targets",
]

#: ``normal`` is ``ctx.stop()``; ``worker_lost`` is a step whose lease expired.
ExitReason = Literal["crash", "worker_lost", "normal"]
LimitCause = Literal["intensity", "consecutive_crashes"]


@dataclass(frozen=True)
class RestartRecord:
    """One restart counted against a supervisor's intensity, keyed by the exit that caused it.

    ``child`` is the child whose exit caused the restart (once per restart, however many
    children the strategy restarted); ``at`` is when the restart was decided, as in OTP.
    """

    exit_id: str
    child: str
    at: float


@dataclass(frozen=True)
class Exit:
    """A child of ``supervisor`` exited; what the shell knows about it.

    ``child`` is an actor child (``"type.name:key"``) or, when a supervisor failed, that
    supervisor's name (supervisors are always permanent). ``consecutive_crashes`` counts this
    actor's crashes with no committed step between them, this one included;
    ``backoff_level`` and ``previous_crash_at`` are the actor's backoff state before this exit.
    """

    exit_id: str
    child: str
    supervisor: str
    reason: ExitReason
    at: float
    restart_type: RestartType = "permanent"
    consecutive_crashes: int = 1
    backoff_level: int = 0
    previous_crash_at: float | None = None


@dataclass(frozen=True)
class RecordRestart:
    """Add ``record`` to ``supervisor``'s history (a set keyed by ``record.exit_id``)."""

    name: ClassVar[str] = "record_restart"
    supervisor: str
    record: RestartRecord
    cause_exit_id: str


@dataclass(frozen=True)
class RestartChild:
    """Restart ``child`` (an actor, or a supervisor's whole subtree) at ``restart_at``.

    ``collateral`` is True for a child restarted only because the strategy says so (it did not
    exit); its ``backoff_level`` is then None: leave its own level as it is.
    """

    name: ClassVar[str] = "restart"
    supervisor: str
    child: str
    delay: float
    restart_at: float
    backoff_level: int | None
    collateral: bool
    cause_exit_id: str


@dataclass(frozen=True)
class StopChild:
    """Stop ``child`` for good; mailbox kept.

    Either the exited child itself (temporary, or transient that stopped normally), or a
    temporary sibling that a group restart (one_for_all, rest_for_one) takes down: as in OTP,
    it is terminated with the group and never restarted.
    """

    name: ClassVar[str] = "stop"
    supervisor: str
    child: str
    status: Literal["stopped"]
    cause_exit_id: str


@dataclass(frozen=True)
class Quarantine:
    """Stop ``child`` keeping its state, mailbox and crash records, until an operator acts.

    ``child`` may be a supervisor (its subtree, already stopped, stays stopped); resuming it
    should clear the histories of its subtree, as a restart would.
    """

    name: ClassVar[str] = "quarantine"
    supervisor: str
    child: str
    cause: LimitCause
    cause_exit_id: str


@dataclass(frozen=True)
class NotifyParent:
    """An event for ``parent`` (logged, shown in Flower): ``supervisor`` hit a limit."""

    name: ClassVar[str] = "notify_parent"
    supervisor: str
    parent: str
    event: Literal["quarantined", "escalated"]
    child: str
    cause_exit_id: str


@dataclass(frozen=True)
class StopSupervisor:
    """Escalation: stop every actor in ``supervisor``'s subtree (mailboxes kept)."""

    name: ClassVar[str] = "stop_supervisor"
    supervisor: str
    cause_exit_id: str


@dataclass(frozen=True)
class ClearHistory:
    """Forget ``supervisor``'s restart history: it is being restarted."""

    name: ClassVar[str] = "clear_history"
    supervisor: str
    cause_exit_id: str


@dataclass(frozen=True)
class RootGaveUp:
    """``root`` itself exceeded its limit: everything stays stopped until an operator resumes."""

    name: ClassVar[str] = "root_gave_up"
    cause_exit_id: str


Action = (
    RecordRestart
    | RestartChild
    | StopChild
    | Quarantine
    | NotifyParent
    | StopSupervisor
    | ClearHistory
    | RootGaveUp
)
RestartPlan = tuple[Action, ...]


def backoff_delay(spec: BackoffSpec, level: int) -> float:
    """Seconds to wait before a restart at ``level``: 0, initial, initial*factor, ... <= max."""
    if level <= 0:
        return 0.0
    try:
        delay = spec.initial * spec.factor ** (level - 1)
    except OverflowError:  # a very long crash loop: far past the cap anyway
        return spec.max
    return min(delay, spec.max)


def next_backoff_level(
    spec: BackoffSpec, level: int, previous_crash_at: float | None, now: float
) -> int:
    """The level after a crash at ``now``: one more, or 1 if the actor was quiet long enough."""
    if previous_crash_at is None or now - previous_crash_at >= spec.reset_after:
        return 1
    return max(level, 0) + 1


def should_restart(restart_type: RestartType, reason: ExitReason) -> bool:
    """OTP restart types: permanent always, transient unless normal, temporary never."""
    if restart_type == "permanent":
        return True
    if restart_type == "transient":
        return reason != "normal"
    if restart_type == "temporary":
        return False
    assert_never(restart_type)


def restarts_with_group(restart_type: RestartType) -> bool:
    """Whether a sibling taken down by a group restart comes back with the group.

    OTP's ``terminate_children`` shuts the group down with reason ``shutdown`` and removes its
    temporary children; the rest (permanent, and transient too: a shutdown is not their own
    normal exit) are started again.
    """
    return restart_type != "temporary"


def strategy_targets(
    strategy: Strategy, static_children: Sequence[str], crashed: str
) -> tuple[str, ...]:
    """Children to restart: ``crashed`` first, then the others in static order.

    A dynamic child (not in ``static_children``) has no position, so under rest_for_one it
    restarts alone; under one_for_all it still takes every static child with it.
    """
    if strategy == "one_for_one":
        others: Sequence[str] = ()
    elif strategy == "one_for_all":
        others = static_children
    elif strategy == "rest_for_one":
        after = static_children.index(crashed) + 1 if crashed in static_children else None
        others = static_children[after:] if after is not None else ()
    else:
        assert_never(strategy)
    return (crashed, *(c for c in dict.fromkeys(others) if c != crashed))


def restarts_in_window(
    history: Iterable[RestartRecord],
    now: float,
    period: float,
    *,
    child: str | None = None,
    exclude_exit_id: str | None = None,
) -> int:
    """Distinct restarts (by ``exit_id``) in the window ``(now - period, now]``.

    ``child`` counts only that child's restarts (the per-child budget of quarantine mode);
    ``exclude_exit_id`` leaves out the exit being decided, which may already be recorded.
    """
    counted = {
        r.exit_id
        for r in history
        if now - period < r.at <= now
        and (child is None or r.child == child)
        and r.exit_id != exclude_exit_id
    }
    return len(counted)


def decide(
    tree: SupervisorTree,
    exit: Exit,
    histories: Mapping[str, Iterable[RestartRecord]],
    now: float,
    *,
    restart_types: Mapping[str, RestartType],
) -> RestartPlan:
    """The plan for ``exit`` at ``now``; ``histories`` maps supervisor name -> its records.

    ``restart_types`` maps static actor children (``"type.name:key"``) to their type's
    ``restart`` option, for the siblings a group restart takes down: a temporary one is
    stopped (``StopChild``), the others are restarted with the group. A static actor child
    missing from it counts as permanent; supervisors always are. The exited child's own
    restart type is ``exit.restart_type``.

    As OTP's ``do_restart``: a child that is not to be restarted is stopped and counts for
    nothing. Otherwise this restart counts against the supervisor's intensity: the limit is
    hit when the restarts in ``(now - period, now]``, this one included, exceed ``intensity``
    (only this child's restarts in quarantine mode, all children's in escalate mode), or
    when the actor crashed more than ``max_consecutive_crashes`` times in a row (the slow
    crash loop a time window misses). ``Quarantine.cause`` names the first limit hit, checked
    in that order. A failed supervisor (``exit.child`` is its name) is always restarted
    (permanent) and has no consecutive-crash count. Unknown supervisors, or a supervisor
    exit reported to a supervisor that is not its parent, raise ``ConfigurationError``.
    """
    spec = tree.spec(exit.supervisor)
    is_supervisor = not is_actor_child(exit.child)
    if is_supervisor and tree.parent(exit.child) != spec.name:
        raise ConfigurationError(
            f"supervisor {exit.child!r} is not a child of {spec.name!r}, it cannot exit to it"
        )
    if not is_supervisor and not should_restart(exit.restart_type, exit.reason):
        return (StopChild(spec.name, exit.child, "stopped", exit.exit_id),)

    cause = limit_hit(spec, exit, histories.get(spec.name, ()), now)
    if cause is None:
        return _restart(tree, spec, exit, now, restart_types)
    if spec.on_limit == "quarantine":
        return _quarantine(spec, exit, cause)
    return _escalate(tree, spec, exit, histories, now, restart_types)


def limit_hit(
    spec: SupervisorSpec, exit: Exit, history: Iterable[RestartRecord], now: float
) -> LimitCause | None:
    """Which limit this restart would pass, if any: intensity first (this child's restarts
    only in quarantine mode), then the actor's consecutive crashes."""
    budget_child = exit.child if spec.on_limit == "quarantine" else None
    count = 1 + restarts_in_window(
        history, now, spec.period, child=budget_child, exclude_exit_id=exit.exit_id
    )
    if count > spec.intensity:
        return "intensity"
    if (
        is_actor_child(exit.child)
        and exit.reason != "normal"
        and exit.consecutive_crashes > spec.max_consecutive_crashes
    ):
        return "consecutive_crashes"
    return None


def _restart(
    tree: SupervisorTree,
    spec: SupervisorSpec,
    exit: Exit,
    now: float,
    restart_types: Mapping[str, RestartType],
) -> RestartPlan:
    """Record one restart and restart the strategy's targets together.

    Collateral children restart at the same time as the exited one, so the group comes back
    together as in OTP; a temporary one is stopped instead. A restarted supervisor gets no
    backoff of its own (its actors keep theirs) and starts with a clean history, like a
    freshly started OTP supervisor.
    """
    level, delay = _backoff_of(spec, exit)
    plan: list[Action] = [
        RecordRestart(spec.name, RestartRecord(exit.exit_id, exit.child, now), exit.exit_id)
    ]
    targets = strategy_targets(spec.strategy, tree.static_children(spec.name), exit.child)
    for child in targets:
        collateral = child != exit.child
        stays_down = not restarts_with_group(restart_types.get(child, "permanent"))
        if collateral and is_actor_child(child) and stays_down:
            plan.append(StopChild(spec.name, child, "stopped", exit.exit_id))
            continue
        if not is_actor_child(child):
            plan.extend(ClearHistory(s, exit.exit_id) for s in tree.subtree(child))
        plan.append(
            RestartChild(spec.name, child, delay, now + delay, None if collateral else level,
                         collateral, exit.exit_id)
        )  # fmt: skip
    return tuple(plan)


def _backoff_of(spec: SupervisorSpec, exit: Exit) -> tuple[int | None, float]:
    """(new backoff level, delay) of the exited child: None and 0 for a supervisor; a
    normal exit is not a crash (no wait, level unchanged)."""
    if not is_actor_child(exit.child):
        return None, 0.0
    if exit.reason == "normal":
        return exit.backoff_level, 0.0
    level = next_backoff_level(spec.backoff, exit.backoff_level, exit.previous_crash_at, exit.at)
    return level, backoff_delay(spec.backoff, level)


def _quarantine(spec: SupervisorSpec, exit: Exit, cause: LimitCause) -> RestartPlan:
    """Quarantine only the child that hit its limit; siblings are left alone."""
    plan: list[Action] = [Quarantine(spec.name, exit.child, cause, exit.exit_id)]
    if spec.parent is not None:
        plan.append(NotifyParent(spec.name, spec.parent, "quarantined", exit.child, exit.exit_id))
    return tuple(plan)


def _escalate(
    tree: SupervisorTree,
    spec: SupervisorSpec,
    exit: Exit,
    histories: Mapping[str, Iterable[RestartRecord]],
    now: float,
    restart_types: Mapping[str, RestartType],
) -> RestartPlan:
    """OTP: stop the whole subtree and fail to the parent, which decides about this supervisor."""
    stop = StopSupervisor(spec.name, exit.exit_id)
    if spec.parent is None:
        return (stop, RootGaveUp(exit.exit_id))
    failed = Exit(
        exit_id=exit.exit_id,
        child=spec.name,
        supervisor=spec.parent,
        reason="crash",
        at=now,
    )
    notify = NotifyParent(spec.name, spec.parent, "escalated", exit.child, exit.exit_id)
    return (stop, notify, *decide(tree, failed, histories, now, restart_types=restart_types))


def describe(action: Action) -> dict[str, Any]:
    """A JSON-able dict for the structured log line and Flower: ``{"action": "restart", ...}``."""
    return {"action": action.name, **dataclasses.asdict(action)}


_ACTION_TYPES: dict[str, type[Action]] = {
    cls.name: cls
    for cls in (
        RecordRestart,
        RestartChild,
        StopChild,
        Quarantine,
        NotifyParent,
        StopSupervisor,
        ClearHistory,
        RootGaveUp,
    )
}


def parse_action(data: Mapping[str, Any]) -> Action:
    """The action ``describe`` wrote (a stored plan read back); ``ValueError`` if it is not
    one (a plan written by another version, or garbage)."""
    fields = {k: v for k, v in data.items() if k != "action"}
    try:
        cls = _ACTION_TYPES[data["action"]]
        if cls is RecordRestart:
            fields["record"] = RestartRecord(**fields["record"])
        return cls(**fields)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stored plan action: {data!r} ({exc})") from None
