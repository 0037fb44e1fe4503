"""The client side: ``ActorRef`` and ``Snapshot``, usable from any process."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .codec import decode, encode
from .context import in_handler
from .delivery import Delivery, Outgoing
from .errors import (
    AskNotAllowed,
    CorruptActorData,
    InvalidMessage,
    MessageTooLarge,
    UnknownDeadLetter,
    UnknownVersion,
)
from .mailbox import Entry
from .operations import delete_actor, restart_actor, rollback_actor, stop_actor
from .registry import registered, validate_key
from .replay import Released, ReplayResult, release, replay_actor
from .runtime import Runtime, redis_errors
from .status import PUBLIC_STATUSES, PublicStatus
from .store import ActorStore
from .timers import Timer

__all__ = [
    "ActorRef",
    "DeadLetter",
    "HistoryEntry",
    "Snapshot",
    "Timer",
    "UndeliverableEffect",
    "public_status",
]

#: Longest caller-given message id accepted.
MAX_MESSAGE_ID_LENGTH = 200


def public_status(raw: str | None) -> PublicStatus:
    """The stored status as SPEC 2 names it ('crashed' is waiting for its supervisor)."""
    if raw is None or raw == "crashed":
        return "idle" if raw is None else "backoff"
    if raw not in PUBLIC_STATUSES:
        raise CorruptActorData(f"status {raw!r} is not one of {', '.join(PUBLIC_STATUSES)}")
    return raw


@dataclass(frozen=True)
class Snapshot:
    type: str
    key: str
    state: Any
    version: int
    status: str
    pending: int
    last_crash: dict[str, Any] | None
    consecutive_crashes: int = 0
    halt_reason: str | None = None
    #: Messages ever appended to the mailbox. Every one is committed, dead-lettered or still
    #: queued: ``received == version + dead_letters + pending``, as long as no ``reset``
    #: restart (a version without a message) or requeue (a second append) happened.
    received: int = 0
    dead_letters: int = 0
    #: Committed effects to other actors, replies or subtasks that can never be delivered
    #: (``undeliverable_effects()`` has them, with the error).
    undeliverable: int = 0
    #: Pending durable timers, earliest first (at most ``store.TIMERS_SHOWN``).
    timers: tuple[Timer, ...] = ()


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    at: float
    message_id: str | None
    state: Any
    reset: bool = False
    #: For a rollback: the version whose state this one restored.
    rollback_of: int | None = None
    #: The state version (``@actor(state_version=...)``) ``state`` was written at.
    state_version: int = 1


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    seq: int
    message: Any
    crashes: list[dict[str, Any]]
    sent_at: float
    dead_at: float


@dataclass(frozen=True)
class UndeliverableEffect:
    """A committed effect set aside because it can never be delivered."""

    #: "send", "reply", "dead" (a dead-letter notice to an asker), "isolate"; None if the
    #: outbox entry was not readable at all.
    kind: str | None
    #: "TYPE:KEY" of the receiving actor, "reply:<message id>", "isolate:<id>"; None if the
    #: entry was not readable.
    target: str | None
    #: "ExceptionType: message" of the failure that decided it.
    error: str
    #: When it was set aside (seconds).
    at: float
    #: The outbox entry: its JSON, or its text if it was not JSON.
    effect: Any


def _check_message_id(message_id: object) -> str:
    if not isinstance(message_id, str) or not message_id:
        raise InvalidMessage(f"message_id must be a non-empty str, got {message_id!r}")
    if len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise InvalidMessage(
            f"message_id is {len(message_id)} characters, over {MAX_MESSAGE_ID_LENGTH}"
        )
    try:
        message_id.encode()
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            f"message_id holds {message_id[exc.start : exc.end]!r} at {exc.start}, a lone "
            f"surrogate (not valid Unicode, cannot be stored)"
        ) from None
    return message_id


def _corrupt_entry(where: str, exc: BaseException, raw: Any) -> CorruptActorData:
    problem = str(exc) if isinstance(exc, InvalidMessage) else f"{type(exc).__name__}: {exc}"
    return CorruptActorData(
        f"{where}: entry is not in celery_supervise's format ({problem}): {bytes(raw)[:80]!r}"
    )


class ActorRef:
    """A handle to one actor ``(type, key)``. Cheap to create; holds no connection."""

    def __init__(self, runtime: Runtime, type_name: str, key: str) -> None:
        self.runtime = runtime
        self.type_name = type_name
        self.key = validate_key(key)
        self.keys = runtime.keyspace.actor(type_name, key)

    def __repr__(self) -> str:
        return f"ActorRef({self.type_name!r}, {self.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and (other.type_name, other.key) == (
            self.type_name,
            self.key,
        )

    def __hash__(self) -> int:
        return hash((self.type_name, self.key))

    # -- sending -------------------------------------------------------------------------
    def _encode(self, message: Any) -> bytes:
        body = encode(message, what="message")
        limit = self.runtime.settings.max_message_bytes
        if len(body) > limit:
            raise MessageTooLarge(len(body), limit)
        return self.runtime.payloads.seal(body)  # the limit is on the message, not its sealing

    def send(self, message: Any, *, message_id: str | None = None) -> str:
        """Append ``message`` to the mailbox; durable when this returns. Returns its id."""
        ids = self.send_many([message], message_ids=[message_id])
        return ids[0]

    def send_many(
        self, messages: Iterable[Any], *, message_ids: Sequence[str | None] | None = None
    ) -> list[str]:
        """Send a batch in one round trip, in order. ``message_ids`` may give ids."""
        messages = list(messages)
        given = list(message_ids) if message_ids is not None else [None] * len(messages)
        if len(given) != len(messages):
            raise InvalidMessage("send_many: message_ids must match messages in length")
        batch: list[Outgoing] = []
        for message, mid in zip(messages, given, strict=True):
            body = self._encode(message)
            if mid is None:
                batch.append((uuid.uuid4().hex, body, False))
            else:
                batch.append((_check_message_id(mid), body, True))
        if not batch:
            return []
        Delivery(self.runtime).send(self.type_name, self.key, batch)
        return [mid for mid, _, _ in batch]

    def ask(self, message: Any, *, timeout: float = 10.0, message_id: str | None = None) -> Any:
        """Send and wait for the handler's ``ctx.reply``; see SPEC 2."""
        if in_handler.get():
            raise AskNotAllowed(
                "ref.ask() inside an actor handler would block the actor; use ctx.send and "
                "have the other actor ctx.send back, or ctx.isolate"
            )
        return Delivery(self.runtime).ask(
            self.keys, self._encode(message), timeout=timeout, message_id=message_id
        )

    # -- inspecting ----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        store = ActorStore(self.runtime)
        meta, pending, dead, undelivered = store.read_meta(self.keys)
        where = f"actor {self.type_name}:{self.key}"
        state_raw = meta.get("state")
        state = None
        if state_raw is None:  # nothing committed yet: the state its first step will see
            state = registered(self.type_name).initial_state(self.key)
        else:
            try:
                state = json.loads(self.runtime.payloads.open(state_raw, what=where))
            except ValueError as exc:
                raise CorruptActorData(f"{where}: stored state is not valid JSON ({exc})") from None
        last = meta.get("last_crash")
        try:
            return Snapshot(
                type=self.type_name,
                key=self.key,
                state=state,
                version=int(meta.get("version", 0)),
                status=public_status(meta.get("status")),
                pending=pending,
                last_crash=json.loads(last) if last else None,
                consecutive_crashes=int(meta.get("crashes_in_row", 0)),
                halt_reason=meta.get("halt_reason"),
                received=int(meta.get("seq", 0)),
                dead_letters=dead,
                undeliverable=undelivered,
                timers=store.read_timers(self.keys),
            )
        except ValueError as exc:
            raise CorruptActorData(
                f"{where}: meta hash is not celery_supervise's ({exc})"
            ) from None

    def history(self) -> list[HistoryEntry]:
        """Committed versions kept for this actor, newest first."""
        out = []
        where = f"history of {self.type_name}:{self.key}"
        with redis_errors(where):
            raws = self.runtime.client.lrange(self.keys.history, 0, -1)
        for raw in raws:
            try:
                item = decode(raw, what=where)
                out.append(
                    HistoryEntry(
                        version=int(item["version"]),
                        at=item["at"] / 1000.0,
                        message_id=item.get("message_id"),
                        state=self.runtime.payloads.open_value(item.get("state"), what=where),
                        reset=bool(item.get("reset")),
                        rollback_of=item.get("rollback_of"),
                        state_version=int(item.get("state_version", 1)),
                    )
                )
            except (InvalidMessage, KeyError, TypeError, ValueError) as exc:
                raise _corrupt_entry(where, exc, raw) from None
        return out

    def dead_letters(self) -> list[DeadLetter]:
        """Messages that crashed ``max_attempts`` times, oldest first, with their crashes."""
        return [self._dead(raw) for raw in self._dead_raw()]

    def _dead_raw(self) -> list[Any]:
        with redis_errors(f"dead letters of {self.type_name}:{self.key}"):
            return list(self.runtime.client.lrange(self.keys.dead, 0, -1))

    def _dead(self, raw: Any) -> DeadLetter:
        where = f"dead letter of {self.type_name}:{self.key}"
        try:
            item = decode(raw, what=where)
            return DeadLetter(
                message_id=item["header"]["id"],
                seq=int(item["seq"]),
                message=self._letter_message(item, where),
                crashes=item["crashes"],
                sent_at=item["sent_at"] / 1000.0,
                dead_at=item["dead_at"] / 1000.0,
            )
        except (InvalidMessage, KeyError, TypeError, ValueError) as exc:
            raise _corrupt_entry(where, exc, raw) from None

    def _letter_message(self, item: dict[str, Any], where: str) -> Any:
        """A dead letter's message, opened; a garbage entry crash.lua kept as it found it
        (header "corrupt") was never sealed."""
        if item["header"].get("corrupt"):
            return item["message"]
        return self.runtime.payloads.open_value(item["message"], what=where)

    def undeliverable_effects(self) -> list[UndeliverableEffect]:
        """Committed effects that can never be delivered, oldest first, each with its error
        (docs/effects.md). Nothing retries them; they are kept until deleted."""
        where = f"undeliverable effects of {self.type_name}:{self.key}"
        with redis_errors(where):
            raws = self.runtime.client.lrange(self.keys.undelivered, 0, -1)
        out = []
        for raw in raws:
            try:
                item = decode(raw, what=where)
                text_effect = item["effect"]
                try:
                    effect = json.loads(text_effect)
                except ValueError:
                    effect = text_effect
                out.append(
                    UndeliverableEffect(
                        kind=item["kind"],
                        target=item["target"],
                        error=str(item["error"]),
                        at=item["at"] / 1000.0,
                        effect=effect,
                    )
                )
            except (InvalidMessage, KeyError, TypeError, ValueError) as exc:
                raise _corrupt_entry(where, exc, raw) from None
        return out

    def requeue_dead_letter(self, message_id: str) -> str:
        """Put a dead letter back at the end of the mailbox (a fresh attempt count)."""
        for raw in self._dead_raw():
            letter = self._dead(raw)
            if letter.message_id == message_id:
                Delivery(self.runtime).requeue(
                    self.keys, raw, letter.message_id, letter.seq, letter.message
                )
                return message_id
        if self._requeued(message_id):  # a retry after a lost reply: done already
            return message_id
        raise UnknownDeadLetter(f"{self.type_name}:{self.key} has no dead letter {message_id!r}")

    def _requeued(self, message_id: str) -> bool:
        """True if a requeued copy of ``message_id`` waits in the mailbox (operator actions
        only: it reads the whole mailbox)."""
        with redis_errors(f"mailbox of {self.type_name}:{self.key}"):
            raws = self.runtime.client.lrange(self.keys.mailbox, 0, -1)
        for raw in raws:
            try:
                if Entry.parse(raw, where="").message_id == message_id:
                    return True
            except CorruptActorData:
                continue
        return False

    # -- operating -----------------------------------------------------------------------
    def restart(self, recovery: str | None = None) -> str:
        """Restart now (from any status), with ``recovery`` or the type's own."""
        return restart_actor(self.runtime, self.keys, recovery=recovery).outcome

    def resume(self) -> str:
        """Bring a stopped or quarantined actor back (recovery last_good)."""
        return restart_actor(
            self.runtime, self.keys, recovery="last_good", only_halted=True
        ).outcome

    def rollback(self, version: int) -> int:
        """Restore the state of a committed ``version`` still in ``history()``, as a new
        version (history keeps both). The state must still pass ``validate``. A step in
        flight is fenced off; queued messages are then handled from the restored state.
        Returns the new version."""
        entry = next((h for h in self.history() if h.version == version), None)
        if entry is None:
            kept = [h.version for h in self.history()]
            raise UnknownVersion(
                f"{self.type_name}:{self.key} has no version {version} in its history "
                f"(kept: {kept})"
            )
        return rollback_actor(self.runtime, self.keys, version, entry.state, entry.state_version)

    def stop(self) -> str:
        """Stop the actor; its mailbox is kept and keeps accepting messages."""
        return stop_actor(self.runtime, self.keys)

    def delete(self) -> str:
        """Remove every key of the actor if it is stopped, quarantined, or idle with an
        empty mailbox, no timers, no isolated subtask pending and nothing left to relay;
        otherwise raise ``ActorBusy`` (nothing changes). Returns 'deleted', or 'missing' if
        there was no such actor (a retry after a lost reply). A later send creates a fresh
        actor from ``initial``."""
        return delete_actor(self.runtime, self.keys)

    def replay(
        self, *, message_id: str | None = None, timeout: float | None = None
    ) -> ReplayResult:
        """Run this process's handler on a copy of the quarantined actor's committed state
        and its mailbox head (or the dead letter ``message_id``); writes nothing and
        performs no effect. Stopped after ``timeout`` or the type's ``time_limit``."""
        return replay_actor(self.runtime, self.keys, message_id=message_id, timeout=timeout)

    def release(self, result: ReplayResult) -> Released:
        """Resume (for a dead letter: requeue) what ``result`` proved, only if the actor is
        still as the replay read it: 'resumed' | 'requeued' | 'failed' | 'changed' | 'gone'."""
        if (result.type, result.key) != (self.type_name, self.key):
            raise InvalidMessage(f"{result.type}:{result.key}'s replay given to {self!r}")
        return release(self.runtime, result)
