"""``supervise migrate TYPE``: upgrade every stored state of a type to its ``state_version``
ahead of the workers (which upgrade a state when they load it anyway, SPEC 7).

The type's actors come from its index (``Keyspace.type_index``, a hint: each member is
checked against its own meta, and a member whose meta is gone is pruned), never from a scan.
Each state is upgraded by this process's ``migrate`` functions and checked like a step's
new state; ``dry_run`` stops there and writes nothing. Otherwise the upgrade is written in
place as a new version by ``upgrade.lua``, fenced: only while no lease is held and the
actor's token, version and state version are still those read, so a step in flight is
never overwritten and workers keep running. A run is resumable: an actor already at the
version is skipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .codec import text
from .errors import StateRejected
from .keyspace import parse_actor_member
from .registry import ActorSpec, registered
from .runner import check_state
from .runtime import Runtime
from .store import ActorStore

__all__ = ["Migrated", "MigrationResult", "migrate_actor", "migrate_type", "stored_keys"]

#: Times one actor is read and written again when a worker held its lease or stepped it in
#: between (each worker commit writes the upgrade itself, so a retry usually finds it done).
ATTEMPTS = 5
#: Pause between those attempts (seconds).
RETRY_PAUSE = 0.2

Migrated = Literal["upgraded", "would_upgrade", "current", "no_state", "failed", "busy", "gone"]


@dataclass(frozen=True)
class MigrationResult:
    """One actor's migration."""

    type: str
    key: str
    #: upgraded (written) | would_upgrade (dry run) | current (already at the version or
    #: newer: skipped) | no_state (never committed: starts at the current version) |
    #: failed (an upgrade raised or its result cannot be committed) | busy (a lease was
    #: held on every attempt: run again) | gone (its keys disappeared)
    outcome: Migrated
    #: The state version as stored, and the type's.
    from_version: int = 0
    to_version: int = 0
    #: The new version written (``upgraded``).
    version: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome not in ("failed", "busy")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def stored_keys(rt: Runtime, type_name: str) -> list[str]:
    """Keys of the type's stored actors, oldest first, from its index; members whose meta is
    gone are pruned (unless noted again meanwhile: ``zrem_unchanged.lua``)."""
    index = rt.keyspace.type_index(type_name)
    found: list[Any] = list(rt.client.zrange(index, 0, -1, withscores=True))
    rows = [(text(m), float(score)) for m, score in found]
    pipe = rt.client.pipeline(transaction=False)
    for member, _ in rows:
        pipe.hget(rt.keyspace.actor(*parse_actor_member(member)).meta, "type")
    owners = pipe.execute() if rows else []
    keys, stale = [], []
    for (member, score), owner in zip(rows, owners, strict=True):
        type_part, key = parse_actor_member(member)
        if owner is not None and text(owner) == type_name == type_part:
            keys.append(key)
        else:
            stale += [member, repr(score)]
    if stale:
        rt.scripts.zrem_unchanged(keys=[index], args=stale)
    return keys


def migrate_type(rt: Runtime, type_name: str, *, dry_run: bool) -> list[MigrationResult]:
    """Every stored state of the type, upgraded (or, with ``dry_run``, only tried)."""
    atype = registered(type_name)  # ActorNotRegistered names the known types
    return [migrate_actor(rt, atype, key, dry_run=dry_run) for key in stored_keys(rt, type_name)]


def migrate_actor(
    rt: Runtime, atype: ActorSpec[Any], key: str, *, dry_run: bool
) -> MigrationResult:
    """One actor: read, upgrade, and (unless ``dry_run``) write, retried while a worker
    holds the lease or stepped it in between."""
    result = MigrationResult(atype.name, key, "busy", to_version=atype.state_version)
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_PAUSE)
        result = _attempt(rt, atype, key, dry_run)
        if result.outcome != "busy":
            return result
    return result


def _attempt(rt: Runtime, atype: ActorSpec[Any], key: str, dry_run: bool) -> MigrationResult:
    keys = rt.keyspace.actor(atype.name, key)
    fields = ("type", "state", "state_version", "token", "version")
    read: list[Any] = list(rt.client.hmget(keys.meta, fields))
    owner, raw, stored, token, version = read
    found = MigrationResult(atype.name, key, "current", to_version=atype.state_version)
    if owner is None:
        return _with(found, "gone")
    if raw is None:
        return _with(found, "no_state")
    try:
        from_version = int(stored or 1)
        found = _with(found, "current", from_version=from_version)
        if from_version >= atype.state_version:
            return found
        new = check_state(rt, atype, atype.upgrade(json.loads(raw), from_version))
    except (StateRejected, ValueError, UnicodeDecodeError) as exc:
        return _with(found, "failed", error=f"{type(exc).__name__}: {exc}")
    if dry_run:
        return _with(found, "would_upgrade")
    fence = "|".join(text(v) if v is not None else "" for v in (token, version, stored))
    outcome, new_version = ActorStore(rt).upgrade(
        keys, fence=fence, state=new, state_version=atype.state_version, history=atype.history
    )
    if outcome == "upgraded":
        return _with(found, "upgraded", version=new_version)
    if outcome == "missing":
        return _with(found, "gone")
    return _with(found, "busy")  # busy or changed: read again


def _with(result: MigrationResult, outcome: Migrated, **changes: Any) -> MigrationResult:
    return MigrationResult(**{**asdict(result), "outcome": outcome, **changes})
