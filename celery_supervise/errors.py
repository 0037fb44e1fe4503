"""Every exception celery_supervise raises, under one root.

Celery pickles exceptions to move them between processes, so each class keeps its
constructor arguments in ``args`` (the default ``BaseException.__reduce__`` then works).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActorBusy",
    "ActorNotRegistered",
    "AskNotAllowed",
    "AskTimeout",
    "CodecError",
    "ConfigurationError",
    "CorruptActorData",
    "InvalidArgument",
    "InvalidKey",
    "InvalidMessage",
    "MailboxFull",
    "MessageDeadLettered",
    "MessageTooLarge",
    "NotInstalled",
    "NotQuarantined",
    "RedisRejected",
    "RedisTLSError",
    "RedisTooOld",
    "RedisUnavailable",
    "ReplicaAckTimeout",
    "StateRejected",
    "SuperviseError",
    "UnknownDeadLetter",
    "UnknownVersion",
]


class SuperviseError(Exception):
    """Root of every celery_supervise exception."""


class ConfigurationError(SuperviseError):
    """A setting, actor option or supervisor spec is invalid; the message names it."""


class NotInstalled(ConfigurationError):
    """An actor was used on a Celery app where ``Supervision(app)`` was not called."""


class ActorNotRegistered(SuperviseError):
    """A name does not belong to any registered actor type."""


class InvalidArgument(SuperviseError, ValueError):
    """A reading call got an argument it cannot use (an unknown status, a bad cursor)."""


class InvalidKey(SuperviseError, ValueError):
    """An actor key is empty, too long or not a string."""


class InvalidMessage(SuperviseError, ValueError):
    """A message (or message id) cannot be encoded as JSON or is otherwise malformed."""


class MessageTooLarge(InvalidMessage):
    """A message is larger than ``supervise_max_message_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(size, limit)
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return (
            f"message is {self.size} bytes encoded, over supervise_max_message_bytes={self.limit}"
        )


class MailboxFull(SuperviseError):
    """A send was refused, nothing written: the actor's mailbox already holds ``count``
    messages and its type allows ``limit`` (``@actor(max_mailbox=...)``). Its reason, in an
    undeliverable effect, is ``mailbox_full``."""

    reason = "mailbox_full"

    def __init__(self, actor: str, limit: int, count: int) -> None:
        super().__init__(actor, limit, count)
        self.actor = actor
        self.limit = limit
        self.count = count

    def __str__(self) -> str:
        return (
            f"mailbox_full: mailbox of {self.actor} holds {self.count} message(s), "
            f"max_mailbox={self.limit}; nothing was sent"
        )


class CorruptActorData(SuperviseError):
    """Data found in Redis for an actor is not what celery_supervise wrote."""


class CodecError(SuperviseError):
    """A stored payload (state, message body, history or dead-letter payload) cannot be
    decoded by ``supervise_codec``: a wrong or missing key, tampered bytes, or a payload
    written under another codec. Nothing is changed: a worker refuses to step the actor and
    leaves it for a worker that holds the key (docs/long-lived.md)."""


