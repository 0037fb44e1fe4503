"""What the operator's web pages show and do, with no web framework in it.

The Django admin section and the Flask blueprint both call these functions and render their
results with ``render``; each adds only its own login, permission and CSRF checks. Nothing
here scans Redis: the overview reads what ``supervise status`` reads plus one ``ZCARD`` per
actor type; a list of actors is one page of an index (the type index, or the per-status
index for a status) and one pipelined read of those actors' meta; one actor is what
``supervise actor`` shows plus its dead letters and crash records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cli.queries import ActorReport, TreeStatus, actor_report, tree_status
from ..codec import decode, text
from ..errors import ActorNotRegistered, InvalidKey, SuperviseError
from ..keyspace import parse_actor_member
from ..ref import DeadLetter, public_status
from ..registry import all_types, registered
from ..status import PUBLIC_STATUSES
from ..status import actors_by_status as status_page

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..supervision import Supervision

__all__ = [
    "ACTIONS",
    "ActorList",
    "ActorRow",
    "ActorView",
    "NotFound",
    "Outcome",
    "Overview",
    "TypeCounts",
    "actor_list",
    "actor_view",
    "overview",
    "perform",
]

#: Actors on one page of a list, unless the request asks for another number.
PAGE_SIZE = 50
#: The most a request may ask for.
MAX_PAGE_SIZE = 500
#: Committed versions shown on an actor's page (rollback offers each).
HISTORY_SHOWN = 20
#: Crash records shown on an actor's page, newest first.
CRASHES_SHOWN = 20

#: The operator actions, by the name a form posts, with their button labels.
ACTIONS: dict[str, str] = {
    "resume": "Resume",
    "restart": "Restart",
    "restart_reset": "Restart with reset",
    "requeue": "Requeue",
    "rollback": "Roll back",
}


class NotFound(SuperviseError):
    """A page names an actor type, actor or status that is not there (the message says which)."""


# -- the overview ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeCounts:
    name: str
    #: The supervisor the type names (its dynamic children's).
    supervisor: str
    #: Actors of the type ever created and not deleted (the type index: a hint, see keyspace).
    actors: int
    #: Actors of the type holding dead letters (the dead-letter index).
    dead_letter_holders: int


@dataclass(frozen=True)
class Overview:
    tree: TreeStatus
    #: Every registered actor type, by name.
    types: list[TypeCounts]


def overview(sup: Supervision) -> Overview:
    """The supervision tree with its counts, and each actor type's."""
    from ..delivery import Delivery  # the runtime, as the CLI's queries load it

    known_types(sup)
    tree = tree_status(sup)
    holders: dict[str, int] = {}
    for type_name, _, _ in Delivery(sup.runtime).actors_with_dead_letters():
        holders[type_name] = holders.get(type_name, 0) + 1
    names = sorted(all_types())
    pipe = sup.client.pipeline(transaction=False)
    for name in names:
        pipe.zcard(sup.keyspace.type_index(name))
    counts = pipe.execute()
    types = [
        TypeCounts(
            name=name,
            supervisor=registered(name).supervisor,
            actors=int(count),
            dead_letter_holders=holders.get(name, 0),
        )
        for name, count in zip(names, counts, strict=True)
    ]
    return Overview(tree=tree, types=types)


# -- a list of actors ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActorRow:
    key: str
    #: As ``Snapshot.status`` says it, or "gone" for an index entry whose actor was deleted.
    status: str
    version: int
    pending: int
    dead_letters: int


@dataclass(frozen=True)
class ActorList:
    type: str
    #: None: every actor of the type.
    status: str | None
    cursor: int
    limit: int
    rows: list[ActorRow]
    #: Where the next page starts; 0 when this is the last page.
    next_cursor: int


