"""Mailbox entries: how a message is laid out in an actor's Redis list.

An entry is ``b"<seq> <sent_ms> <header-json>\\n<body-json>"``. The sequence number is
assigned by the ``send`` script under the actor's own slot, so it orders the mailbox; the
commit records the last sequence consumed, which is how a redelivered task or a second
worker recognises work already applied without remembering message ids. The header holds
the message id and whether an ``ask`` waits for a reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .codec import decode
from .errors import CorruptActorData

__all__ = ["Entry", "header_json"]


def header_json(message_id: str, *, reply: bool = False, **extra: Any) -> str:
    header: dict[str, Any] = {"id": message_id}
    if reply:
        header["reply"] = True
    header.update(extra)
    return json.dumps(header, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Entry:
    seq: int
    sent_ms: int
    header: dict[str, Any]
    body: bytes

    @property
    def message_id(self) -> str:
        return str(self.header.get("id", ""))

    @property
    def reply_wanted(self) -> bool:
        return bool(self.header.get("reply"))

    def message(self) -> Any:
        return decode(self.body, what=f"message {self.message_id!r}")

    @classmethod
    def parse(cls, raw: bytes | str, *, where: str) -> Entry:
        """Parse a raw entry; raise ``CorruptActorData`` naming ``where`` if it is not one."""
        if isinstance(raw, str):
            raw = raw.encode()
        try:
            first, _, body = raw.partition(b"\n")
            seq, sent, header = first.split(b" ", 2)
            parsed = json.loads(header)
            if not isinstance(parsed, dict):
                raise ValueError("header is not an object")
            return cls(int(seq), int(sent), parsed, body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptActorData(
                f"{where}: mailbox entry is not in celery_supervise's format ({exc}): {raw[:80]!r}"
            ) from None
