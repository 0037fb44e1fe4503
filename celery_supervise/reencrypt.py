"""Key rotation: every stored payload of every actor of a type sealed again under the
newest key of ``supervise_codec`` (``celery -A proj supervise reencrypt TYPE``).

The actors come from the type's index (``Keyspace.type_index``), never a scan. Each actor
is one read and one fenced write of ``reencrypt.lua``: the write happens only if nothing
changed since the read (else it reads again), so it runs beside live workers. Payloads
stored as plain JSON (before the codec was set) are sealed too: that is how an existing
deployment is encrypted. Ask-reply lists (kept five minutes), undeliverable effects and
crash records are left as they are (docs/long-lived.md says what is sealed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .codec import text
from .codecs import Payloads
from .errors import CodecError, ConfigurationError, CorruptActorData
from .keyspace import ActorKeys, parse_actor_member
from .runtime import Runtime, patiently

__all__ = ["ATTEMPTS", "Reencrypted", "reencrypt_actor", "reencrypt_type"]

#: How a sealed payload starts: one this codec cannot open is a wrong key, not garbage.
_SEALED_PREFIX = b'"sealed:'
#: Reads of one busy actor before it is reported as failed (each write is fenced).
ATTEMPTS = 20


@dataclass
class Reencrypted:
    """What ``reencrypt_type`` did: actor keys rotated, gone (in the index, no longer
    stored) and failed (key: the error; the actor is unchanged)."""

    type: str
    rotated: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def reencrypt_type(rt: Runtime, type_name: str) -> Reencrypted:
    """Rotate every actor of ``type_name`` listed in its type index."""
    if rt.payloads.plain:
        raise ConfigurationError(
            'supervise_codec is "json": there is no key to re-encrypt with (set supervise_codec)'
        )
    report = Reencrypted(type_name)
    members = patiently(lambda: rt.client.zrange(rt.keyspace.type_index(type_name), 0, -1),
                        where=f"type index of {type_name}")  # fmt: skip
    for member in members:
        owner, key = parse_actor_member(text(member))
        if owner != type_name:
            continue
        try:
            done = reencrypt_actor(rt, rt.keyspace.actor(type_name, key))
        except (CodecError, CorruptActorData) as exc:
            report.failed[key] = str(exc)
            continue
        (report.rotated if done else report.gone).append(key)
    return report


def reencrypt_actor(rt: Runtime, keys: ActorKeys) -> bool:
    """Seal one actor's payloads again; False if the actor does not exist. Raises
    ``CodecError`` if a payload cannot be opened (nothing is then written)."""
    script_keys = [keys.meta, keys.history, keys.mailbox, keys.dead, keys.timers, keys.outbox,
                   keys.timer_specs]  # fmt: skip
    where = f"actor {keys.type_name}:{keys.key}"
    for _ in range(ATTEMPTS):
        image = patiently(lambda: rt.scripts.reencrypt(keys=script_keys, args=["read"]),
                          where=where)  # fmt: skip
        if text(image[0]) == "missing":
            return False
        written = _write(rt, script_keys, ["write", *_resealed(rt.payloads, image[1:], where)],
                         where)  # fmt: skip
        if text(written[0]) == "written":
            return True
    raise CorruptActorData(f"{where}: changed under every one of {ATTEMPTS} re-encryptions")


def _write(rt: Runtime, script_keys: list[str], args: list[Any], where: str) -> Any:
    return patiently(lambda: rt.scripts.reencrypt(keys=script_keys, args=args), where=where)


def _resealed(payloads: Payloads, image: list[Any], where: str) -> list[Any]:
    """The write's arguments from the read's image (see ``reencrypt.lua``)."""
    digest, state, *counts = image[:8]
    counts = [int(n) for n in counts]
    items = iter(image[8:])
    hist = [_history(payloads, next(items), where) for _ in range(counts[0])]
    mbox = [_entry(payloads, next(items), where, b" ") for _ in range(counts[1])]
    dead = [_letter(payloads, next(items), where) for _ in range(counts[2])]
    timers: list[Any] = []
    for _ in range(counts[3]):
        timers += [_entry(payloads, next(items), where, b""), next(items)]
    outbox = [_outbox(payloads, next(items), where) for _ in range(counts[4])]
    specs: list[Any] = []
    for _ in range(counts[5]):
        specs += [next(items), _spec(payloads, next(items), where)]
    sealed_state = payloads.reseal(bytes(state), what=f"{where}: state") if state else ""
    return [digest, sealed_state, *counts, *hist, *mbox, *dead, *timers, *outbox, *specs]


def _spec(payloads: Payloads, raw: bytes, where: str) -> bytes:
    """A named timer's spec (``timers.named_spec``: three lines, then the message) with
    its message sealed again."""
    parts = bytes(raw).split(b"\n", 3)
    if len(parts) != 4:
        return bytes(raw)  # not ours: left as it is (snapshot() names it as corrupt)
    return b"\n".join(parts[:3]) + b"\n" + payloads.reseal(parts[3], what=f"{where}: a timer")


def _record(raw: bytes, what: str) -> dict[str, Any]:
    try:
        item = json.loads(raw)
    except ValueError as exc:
        raise CorruptActorData(f"{what} is not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise CorruptActorData(f"{what} is not a JSON object")
    return item


def _dumps(item: dict[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()


def _history(payloads: Payloads, raw: bytes, where: str) -> bytes:
    item = _record(raw, f"{where}: a history entry")
    item["state"] = payloads.reseal_value(item.get("state"), what=f"{where}: history")
    return _dumps(item)


def _entry(payloads: Payloads, raw: bytes, where: str, first: bytes) -> bytes:
    """A mailbox entry (``first`` = b" ": it starts with its seq) or a timer entry: the
    body after the first newline sealed again; a garbage entry stays as it is (the runner
    dead-letters it as it would have)."""
    head, nl, body = bytes(raw).partition(b"\n")
    if not nl or (first and first not in head):
        return bytes(raw)
    try:
        return head + nl + payloads.reseal(body, what=f"{where}: a message")
    except CodecError:
        if _SEALED_PREFIX in body[:10]:
            raise  # a sealed body this codec cannot open: a wrong key, write nothing
        return bytes(raw)  # garbage that was never a payload


def _letter(payloads: Payloads, raw: bytes, where: str) -> bytes:
    item = _record(raw, f"{where}: a dead letter")
    header = item.get("header")
    if isinstance(header, dict) and not header.get("corrupt"):
        item["message"] = payloads.reseal_value(item.get("message"), what=f"{where}: dead letter")
    return _dumps(item)


def _outbox(payloads: Payloads, raw: bytes, where: str) -> bytes:
    item = _record(raw, f"{where}: an outbox entry")
    field_ = {"send": "message", "reply": "value"}.get(str(item.get("kind")))
    if field_ is None or field_ not in item:
        return bytes(raw)
    item[field_] = payloads.reseal_value(item[field_], what=f"{where}: outbox")
    return _dumps(item)

