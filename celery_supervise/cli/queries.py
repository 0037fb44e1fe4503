"""What the reading commands show, read from Redis into dataclasses; nothing is printed here.

``dataclasses.asdict`` of each result is exactly its ``--json`` output. Nothing scans Redis:
``tree_status`` reads the supervisors' own keys, the static children named in the specs and
the capped events stream, in one pipelined round trip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..codec import text
from ..keyspace import Keyspace
from ..status import PUBLIC_STATUSES

if TYPE_CHECKING:
    from ..census import TypeCensus
    from ..ref import ActorRef, DeadLetter, HistoryEntry, Timer, UndeliverableEffect
    from ..supervision import Supervision

__all__ = [
    "ActorChild",
    "ActorDeadLetters",
    "ActorReport",
    "DeadLetterHolder",
    "Flagged",
    "Restart",
    "Restarts",
    "SupervisorChild",
    "SupervisorStatus",
    "TreeStatus",
    "actor_dead_letters",
    "actor_report",
    "dead_letter_holders",
    "tree_status",
]

#: Decisions shown by ``status`` (newest of the capped events stream).
EVENTS_SHOWN = 20
#: Restarts listed per supervisor by ``status``.
RESTARTS_SHOWN = 5
#: Flagged (stopped/crashed/quarantined) actors listed per supervisor by ``status``.
FLAGGED_SHOWN = 20
#: Undeliverable effects listed by ``actor`` (the newest; the count is of all).
UNDELIVERABLE_SHOWN = 20


# -- status ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Restart:
    exit_id: str
    child: str
    at: float


@dataclass(frozen=True)
class Restarts:
    #: Restarts inside the supervisor's intensity period.
    in_period: int
    #: Restarts its history still holds.
    kept: int
    #: The newest ``RESTARTS_SHOWN``, newest first.
    recent: list[Restart]


@dataclass(frozen=True)
class Flagged:
    """Stopped, crashed or quarantined actors under one supervisor: those it stopped
    (escalation) and the quarantined actors of its types (from the census)."""

    count: int
    shown: list[str]
    #: Of ``count``, how many are quarantined.
    quarantined: int = 0


@dataclass(frozen=True)
class ActorChild:
    child: str
    status: str  # "absent" until the actor has received a message
    kind: str = "actor"


@dataclass(frozen=True)
class SupervisorChild:
    child: str
    kind: str = "supervisor"


@dataclass(frozen=True)
class SupervisorStatus:
    name: str
    parent: str | None
    depth: int
    status: str
    reason: str | None
    strategy: str
    intensity: int
    period: float
    on_limit: str
    max_consecutive_crashes: int
    backoff: dict[str, Any]
    children: list[ActorChild | SupervisorChild]
    actor_types: list[str]
    restarts: Restarts
    flagged: Flagged
    #: Actors of its types per status (the census), summed over the types.
    actors: dict[str, int]


@dataclass(frozen=True)
class TreeStatus:
    key_prefix: str
    tick_interval: float
    tick_running: bool
    now: float
    #: Depth first, as the tree names them.
    supervisors: list[SupervisorStatus]
    #: Actor types whose supervisor is not in this process's tree.
    unplaced_types: list[str]
    #: Oldest first; each an event record with its stream ``id`` and ``at`` (seconds).
    recent_events: list[dict[str, Any]]


@dataclass(frozen=True)
class _StatusReads:
    """The replies of ``tree_status``'s one pipelined round trip, in the order it asked."""

    #: Per supervisor: its hash, its restart history, its flagged count and a sample of them.
    supervisors: list[list[Any]]
    #: Each static actor child's ``status`` field (None until it has received a message).
    child_statuses: list[Any]
    #: The newest events, newest first.
    events: list[Any]
    tick_lock: int
    #: Redis' clock when it read them (seconds).
    now: float


def tree_status(sup: Supervision) -> TreeStatus:
    """What ``supervise status`` shows, without scanning any key space."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..census import read_census
    from ..specs import is_actor_child

    tree = sup.tree
    names = tree.names()
    types_by_sup, unplaced = _actor_types_by_supervisor(sup)
    actor_children = [c for n in names for c in tree.static_children(n) if is_actor_child(c)]
    reads = _read_status(sup, names, actor_children)
    now = reads.now
    child_status = _child_statuses(actor_children, reads.child_statuses)
    census = read_census(sup.runtime, [t for types in types_by_sup.values() for t in types])
    supervisors = [
        _supervisor_status(
            sup, name, reply, child_status, types_by_sup.get(name, []), now, census
        )
        for name, reply in zip(names, reads.supervisors, strict=True)
    ]
    return TreeStatus(
        key_prefix=sup.keyspace.prefix,
        tick_interval=sup.settings.tick_interval,
        tick_running=bool(reads.tick_lock),
        now=now,
        supervisors=supervisors,
        unplaced_types=unplaced,
        recent_events=_events(reads.events),
    )


def _actor_types_by_supervisor(sup: Supervision) -> tuple[dict[str, list[str]], list[str]]:
    """Registered actor types (sorted) under the supervisor each names, and those whose
    supervisor is not in the tree."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..registry import all_types

    types_by_sup: dict[str, list[str]] = {}
    unplaced: list[str] = []
    for type_name, atype in sorted(all_types().items()):
        if atype.supervisor in sup.tree:
            types_by_sup.setdefault(atype.supervisor, []).append(type_name)
        else:
            unplaced.append(type_name)
    return types_by_sup, unplaced


