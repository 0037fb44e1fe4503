"""Committed effects: how they are written with the step and relayed after it.

Effects that stay on the actor's own slot (messages to itself, timers, stop) are applied by
the commit script itself. Effects that reach other slots (sends to other actors, replies,
isolated subtasks, dead-letter notices to an asker) go to the actor's outbox in the same
commit, and are then relayed -- by the committing worker at once, or by the tick if that
worker died. Relaying twice is harmless: each effect carries an id derived from
(actor, version, position) and every receiver deduplicates on it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .codec import decode
from .context import Effects
from .delivery import Delivery
from .isolation import Isolation
from .keyspace import ActorKeys, actor_member
from .mailbox import header_json
from .runtime import Runtime
from .store import EncodedEffects

__all__ = ["MAX_SENDS_PER_STEP", "encode_effects", "relay_outbox"]

log = logging.getLogger("celery_supervise")


#: Most messages one step may send to other actors (the ordinal reserves this many per step).
MAX_SENDS_PER_STEP = 1024


def effect_id(type_name: str, key: str, version: int, kind: str, index: int) -> str:
    """Deterministic id of one effect of the step that commits as ``version``."""
    return f"{type_name}:{key}@{version}.{kind}{index}"


def encode_effects(
    effects: Effects,
    *,
    type_name: str,
    key: str,
    version: int,
    reply_to: str | None,
    now_ms: int,
) -> EncodedEffects:
    """A step's effects as the commit takes them: the outbox (other slots), messages to
    itself, timers and pending subtask records. ``version`` is the one the step commits as;
    ``reply_to`` the message id an ``ask`` waits on (None: a plain send)."""
    selfs, outbox = _sends(effects, type_name, key, version)
    if effects.replies and reply_to is not None:
        outbox.append(_with_raw({"kind": "reply", "id": reply_to}, "value", effects.replies[0]))
    isolates: list[tuple[str, bytes]] = []
    for i, spec in enumerate(effects.isolates):
        iso_id = effect_id(type_name, key, version, "i", i)
        item = {"kind": "isolate", "id": iso_id, "type": type_name, "key": key, "spec": spec}
        outbox.append(json.dumps(item).encode())
        isolates.append((iso_id, Isolation.pending_record(spec, now_ms)))
    timers = []
    for i, (delay, body) in enumerate(effects.timers):
        header = header_json(effect_id(type_name, key, version, "t", i), timer=True)
        timers.append((int(delay * 1000), header.encode() + b"\n" + body))
    return EncodedEffects(outbox, selfs, timers, isolates, effects.stop)


def _sends(
    effects: Effects, type_name: str, key: str, version: int
) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """(messages to itself, outbox entries of messages to other actors). Each relayed send
    carries the sender's increasing ordinal: the receiver's watermark deduplicates on it."""
    selfs: list[tuple[str, bytes]] = []
    outbox: list[bytes] = []
    sender = actor_member(type_name, key)
    for i, (to_type, to_key, body) in enumerate(effects.sends):
        mid = effect_id(type_name, key, version, "s", i)
        if (to_type, to_key) == (type_name, key):
            selfs.append((header_json(mid), body))
            continue
        ordinal = version * MAX_SENDS_PER_STEP + i
        head = {"kind": "send", "type": to_type, "key": to_key, "id": mid, "from": sender}
        outbox.append(_with_raw({**head, "ord": ordinal}, "message", body))
    return selfs, outbox


def _with_raw(head: dict[str, Any], field: str, raw: bytes) -> bytes:
    """``head`` as JSON with ``field`` set to already-encoded JSON ``raw`` (not re-encoded)."""
    return json.dumps(head)[:-1].encode() + b',"' + field.encode() + b'":' + raw + b"}"


def relay_outbox(rt: Runtime, type_name: str, key: str) -> int:
    """Apply every committed effect waiting in the actor's outbox; return how many."""
    keys = rt.keyspace.actor(type_name, key)
    relayed = 0
    for raw in rt.client.lrange(keys.outbox, 0, -1):
        try:
            item = decode(raw, what=f"outbox of {type_name}:{key}")
            _apply(rt, keys, item)
        except Exception:
            # Stop here: later entries wait, so one sender's messages to one receiver
            # keep their order (the receiver's watermark depends on it). The tick retries.
            log.exception("celery_supervise relay_failed actor=%s key=%s", type_name, key)
            break
        # redis-py types list values as str; the bytes read back are what LREM compares
        rt.client.lrem(keys.outbox, 1, raw)  # type: ignore[arg-type]
        relayed += 1
    return relayed


def _apply(rt: Runtime, keys: ActorKeys, item: dict[str, Any]) -> None:
    """Apply one outbox entry of the actor ``keys`` (replies are kept on its own slot)."""
    kind = item["kind"]
    if kind == "send":
        body = json.dumps(item["message"], separators=(",", ":"), ensure_ascii=False).encode()
        Delivery(rt).send(
            item["type"],
            item["key"],
            [(item["id"], body, False)],
            origin=(item["from"], item["ord"]),
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
    else:
        raise ValueError(f"unknown outbox effect kind {kind!r}")
