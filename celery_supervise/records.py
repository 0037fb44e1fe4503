"""What the scripts return and what they store, as typed records: a claim, a commit's or a
crash's outcome, a crash record, a step's encoded effects, the tick's look at an actor."""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .codec import encode, text
from .errors import CorruptActorData
from .status import STATUSES, ActorStatus

__all__ = [
    "Claim",
    "CommitOutcome",
    "CrashOutcome",
    "CrashRecord",
    "EncodedEffects",
    "Forfeit",
    "Look",
    "Release",
    "text_dict",
]

Release = Literal["more", "idle", "stopped", "stale"]
#: What ``forfeit.lua`` did with a dead pool process's lease.
Forfeit = Literal["ended", "expired", "not_held"]


def text_dict(raw: dict[Any, Any]) -> dict[str, str]:
    try:
        return {text(k): text(v) for k, v in raw.items()}
    except UnicodeDecodeError as exc:
        bad = next(k for k, v in raw.items() if not _utf8(k) or not _utf8(v))
        raise CorruptActorData(
            f"meta field {bad!r} holds bytes that are not UTF-8 text ({exc})"
        ) from None


def _utf8(value: Any) -> bool:
    try:
        if isinstance(value, bytes):
            value.decode()
        return True
    except UnicodeDecodeError:
        return False


@dataclass(frozen=True)
class CrashRecord:
    """What is kept about one crash (SPEC 4): in the actor's crash list, in the attempts of
    the message it is tied to (``seq``; 0 for none), and with that message if it dies."""

    actor: str
    key: str
    version: int
    message_id: str | None
    seq: int
    attempt: int
    reason: str
    type: str
    message: str
    traceback: str | None
    worker: str | None
    time: float

    @classmethod
    def of(
        cls,
        reason: str,
        exc: BaseException | None,
        *,
        actor: str,
        key: str,
        version: int,
        message_id: str | None,
        seq: int,
        attempt: int,
        worker: str | None,
        message: str = "",
    ) -> CrashRecord:
        return cls(
            actor=actor,
            key=key,
            version=version,
            message_id=message_id,
            seq=seq,
            attempt=attempt,
            reason=reason,
            type=type(exc).__name__ if exc else "WorkerLost" if reason == "worker_lost" else reason,
            message=str(exc) if exc else message or reason,
            traceback="".join(traceback.format_exception(exc)) if exc else None,
            worker=worker,
            time=time.time(),
        )

    def encode(self) -> bytes:
        return encode(asdict(self), what="crash record")


@dataclass(frozen=True)
class Claim:
    """What ``claim.lua`` granted: the lease (token), the committed state and a batch."""

    outcome: Literal["ok", "empty", "busy", "expired", "halted", "too_new"]
    token: int = 0
    version: int = 0
    state: bytes | None = None
    attempt_seq: int = 0
    attempts: int = 0
    entries: tuple[bytes, ...] = ()
    #: The nearest supervisor above the actor that is stopped or quarantined, if any.
    halted_by: str | None = None
    #: Set when the meta hash holds fields this library did not write (the lease is held).
    problem: str | None = None
    #: The state version the stored ``state`` was written at (1 when never recorded).
    state_version: int = 1


@dataclass(frozen=True)
class CommitOutcome:
    ok: bool
    version: int = 0
    #: Why the commit was refused: stale | expired | moved.
    refused: str | None = None


@dataclass(frozen=True)
class RestartOutcome:
    #: woke (a run was published) | idle | skip
    outcome: str
    #: The actor's version right after the restart (a reset's own); 0 when skipped.
    version: int = 0


@dataclass(frozen=True)
class CrashOutcome:
    crashed: bool
    crash_seq: int = 0
    attempt: int = 0
    dead_lettered: bool = False
    consecutive: int = 0
    #: Due to be dead-lettered, but the actor holds ``supervise_max_dead_letters``: kept.
    dead_letters_full: bool = False


@dataclass(frozen=True)
class EncodedEffects:
    """A step's effects as the commit script takes them (see ``effects.encode_effects``)."""

    outbox: Sequence[bytes] = ()
    selfs: Sequence[tuple[str, bytes]] = ()  #: (header json, body) of messages to itself
    timers: Sequence[tuple[int, bytes]] = ()  #: (delay ms, entry) of durable timers
    isolates: Sequence[tuple[str, bytes]] = ()  #: (isolate id, pending record)
    stop: bool = False
    #: (name, delay ms, spec) of a named timer set; (name, None, b"") of one cancelled
    named_timers: Sequence[tuple[str, int | None, bytes]] = ()


@dataclass(frozen=True)
class Look:
    """One actor's keys as one round trip saw them (the tick's view)."""

    meta: dict[str, str]
    pending: int
    outbox: int
    isolates: bool
    next_timer: float | None
    dead: int

    @property
    def status(self) -> ActorStatus:
        status = self.meta.get("status", "idle")
        if status not in STATUSES:  # the scripts refuse to act on such a meta hash
            raise CorruptActorData(f"{self.meta.get('type')}:{self.meta.get('key')}: status "
                                   f"{status!r} is not one of {', '.join(STATUSES)}")  # fmt: skip
        return status

    @property
    def leased(self) -> bool:
        return bool(self.meta.get("lease_until"))

    def field_int(self, name: str, default: int = 0) -> int:
        return int(self.meta.get(name) or default)