def _read_status(
    sup: Supervision, names: tuple[str, ...], actor_children: list[str]
) -> _StatusReads:
    """Everything ``status`` shows, in one pipelined round trip (no scan)."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..specs import split_actor_child

    ks = sup.keyspace
    pipe = sup.client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(ks.supervisor(name))
        pipe.zrange(ks.supervisor_history(name), 0, -1, withscores=True)
        pipe.scard(ks.supervisor_members(name))
        pipe.srandmember(ks.supervisor_members(name), FLAGGED_SHOWN)
    for child in actor_children:
        pipe.hget(ks.actor(*split_actor_child(child)).meta, "status")
    pipe.xrevrange(ks.events, count=EVENTS_SHOWN)
    pipe.exists(ks.tick_lock)
    results = pipe.execute()
    return _StatusReads(
        supervisors=[results[4 * i : 4 * i + 4] for i in range(len(names))],
        child_statuses=results[4 * len(names) : -2],
        events=results[-2],
        tick_lock=results[-1],
        # Redis' clock (the restart history is stamped on it), estimated without a round
        # trip: a cluster's pipeline cannot hold TIME.
        now=sup.runtime.clock(),
    )


def _child_statuses(actor_children: list[str], raws: list[Any]) -> dict[str, str]:
    # Imported here, not at the top: every `celery` command imports this package.
    from ..ref import public_status

    return {
        child: public_status(text(raw)) if raw is not None else "absent"
        for child, raw in zip(actor_children, raws, strict=True)
    }


def _supervisor_status(
    sup: Supervision,
    name: str,
    reply: list[Any],
    child_status: dict[str, str],
    actor_types: list[str],
    now: float,
    census: dict[str, TypeCensus],
) -> SupervisorStatus:
    """One supervisor's node, from its share of ``_read_status``'s replies and the census
    of its actor types."""
    raw_hash, history, flagged_count, flagged = reply
    actors: dict[str, int] = dict.fromkeys(PUBLIC_STATUSES, 0)
    for type_name in actor_types:
        for status, n in census[type_name].actors.items():
            actors[status] = actors.get(status, 0) + n
    quarantined = actors.get("quarantined", 0)
    fields = {text(k): text(v) for k, v in raw_hash.items()}
    spec = sup.tree.spec(name)
    return SupervisorStatus(
        name=name,
        parent=spec.parent,
        depth=_depth(sup, spec.parent),
        status=fields.get("status", "running"),
        reason=fields.get("reason"),
        strategy=spec.strategy,
        intensity=spec.intensity,
        period=spec.period,
        on_limit=spec.on_limit,
        max_consecutive_crashes=spec.max_consecutive_crashes,
        backoff=vars(spec.backoff),
        children=_children(sup, name, child_status),
        actor_types=actor_types,
        restarts=_restarts(history, now - spec.period),
        flagged=Flagged(
            count=int(flagged_count) + quarantined,
            shown=sorted(text(m) for m in flagged) + _quarantined_sample(sup, actor_types),
            quarantined=quarantined,
        ),
        actors=actors,
    )


def _quarantined_sample(sup: Supervision, actor_types: list[str]) -> list[str]:
    """Up to ``FLAGGED_SHOWN`` quarantined actors ("T:K") of these types (the census)."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..census import actors_by_status

    shown: list[str] = []
    for type_name in actor_types:
        if len(shown) >= FLAGGED_SHOWN:
            break
        keys, _ = actors_by_status(
            sup.runtime, type_name, "quarantined", limit=FLAGGED_SHOWN - len(shown)
        )
        shown += [f"{type_name}:{key}" for key in keys]
    return shown


def _depth(sup: Supervision, parent: str | None) -> int:
    """How many supervisors are above one whose parent is ``parent``."""
    depth = 0
    while parent is not None:
        depth, parent = depth + 1, sup.tree.parent(parent)
    return depth


def _children(
    sup: Supervision, name: str, child_status: dict[str, str]
) -> list[ActorChild | SupervisorChild]:
    # Imported here, not at the top: every `celery` command imports this package.
    from ..specs import is_actor_child

    return [
        ActorChild(child=c, status=child_status[c])
        if is_actor_child(c)
        else SupervisorChild(child=c)
        for c in sup.tree.static_children(name)
    ]


