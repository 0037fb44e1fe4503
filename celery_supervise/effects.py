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
from typing import TYPE_CHECKING, Any

from .codec import decode
from .keyspace import actor_member
from .mailbox import Entry, header_json
from .store import run_pipeline

if TYPE_CHECKING:
    from .context import Context
    from .runner import _Run
    from .supervision import Supervision

__all__ = ["encode_effects", "relay_outbox"]

log = logging.getLogger("celery_supervise")


#: Most messages one step may send to other actors (the ordinal reserves this many per step).
MAX_SENDS_PER_STEP = 1024


def effect_id(run: _Run, kind: str, index: int) -> str:
    """Deterministic id of one effect of the step about to commit as ``version + 1``."""
    return f"{run.atype.name}:{run.key}@{run.version + 1}.{kind}{index}"


Encoded = tuple[
    list[bytes], list[tuple[str, bytes]], list[tuple[int, bytes]], list[tuple[str, bytes]]
]


def encode_effects(run: _Run, entry: Entry, ctx: Context) -> Encoded:
    """Split a step's effects into (outbox entries, messages to self, timers, pending
    subtask records)."""
    outbox: list[bytes] = []
    isolates: list[tuple[str, bytes]] = []
    selfs: list[tuple[str, bytes]] = []
    timers: list[tuple[int, bytes]] = []
    effects = ctx.effects
    for i, (type_name, key, body) in enumerate(effects.sends):
        mid = effect_id(run, "s", i)
        if (type_name, key) == (run.atype.name, run.key):
            selfs.append((header_json(mid), body))
        else:
            head = json.dumps(
                {
                    "kind": "send",
                    "type": type_name,
                    "key": key,
                    "id": mid,
                    "from": actor_member(run.atype.name, run.key),
                    "ord": (run.version + 1) * MAX_SENDS_PER_STEP + i,
                }
            )
            outbox.append(head[:-1].encode() + b',"message":' + body + b"}")
    if effects.replies and entry.reply_wanted:
        head = json.dumps({"kind": "reply", "id": entry.message_id})
        outbox.append(head[:-1].encode() + b',"value":' + effects.replies[0] + b"}")
    for i, spec in enumerate(effects.isolates):
        iso_id = effect_id(run, "i", i)
        item = {"kind": "isolate", "id": iso_id, "type": run.atype.name, "key": run.key}
        outbox.append(json.dumps({**item, "spec": spec}).encode())
        isolates.append((iso_id, run.sup.isolation.pending_record(spec)))
    for i, (delay, body) in enumerate(effects.timers):
        mid = effect_id(run, "t", i)
        timers.append((int(delay * 1000), header_json(mid, timer=True).encode() + b"\n" + body))
    return outbox, selfs, timers, isolates


def relay_outbox(sup: Supervision, type_name: str, key: str) -> int:
    """Apply every committed effect waiting in the actor's outbox; return how many."""
    keys = sup.keyspace.actor(type_name, key)
    relayed = 0
    for raw in sup.client.lrange(keys.outbox, 0, -1):
        try:
            item = decode(raw, what=f"outbox of {type_name}:{key}")
            _apply(sup, item)
        except Exception:
            # Stop here: later entries wait, so one sender's messages to one receiver
            # keep their order (the receiver's watermark depends on it). The tick retries.
            log.exception("celery_supervise relay_failed actor=%s key=%s", type_name, key)
            break
        # redis-py types list values as str; the bytes read back are what LREM compares
        sup.client.lrem(keys.outbox, 1, raw)  # type: ignore[arg-type]
        relayed += 1
    return relayed


def _apply(sup: Supervision, item: dict[str, Any]) -> None:
    kind = item["kind"]
    if kind == "send":
        body = json.dumps(item["message"], separators=(",", ":"), ensure_ascii=False).encode()
        sup.store.send(
            item["type"],
            item["key"],
            [(item["id"], body, False)],
            origin=(item["from"], item["ord"]),
        )
    elif kind == "reply":
        payload = json.dumps({"value": item["value"]}).encode()
        run_pipeline(sup, lambda pipe: sup.store.push_reply(pipe, item["id"], payload))
    elif kind == "dead":
        header = item["header"]
        if header.get("reply"):
            payload = json.dumps({"dead": item["crashes"]}).encode()
            run_pipeline(sup, lambda pipe: sup.store.push_reply(pipe, header["id"], payload))
    elif kind == "isolate":
        sup.isolation.start(item)
    else:
        raise ValueError(f"unknown outbox effect kind {kind!r}")