def actor_list(
    sup: Supervision,
    type_name: str,
    status: str | None = None,
    *,
    cursor: int = 0,
    limit: int = PAGE_SIZE,
) -> ActorList:
    """One page of the actors of ``type_name`` (with ``status``: only those in it)."""
    _known_type(sup, type_name)
    if status is not None and status not in PUBLIC_STATUSES:
        raise NotFound(f"status {status!r} is not one of {', '.join(PUBLIC_STATUSES)}")
    if not isinstance(cursor, int) or cursor < 0:
        raise NotFound(f"cursor must be a whole number >= 0, got {cursor!r}")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise NotFound(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got {limit!r}")
    if status is None:
        keys, next_cursor = _keys_of_type(sup, type_name, cursor, limit)
    else:
        keys, next_cursor = actors_by_status(sup.runtime, type_name, status, cursor, limit)
    return ActorList(
        type=type_name,
        status=status,
        cursor=cursor,
        limit=limit,
        rows=_rows(sup, type_name, keys),
        next_cursor=next_cursor,
    )


def _keys_of_type(
    sup: Supervision, type_name: str, cursor: int, limit: int
) -> tuple[list[str], int]:
    """A page of the type index (oldest first): its keys and the next page's cursor."""
    members = sup.client.zrange(sup.keyspace.type_index(type_name), cursor, cursor + limit)
    keys = [parse_actor_member(text(m))[1] for m in members]
    more = len(keys) > limit
    return keys[:limit], (cursor + limit if more else 0)


def actors_by_status(
    rt: Runtime, type_name: str, status: str, cursor: int, limit: int
) -> tuple[list[str], int]:
    """A page of the actors of ``type_name`` in ``status``: their keys and the cursor of the
    next page (0: no more), from the census' per-status index
    (``celery_supervise.status.actors_by_status``); never a scan of the type's actors."""
    try:
        keys, next_cursor = status_page(rt, type_name, status, cursor=cursor, limit=limit)
    except ValueError as exc:  # a cursor that listing never returned, say: a bad request
        raise NotFound(str(exc)) from None
    return [str(k) for k in keys], int(next_cursor)


def _rows(sup: Supervision, type_name: str, keys: list[str]) -> list[ActorRow]:
    """Each listed actor's status and counts, in one pipelined round trip."""
    pipe = sup.client.pipeline(transaction=False)
    for key in keys:
        ak = sup.keyspace.actor(type_name, key)
        pipe.hmget(ak.meta, "status", "version")
        pipe.llen(ak.mailbox)
        pipe.llen(ak.dead)
    replies = pipe.execute()
    rows = []
    for i, key in enumerate(keys):
        (raw_status, raw_version), pending, dead = replies[3 * i : 3 * i + 3]
        gone = raw_status is None and raw_version is None
        rows.append(
            ActorRow(
                key=key,
                status="gone" if gone else public_status(text(raw_status) if raw_status else None),
                version=int(raw_version or 0),
                pending=int(pending),
                dead_letters=int(dead),
            )
        )
    return rows


# -- one actor -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActorView:
    #: What ``supervise actor TYPE KEY`` shows (state, status, history, timers, ...).
    report: ActorReport
    #: Oldest first, each with its crash records.
    dead_letters: list[DeadLetter]
    #: The newest ``CRASHES_SHOWN`` crash records, newest first.
    crashes: list[dict[str, Any]]


def actor_view(sup: Supervision, type_name: str, key: str) -> ActorView:
    _known_type(sup, type_name)
    ref = _ref(sup, type_name, key)
    report = actor_report(sup, ref, HISTORY_SHOWN)
    raws = sup.client.lrange(ref.keys.crashes, 0, CRASHES_SHOWN - 1)
    where = f"crash records of {type_name}:{key}"
    crashes = [_crash(decode(raw, what=where)) for raw in raws]
    return ActorView(report=report, dead_letters=ref.dead_letters(), crashes=crashes)


def _crash(record: Any) -> dict[str, Any]:
    return record if isinstance(record, dict) else {"record": record}


# -- the operator actions --------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What an action did (``ok``) or why it was refused, in one sentence for the operator."""

    ok: bool
    message: str


def perform(
    sup: Supervision, type_name: str, key: str, action: str, form: Mapping[str, str]
) -> Outcome:
    """Run one operator action on ``type_name:key``; ``form`` holds its parameter
    (``message_id`` to requeue, ``version`` to roll back). Whatever an operator can get
    wrong (a halted-only action on a running actor, an unknown dead letter or version, a
    state that fails validate) is refused with the reason, never raised."""
    target = f"{type_name}:{key}"
    if action not in ACTIONS:
        return Outcome(False, f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    try:
        _known_type(sup, type_name)
        ref = _ref(sup, type_name, key)
        if not sup.client.exists(ref.keys.meta):
            return Outcome(False, f"actor {target} does not exist (it exists once it has "
                                  "received a message)")  # fmt: skip
        if action == "resume":
            if ref.resume() == "skip":
                status = ref.snapshot().status
                return Outcome(False, f"{target} is {status}, not stopped or quarantined: "
                                      "nothing to resume")  # fmt: skip
            return Outcome(True, f"resumed {target} from its last good state{_now(ref)}")
        if action in ("restart", "restart_reset"):
            reset = action == "restart_reset"
            recovery = "reset" if reset else registered(type_name).recovery
            if ref.restart(recovery="reset" if reset else None) == "skip":
                status = ref.snapshot().status
                return Outcome(False, f"{target} is {status}: a {recovery} restart applies only "
                                      "to a halted actor (stopped, quarantined, backoff); "
                                      "restart with reset restarts any actor")  # fmt: skip
            return Outcome(True, f"restarted {target} ({recovery}){_now(ref)}")
        if action == "requeue":
            message_id = form.get("message_id", "")
            if not message_id:
                return Outcome(False, "requeue needs the dead letter's message_id")
            ref.requeue_dead_letter(message_id)
            return Outcome(True, f"requeued dead letter {message_id!r} at the end of "
                                 f"{target}'s mailbox{_now(ref)}")  # fmt: skip
        version_text = form.get("version", "")
        try:
            version = int(version_text)
        except ValueError:
            return Outcome(False, f"rollback needs a version number, got {version_text!r}")
        new = ref.rollback(version)
        return Outcome(True, f"rolled {target} back to the state of version {version}, "
                             f"committed as version {new}")  # fmt: skip
    except SuperviseError as exc:
        return Outcome(False, f"{ACTIONS[action].lower()} {target} refused: {_why(exc)}")


def _now(ref: Any) -> str:
    snap = ref.snapshot()
    return f": now {snap.status}, version {snap.version}, {snap.pending} queued"


def _why(exc: SuperviseError) -> str:
    # The KeyError subclasses (UnknownVersion, UnknownDeadLetter) would print their message
    # quoted, as KeyError does.
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


# -- shared ----------------------------------------------------------------------------------------
_imported: set[int] = set()


def known_types(sup: Supervision) -> None:
    """Import the app's actor modules once (as a ``celery`` command does): a web process
    knows an actor type only once the module defining it is imported."""
    if id(sup) not in _imported:
        sup.app.loader.import_default_modules()
        _imported.add(id(sup))


def _known_type(sup: Supervision, type_name: str) -> None:
    known_types(sup)
    try:
        registered(type_name)
    except ActorNotRegistered as exc:
        raise NotFound(str(exc)) from None


def _ref(sup: Supervision, type_name: str, key: str) -> Any:
    try:
        return sup.ref(type_name, key)
    except InvalidKey as exc:
        raise NotFound(f"no actor {type_name}:{key!r}: {exc}") from None