class StateRejected(SuperviseError):
    """A handler returned a state that cannot be committed (``reason``: invalid_state,
    unserializable_state or state_too_large), or a stored state could not be upgraded to
    the type's ``state_version`` (``migration_failed``); the step is a crash, the state is
    discarded (the stored one stays)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason, text)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[1])


class RedisUnavailable(SuperviseError, ConnectionError):
    """Redis did not answer (down, unreachable, or timed out); nothing was sent."""


class ReplicaAckTimeout(RedisUnavailable):
    """Fewer replicas than ``supervise_replica_acks`` acknowledged a write within the wait
    (Redis ``WAIT``). The write exists on the primary and may survive or not a failover:
    retry the ``send`` with the same ``message_id`` (applied once either way)."""

    def __init__(self, what: str, acked: int, wanted: int, timeout_ms: int) -> None:
        self.acked, self.wanted = acked, wanted
        super().__init__(
            f"{what}: {acked} of {wanted} replicas acknowledged the write within "
            f"{timeout_ms} ms (supervise_replica_acks={wanted}); the write may exist: retry "
            "with the same message_id"
        )


class RedisTLSError(RedisUnavailable):
    """The TLS hand-shake with Redis failed (a certificate that does not verify against
    ``ssl_ca_certs``, a wrong host name, a plain server behind a ``rediss://`` URL). A
    ``RedisUnavailable``: workers wait for it as for an outage (a certificate can be fixed
    while they wait), and nothing was sent."""


class RedisRejected(SuperviseError):
    """Redis answered but refused to write (out of memory under ``noeviction``, ``MISCONF``
    after a failed save, ``READONLY`` on a replica): nothing of the call was written, and
    repeating it once Redis accepts writes again is safe. Not a sign of corrupt data."""


class ActorBusy(SuperviseError):
    """``delete`` refused: the actor still has work (``reason``: its status -- active,
    backoff, crashed --, or leased, mailbox, timers, isolates, outbox, recent). Nothing
    was deleted."""

    def __init__(self, actor: str, reason: str) -> None:
        super().__init__(actor, reason)
        self.actor = actor
        self.reason = reason

    def __str__(self) -> str:
        return f"actor {self.actor} is busy ({_BUSY.get(self.reason, self.reason)}): not deleted"


#: Why ``delete.lua`` refused, in words.
_BUSY = {
    "leased": "leased: a step is in flight",
    "outbox": "outbox: committed effects not relayed yet",
    "mailbox": "mailbox: messages queued",
    "timers": "timers: timers pending",
    "isolates": "isolates: isolated subtasks pending",
    "recent": "recent: it stepped within its idle_ttl",
    "active": "active: messages queued or a run scheduled",
    "backoff": "backoff: waiting for its restart",
    "crashed": "crashed: waiting for its supervisor",
}


class RedisTooOld(SuperviseError):
    """The server is older than the commands celery_supervise sends need (``server`` is
    ``"Redis"`` or ``"Valkey"``, ``found`` its version, ``floor`` the oldest accepted)."""

    def __init__(self, server: str, found: str, floor: str) -> None:
        super().__init__(server, found, floor)
        self.server = server
        self.found = found
        self.floor = floor

    def __str__(self) -> str:
        return (
            f"{self.server} {self.found} is too old for celery_supervise: it needs "
            f"{self.server} {self.floor} or later (Redis 6.2+ or Valkey 7.2+; every send "
            "runs ZADD ... LT, which came in Redis 6.2)"
        )


class AskNotAllowed(SuperviseError):
    """``ref.ask`` was called inside an actor handler (it would block the actor)."""


class AskTimeout(SuperviseError, TimeoutError):
    """No reply came back within the ``ask`` timeout."""


class MessageDeadLettered(SuperviseError):
    """An asked message was dead-lettered; ``crashes`` holds the crash records."""

    def __init__(self, message_id: str, crashes: list[dict[str, Any]]) -> None:
        super().__init__(message_id, crashes)
        self.message_id = message_id
        self.crashes = crashes

    def __str__(self) -> str:
        last = self.crashes[-1] if self.crashes else {}
        return (
            f"message {self.message_id!r} was dead-lettered after {len(self.crashes)} "
            f"crash(es); last: {last.get('type')}: {last.get('message')}"
        )


class UnknownVersion(SuperviseError, KeyError):
    """``rollback`` named a version that is not in the actor's history."""


class NotQuarantined(SuperviseError):
    """``replay`` named an actor that does not exist or is not quarantined (a dead letter
    is replayed with ``message_id``, whatever the actor's status)."""


class UnknownDeadLetter(SuperviseError, KeyError):
    """``requeue_dead_letter`` named a message id that is not among the dead letters."""
