"""Durable timers: how they are stored beside an actor, and ``Timer``, how they are read.

Every timer is a member of the actor's ``timers`` sorted set, scored by its due time (ms,
Redis' clock). An unnamed timer's member is the mailbox entry it becomes (header and body),
as it always was. A named timer's member is ``"@" + name`` (an entry starts with ``{``, so
the two never collide) and its entry waits in the ``timer_specs`` hash under its name: a
later ``send_after`` of that name replaces it (ZADD moves the score, HSET the spec) and
``cancel_timer`` removes it, by name alone, in the commit script.

A spec is ``"<every_ms>\\n<id json>\\n<rest of the header>\\n<body>"`` (``every_ms`` 0: fires
once). The id stands apart so that ``fire_timers.lua`` gives each firing of a periodic timer
its own id, ``<id>/<scheduled due ms>``, by plain string work (JSON-escaped text never holds
a raw newline, so the split is unambiguous).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .codec import text
from .errors import CorruptActorData
from .mailbox import header_json
from .tracing import Carrier

__all__ = ["MAX_TIMER_NAME", "NAMED", "Timer", "named_spec", "parse_timers"]

#: First character of a named timer's member in the ``timers`` sorted set.
NAMED = "@"
#: Longest timer name, as for actor keys.
MAX_TIMER_NAME = 200

_SPEC = re.compile(rb'(\d{1,15})\n("[^\n]*")\n([^\n]*)\n(.*)', re.DOTALL)


@dataclass(frozen=True)
class Timer:
    """A pending durable timer, as ``Snapshot.timers`` and ``supervise actor`` list it."""

    #: None for a timer set without a name (it cannot be replaced or cancelled).
    name: str | None
    #: When it next fires (seconds since the epoch, on Redis' clock).
    due_at: float
    #: Its period in seconds; None for a timer that fires once.
    every: float | None
    #: The message it delivers.
    message: Any


def named_spec(
    message_id: str, name: str, every_ms: int, body: bytes, *, trace: Carrier | None = None
) -> bytes:
    """The ``timer_specs`` value of a named timer (``every_ms`` 0: it fires once); ``trace``:
    the setting step's context, which every firing carries (``tracing.py``)."""
    header = header_json(message_id, timer=True, name=name, trace=trace)
    id_json = json.dumps(message_id, ensure_ascii=False)
    rest = header[len('{"id":' + id_json) :]
    return f"{every_ms}\n{id_json}\n{rest}\n".encode() + body


def parse_timers(
    members: Sequence[tuple[bytes, float]],
    specs: dict[bytes, bytes],
    *,
    where: str,
    opened: Callable[[bytes], bytes] = bytes,
) -> tuple[Timer, ...]:
    """The timers of one actor, due order, from its sorted set and its specs hash;
    ``opened`` turns a stored message body into its JSON (``Payloads.open``)."""
    out = []
    for member, score in members:
        try:
            out.append(_parse(member, score, specs, opened))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptActorData(
                f"{where}: timer {member[:60]!r} is unreadable ({exc})"
            ) from None
    return tuple(out)


def _parse(
    member: bytes, score: float, specs: dict[bytes, bytes], opened: Callable[[bytes], bytes]
) -> Timer:
    if not member.startswith(NAMED.encode()):
        _, _, body = member.partition(b"\n")
        return Timer(None, score / 1000, None, json.loads(opened(body)))
    spec = specs.get(member[1:])
    found = _SPEC.fullmatch(spec) if spec is not None else None
    if found is None:
        raise ValueError("its spec is missing or not in celery_supervise's format")
    every_ms = int(found.group(1))
    every = every_ms / 1000 if every_ms else None
    return Timer(text(member[1:]), score / 1000, every, json.loads(opened(found.group(4))))
