"""The statuses an actor can be in, defined once for every layer to import.

A module with no imports of the package, so the pure core, the shell and the client can all
use it. ``crashed`` is internal: the actor waits in it until its supervisor has decided about
the crash, and ``Snapshot.status`` shows it as ``backoff`` (SPEC 2 lists the public five).
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["PUBLIC_STATUSES", "RUNNING_STATUSES", "STATUSES", "ActorStatus", "PublicStatus"]

ActorStatus = Literal["idle", "active", "backoff", "crashed", "stopped", "quarantined"]
PublicStatus = Literal["idle", "active", "backoff", "stopped", "quarantined"]

#: Every stored status.
STATUSES: tuple[ActorStatus, ...] = get_args(ActorStatus)
#: What ``Snapshot.status`` may report.
PUBLIC_STATUSES: tuple[PublicStatus, ...] = get_args(PublicStatus)
#: Statuses from which a group restart takes a sibling down (to restart or stop it).
RUNNING_STATUSES: tuple[ActorStatus, ...] = ("idle", "active", "backoff")
