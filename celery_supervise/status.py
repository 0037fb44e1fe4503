"""The statuses an actor can be in, defined once for every layer to import.

A module with no module-level imports of the package, so the pure core, the shell and the
client can all use it. ``actors_by_status`` (the web pages and ``supervise actors`` call it)
lives in ``census.py``, where the layers put what reads the census; it is offered here too,
next to the statuses it lists, and imports the census only when called.

``crashed`` is internal: the actor waits in it until its supervisor has decided about
the crash, and ``Snapshot.status`` shows it as ``backoff`` (SPEC 2 lists the public five).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = [
    "PUBLIC_STATUSES",
    "RUNNING_STATUSES",
    "STATUSES",
    "ActorStatus",
    "PublicStatus",
    "actors_by_status",
]

ActorStatus = Literal["idle", "active", "backoff", "crashed", "stopped", "quarantined"]
PublicStatus = Literal["idle", "active", "backoff", "stopped", "quarantined"]

#: Every stored status.
STATUSES: tuple[ActorStatus, ...] = get_args(ActorStatus)
#: What ``Snapshot.status`` may report.
PUBLIC_STATUSES: tuple[PublicStatus, ...] = get_args(PublicStatus)
#: Statuses from which a group restart takes a sibling down (to restart or stop it).
RUNNING_STATUSES: tuple[ActorStatus, ...] = ("idle", "active", "backoff")


def actors_by_status(
    runtime: Any, type_name: str, status: str, *, cursor: int = 0, limit: int = 50
) -> tuple[list[str], int]:
    """One page of the keys of ``type_name``'s actors in ``status`` (a public status):
    (keys, next cursor; 0 at the end). ``runtime`` is a ``Runtime`` (``Supervision(app)
    .runtime``). Reads only the census' status indexes, never every actor; see
    ``census.actors_by_status``. Raises ``InvalidArgument`` for an unknown status, a bad
    cursor or limit."""
    from .census import actors_by_status as page  # the census sits above: deferred

    return page(runtime, type_name, status, cursor=cursor, limit=limit)
