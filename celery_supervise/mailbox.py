"""Mailbox entries: how a message is laid out in an actor's Redis list.

An entry is ``b"<seq> <sent_ms> <header-json>\\n<body-json>"``. The sequence number is
assigned by the ``send`` script under the actor's own slot, so it orders the mailbox; the
commit records the last sequence consumed, which is how a redelivered task or a second
worker recognises work already applied without remembering message ids. The header holds
the message id, whether an ``ask`` waits for a reply and, when the sender had a span active,
its W3C trace context under ``"trace"`` (``tracing.py``; absent otherwise).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .codec import decode
from .codecs import Payloads
from .errors import CorruptActorData
from .tracing import Carrier, carried

__all__ = ["NO_SEQ", "Entry", "header_json", "unparsed_entry"]


#: The seq a crash names for a garbage mailbox head with no sequence number of its own
#: (``crash.lua`` then ties the attempts to the head's bytes).
NO_SEQ = -1


def header_json(
    message_id: str, *, reply: bool = False, trace: Carrier | None = None, **extra: Any
) -> str:
    header: dict[str, Any] = {"id": message_id}
    if reply:
        header["reply"] = True
    header.update(extra)
    if trace:  # last: a named timer's spec keeps everything after the id (timers.py)
        header["trace"] = trace
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

    @property
    def trace(self) -> Carrier | None:
        """The sender's trace context (None: none was active, or an older entry)."""
        return carried(self.header.get("trace"))

    def message(self, payloads: Payloads | None = None) -> Any:
        """The body decoded, opened first by ``payloads`` (``CodecError`` if it cannot)."""
        what = f"message {self.message_id!r}"
        body = self.body if payloads is None else payloads.open(self.body, what=what)
        return decode(body, what=what)

    @classmethod
    def parse(cls, raw: bytes | str, *, where: str) -> Entry:
        """Parse a raw entry; raise ``CorruptActorData`` naming ``where`` if it is not one."""
        if isinstance(raw, str):
            raw = raw.encode()
        try:
            first, _, body = raw.partition(b"\n")
            seq, sent, header = first.split(b" ", 2)
            if not _valid_seq(seq):
                raise ValueError(f"no sequence number: {seq[:20]!r}")
            parsed = json.loads(header)
            if not isinstance(parsed, dict):
                raise ValueError("header is not an object")
            return cls(int(seq), int(sent), parsed, body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptActorData(
                f"{where}: mailbox entry is not in celery_supervise's format ({exc}): {raw[:80]!r}"
            ) from None


def unparsed_entry(raw: bytes | str) -> Entry:
    """A stand-in for a garbage mailbox entry, so its crash is tied to it: its seq if it
    starts with one, else ``NO_SEQ``."""
    if isinstance(raw, str):
        raw = raw.encode()
    found = re.match(rb"(\d+) ", raw)
    seq = int(found.group(1)) if found and _valid_seq(found.group(1)) else NO_SEQ
    label = f"<corrupt entry {seq}>" if seq != NO_SEQ else "<corrupt entry>"
    return Entry(seq, 0, {"id": label}, b"null")


def _valid_seq(digits: bytes) -> bool:
    """As the scripts read a seq (crash.lua): 1 to 18 ASCII digits, not zero."""
    return re.fullmatch(rb"\d{1,18}", digits) is not None and int(digits) > 0
