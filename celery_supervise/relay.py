"""Relaying committed effects from an actor's outbox to the slots they are for.

The committing worker relays at once; the tick relays whatever is still there a lease later
(the worker died, or a receiver did not answer). Relaying twice is harmless: every effect is
idempotent at its receiver. An effect that can never be delivered is set aside, with its
error, in the actor's ``undelivered`` list; it no longer holds back the others. An entry
that stored its step's trace context is delivered inside it (``tracing.continued``), so the
message it becomes, and the Celery task it publishes, continue that trace.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from .codec import decode
from .delivery import Delivery
from .errors import (
    ActorNotRegistered,
    CorruptActorData,
    InvalidMessage,
    MailboxFull,
    RedisUnavailable,
)
from .isolation import Isolation
from .keyspace import ActorKeys
from .runtime import Runtime, redis_errors
from .tracing import Carrier, carried, continued

__all__ = ["PERMANENT", "Relayed", "relay_outbox"]

log = logging.getLogger("celery_supervise")


#: Failures no retry cures: the entry is set aside (``undelivered``) with its error. Any other
#: failure (Redis or the broker not answering, an unexpected error) leaves it for a retry.
#: ``MailboxFull`` is among them: a retry might fit once the receiver drains, but an outbox
#: that waits on it holds back the sender's later effects to that actor for as long as it
#: stays full (a quarantined one: indefinitely), so it is dead-lettered on the sender's side,
#: reason ``mailbox_full``, as the bounded mailbox promises (docs/long-lived.md).
PERMANENT = (CorruptActorData, ActorNotRegistered, InvalidMessage, MailboxFull)


@dataclass
class Relayed:
    """What one relay pass did with the outbox it read."""

    relayed: int = 0  #: applied (or found already applied) and removed
    waiting: int = 0  #: left for a retry: it failed, or an earlier one to its receiver did
    undeliverable: int = 0  #: set aside with their error, removed


def relay_outbox(rt: Runtime, type_name: str, key: str) -> Relayed:
    """Apply the committed effects waiting in the actor's outbox, oldest first.

    Order matters per receiver only (its watermark on the sender's ordinal drops a send
    older than one it already took), so a failure holds back only the later entries of its
    own *lane* -- the same receiving actor; each reply and each subtask is a lane of its own
    -- and the pass goes on with the others. An entry that can never be delivered (its
    receiver's keys hold garbage, it is not an entry we wrote) is moved to ``undelivered``
    with its error; the later entries of its lane are then tried each on its own. Safe
    beside another relay of the same outbox (the committing worker and the tick): every
    effect is idempotent at its receiver, and each relayer keeps the lane order itself."""
    keys = rt.keyspace.actor(type_name, key)
    done = Relayed()
    held: set[tuple[str, ...]] = set()
    with redis_errors(_where(keys)):
        entries = rt.client.lrange(keys.outbox, 0, -1)
    for raw in entries:
        outcome = _relay_one(rt, keys, raw, held)
        setattr(done, outcome, getattr(done, outcome) + 1)
    return done


def _where(keys: ActorKeys) -> str:
    return f"outbox of {keys.type_name}:{keys.key}"


def _relay_one(
    rt: Runtime, keys: ActorKeys, raw: bytes | str, held: set[tuple[str, ...]]
) -> str:
    """Relay one entry unless its lane is ``held``; which ``Relayed`` count it adds to."""
    item: Any = None
    try:
        item = decode(raw, what=_where(keys))
        lane, target = _lane(item)
    except InvalidMessage as exc:
        kind = item.get("kind") if isinstance(item, dict) else None
        kind = kind if isinstance(kind, str) else None
        return "undeliverable" if _set_aside(rt, keys, raw, kind, None, exc) else "waiting"
    if lane in held:
        return "waiting"
    try:
        with redis_errors(f"relay to {target} from {keys.type_name}:{keys.key}"):
            _apply(rt, keys, item)
    except PERMANENT as exc:
        if _set_aside(rt, keys, raw, item["kind"], target, exc):
            return "undeliverable"
        held.add(lane)  # could not be set aside: it stays, and so does the rest of its lane
        return "waiting"
    except Exception as exc:
        held.add(lane)
        log.warning("celery_supervise relay_failed actor=%s key=%s target=%s error=%r "
                    "(kept in the outbox; retried by the tick)", keys.type_name, keys.key,
                    target, exc, exc_info=not isinstance(exc, RedisUnavailable))  # fmt: skip
        return "waiting"
    with redis_errors(_where(keys)):
        # redis-py types list values as str; the bytes read back are what LREM compares
        rt.client.lrem(keys.outbox, 1, raw)  # type: ignore[arg-type]
    return "relayed"


#: The fields (and their types) each kind of outbox entry must have.
_FIELDS: dict[str, dict[str, type]] = {
    "send": {"type": str, "key": str, "id": str, "from": str, "ord": int, "message": object},
    "reply": {"id": str, "value": object},
    "dead": {"header": dict, "crashes": list},
    "isolate": {"id": str, "spec": dict},
}
_ISOLATE_SPEC: dict[str, type] = {"tag": str, "task": str, "args": list, "kwargs": dict}


def _check_fields(what: str, item: dict[str, Any], fields: dict[str, type]) -> None:
    for name, want in fields.items():
        if name not in item:
            raise InvalidMessage(f"{what} is missing {name!r}")
        value = item[name]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise InvalidMessage(f"{what} has a {type(value).__name__} {name!r}")


def _lane(item: Any) -> tuple[tuple[str, ...], str]:
    """(ordering lane, target as shown) of a decoded outbox entry; ``InvalidMessage`` if
    it is not an entry ``encode_effects`` or ``crash.lua`` writes."""
    if not isinstance(item, dict):
        raise InvalidMessage(f"outbox entry is not a JSON object: {type(item).__name__}")
    kind = item.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise InvalidMessage(f"outbox entry of unknown kind {kind!r}")
    _check_fields(f"outbox entry of kind {kind!r}", item, _FIELDS[kind])
    if kind == "send":
        return ("send", item["type"], item["key"]), f"{item['type']}:{item['key']}"
    if kind == "isolate":
        _check_fields("outbox entry of kind 'isolate': its spec", item["spec"], _ISOLATE_SPEC)
        return ("isolate", item["id"]), f"isolate:{item['id']}"
    if kind == "dead" and not item["header"].get("reply"):
        return ("dead", str(item.get("seq"))), "no asker"  # a notice nobody waits for
    reply_id = item["id"] if kind == "reply" else item["header"].get("id")
    if not isinstance(reply_id, str):
        raise InvalidMessage(f"outbox entry of kind {kind!r} names no message id")
    return ("reply", reply_id), f"reply:{reply_id}"


def _set_aside(
    rt: Runtime,
    keys: ActorKeys,
    raw: bytes | str,
    kind: str | None,
    target: str | None,
    exc: BaseException,
) -> bool:
    """Move one undeliverable entry out of the outbox, with its error. False if it could
    not be moved (our own keys unwritable: it stays for a retry) -- or was already gone,
    moved or relayed by another relayer (then nothing waits on it)."""
    error = f"{type(exc).__name__}: {exc}"
    effect = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    record = {"kind": kind, "target": target, "error": error, "effect": effect}
    try:
        with redis_errors(_where(keys)):
            moved = int(rt.scripts.undeliver(keys=[keys.outbox, keys.undelivered],
                                             args=[raw, json.dumps(record)]))  # fmt: skip
    except (CorruptActorData, RedisUnavailable) as err:
        log.warning("celery_supervise undeliverable_kept actor=%s key=%s target=%s error=%r "
                    "(could not set it aside: %s)", keys.type_name, keys.key, target, exc,
                    err)  # fmt: skip
        return False
    if moved:
        rt.events.record("effect_undeliverable", actor=keys.type_name, key=keys.key,
                         effect=kind, target=target, error=error)  # fmt: skip
    return bool(moved)


def _apply(rt: Runtime, keys: ActorKeys, item: dict[str, Any]) -> None:
    """Apply one outbox entry of the actor ``keys`` (replies are kept on its own slot)."""
    trace = carried(item.get("trace"))
    with continued(trace):
        _apply_kind(rt, keys, item, trace)


def _apply_kind(
    rt: Runtime, keys: ActorKeys, item: dict[str, Any], trace: Carrier | None
) -> None:
    kind = item["kind"]
    if kind == "send":
        body = json.dumps(item["message"], separators=(",", ":"), ensure_ascii=False).encode()
        Delivery(rt).send(
            item["type"],
            item["key"],
            [(item["id"], body, False)],
            origin=(item["from"], item["ord"]),
            trace=trace,
        )
    elif kind == "reply":
        Delivery(rt).push_reply(keys, item["id"], json.dumps({"value": item["value"]}).encode())
    elif kind == "dead":
        header = item["header"]
        if header.get("reply"):
            notice = json.dumps({"dead": item["crashes"]}).encode()
            Delivery(rt).push_reply(keys, header["id"], notice)
    elif kind == "isolate":
        Isolation(rt).start(item)
    else:  # _lane refuses any other kind
        raise InvalidMessage(f"unknown outbox effect kind {kind!r}")
