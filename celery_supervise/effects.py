"""Committed effects: how a step's effects are written with its commit.

Effects that stay on the actor's own slot (messages to itself, timers, stop) are applied by
the commit script itself. Effects that reach other slots (sends to other actors, replies,
isolated subtasks) go to the actor's outbox in the same commit; ``relay.py`` then applies
them. Each carries an id derived from (actor, version, position), so relaying twice is
harmless: every receiver deduplicates on it. Each carries the step's trace context too, when
the step has one (``tracing.py``): the entry it becomes, or its outbox item, stores it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .context import Effects
from .isolation import Isolation
from .keyspace import actor_member
from .mailbox import header_json
from .store import EncodedEffects
from .timers import named_spec
from .tracing import Carrier

__all__ = ["MAX_SENDS_PER_STEP", "effect_id", "encode_effects"]


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
    seal: Callable[[bytes], bytes] = bytes,
    trace: Carrier | None = None,
) -> EncodedEffects:
    """A step's effects as the commit takes them: the outbox (other slots), messages to
    itself, timers and pending subtask records. ``version`` is the one the step commits as;
    ``reply_to`` the message id an ``ask`` waits on (None: a plain send). ``seal`` turns
    each message and reply into its stored form (``supervise_codec``). ``trace``: the
    step's span context, stored with every send, timer and subtask (None: nothing stored)."""
    traced = {"trace": trace} if trace else {}
    selfs, outbox = _sends(effects, type_name, key, version, seal, trace)
    if effects.replies and reply_to is not None:
        reply = seal(effects.replies[0])
        outbox.append(_with_raw({"kind": "reply", "id": reply_to}, "value", reply))
    isolates: list[tuple[str, bytes]] = []
    for i, spec in enumerate(effects.isolates):
        iso_id = effect_id(type_name, key, version, "i", i)
        item = {"kind": "isolate", "id": iso_id, "type": type_name, "key": key, "spec": spec,
                **traced}
        outbox.append(json.dumps(item).encode())
        isolates.append((iso_id, Isolation.pending_record(spec, now_ms, trace)))
    timers = []
    for i, (delay, body) in enumerate(effects.timers):
        header = header_json(effect_id(type_name, key, version, "t", i), timer=True, trace=trace)
        timers.append((int(delay * 1000), header.encode() + b"\n" + seal(body)))
    named = _named_timers(effects, type_name, key, version, seal, trace)
    return EncodedEffects(outbox, selfs, timers, isolates, effects.stop, named)


def _named_timers(
    effects: Effects,
    type_name: str,
    key: str,
    version: int,
    seal: Callable[[bytes], bytes],
    trace: Carrier | None,
) -> list[tuple[str, int | None, bytes]]:
    """Named timer sets and cancels, in the commit's terms. A named timer's id is the
    effect id of kind ``n``; each firing of a periodic one adds ``/<due ms>``."""
    out: list[tuple[str, int | None, bytes]] = []
    for i, (name, timer) in enumerate(effects.named_timers.items()):
        if timer is None:
            out.append((name, None, b""))
            continue
        every_ms = max(1, round(timer.every * 1000)) if timer.every is not None else 0
        mid = effect_id(type_name, key, version, "n", i)
        spec = named_spec(mid, name, every_ms, seal(timer.body), trace=trace)
        out.append((name, int(timer.delay * 1000), spec))
    return out


def _sends(
    effects: Effects,
    type_name: str,
    key: str,
    version: int,
    seal: Callable[[bytes], bytes],
    trace: Carrier | None,
) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """(messages to itself, outbox entries of messages to other actors). Each relayed send
    carries the sender's increasing ordinal: the receiver's watermark deduplicates on it."""
    selfs: list[tuple[str, bytes]] = []
    outbox: list[bytes] = []
    sender = actor_member(type_name, key)
    traced = {"trace": trace} if trace else {}
    for i, (to_type, to_key, plain) in enumerate(effects.sends):
        mid, body = effect_id(type_name, key, version, "s", i), seal(plain)
        if (to_type, to_key) == (type_name, key):
            selfs.append((header_json(mid, trace=trace), body))
            continue
        ordinal = version * MAX_SENDS_PER_STEP + i
        head = {"kind": "send", "type": to_type, "key": to_key, "id": mid, "from": sender}
        outbox.append(_with_raw({**head, **traced, "ord": ordinal}, "message", body))
    return selfs, outbox


def _with_raw(head: dict[str, Any], field: str, raw: bytes) -> bytes:
    """``head`` as JSON with ``field`` set to already-encoded JSON ``raw`` (not re-encoded)."""
    return json.dumps(head)[:-1].encode() + b',"' + field.encode() + b'":' + raw + b"}"