def _restarts(history: list[tuple[bytes, float]], period_start: float) -> Restarts:
    """A supervisor's restart history (oldest first, as stored) as ``status`` shows it."""
    restarts: list[Restart] = []
    in_period = 0
    for member, score in history:
        exit_id, child = Keyspace.parse_restart_member(text(member))
        restarts.append(Restart(exit_id=exit_id, child=child, at=float(score)))
        in_period += float(score) >= period_start
    return Restarts(
        in_period=in_period, kept=len(restarts), recent=restarts[-RESTARTS_SHOWN:][::-1]
    )


def _events(entries: list[Any]) -> list[dict[str, Any]]:
    """The events stream's entries (newest first), oldest first, each with ``id`` and ``at``."""
    events = []
    for entry_id, entry in reversed(entries):
        record = json.loads(text(entry.get(b"event", b"{}")))
        stream_id = text(entry_id)
        events.append({"id": stream_id, "at": int(stream_id.split("-")[0]) / 1000, **record})
    return events


# -- one actor ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActorReport:
    type: str
    key: str
    #: False until the actor has received a message; the other fields are then defaults.
    exists: bool
    #: The supervisor that owns it (a dynamic child's, where the tree places it).
    supervisor: str
    status: str
    halt_reason: str | None
    version: int
    pending: int
    consecutive_crashes: int
    last_crash: dict[str, Any] | None
    state: Any
    dead_letters: int
    #: Committed effects that can never be delivered (set aside by the relay, with why).
    undeliverable: int
    #: The newest ``UNDELIVERABLE_SHOWN`` of them, oldest first.
    undeliverable_effects: list[UndeliverableEffect]
    #: Newest first.
    history: list[HistoryEntry]
    #: Pending durable timers, earliest first (as ``Snapshot.timers``).
    timers: list[Timer]


def actor_report(sup: Supervision, ref: ActorRef, history: int) -> ActorReport:
    """What ``supervise actor TYPE KEY`` shows, with the newest ``history`` versions."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..registry import registered

    atype = registered(ref.type_name)
    exists = bool(sup.client.exists(ref.keys.meta))
    snap = ref.snapshot()
    versions = ref.history()[:history] if history else []
    undeliverable = ref.undeliverable_effects()
    supervisor = atype.supervisor
    if supervisor in sup.tree:  # else the type names a supervisor this process never declared
        supervisor = sup.tree.supervisor_of_actor(f"{ref.type_name}:{ref.key}", supervisor)
    return ActorReport(
        type=ref.type_name,
        key=ref.key,
        exists=exists,
        supervisor=supervisor,
        status=snap.status,
        halt_reason=snap.halt_reason,
        version=snap.version,
        pending=snap.pending,
        consecutive_crashes=snap.consecutive_crashes,
        last_crash=snap.last_crash,
        state=snap.state,
        dead_letters=int(sup.client.llen(ref.keys.dead)),
        undeliverable=len(undeliverable),
        undeliverable_effects=undeliverable[-UNDELIVERABLE_SHOWN:],
        history=versions,
        timers=list(snap.timers),
    )


# -- dead letters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeadLetterHolder:
    type: str
    key: str
    dead_letters: int
    #: At ``supervise_max_dead_letters``: its next dead letter quarantines it instead.
    full: bool = False
    #: Quarantined for that (``dead_letters_full``), its message kept at the mailbox head.
    quarantined: bool = False


def dead_letter_holders(sup: Supervision) -> list[DeadLetterHolder]:
    """Every actor holding dead letters, most recent first (from the index, no scan)."""
    from ..delivery import Delivery  # runtime: not loaded by every `celery` command

    cap = sup.settings.max_dead_letters
    return [
        DeadLetterHolder(
            type=t, key=k, dead_letters=n, full=n >= cap, quarantined=n >= cap and _full(sup, t, k)
        )
        for t, k, n in Delivery(sup.runtime).actors_with_dead_letters()
    ]


def _full(sup: Supervision, type_name: str, key: str) -> bool:
    """Whether the actor is quarantined because its dead letters are full."""
    status, reason = sup.client.hmget(
        sup.keyspace.actor(type_name, key).meta, "status", "halt_reason"
    )
    return (status, reason) == (b"quarantined", b"dead_letters_full")


@dataclass(frozen=True)
class ActorDeadLetters:
    #: ``TYPE:KEY``
    actor: str
    dead_letters: list[DeadLetter]


def actor_dead_letters(ref: ActorRef) -> ActorDeadLetters:
    """One actor's dead letters, with their crash records (tracebacks included)."""
    return ActorDeadLetters(actor=f"{ref.type_name}:{ref.key}", dead_letters=ref.dead_letters())
