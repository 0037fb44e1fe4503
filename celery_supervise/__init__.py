"""celery_supervise: Erlang/OTP-style supervision for stateful Celery actor tasks.

State lives in Redis and is committed after every step; a supervisor tick (a beat job)
applies restart intensity, backoff and escalation; failure-prone work runs as isolated
subtasks. See SPEC-level docs in ``docs/``.
"""

from .actor import ActorType, actor
from .context import Context
from .errors import (
    ActorNotRegistered,
    AskNotAllowed,
    AskTimeout,
    ConfigurationError,
    CorruptActorData,
    InvalidKey,
    InvalidMessage,
    MessageDeadLettered,
    MessageTooLarge,
    NotInstalled,
    RedisUnavailable,
    StaleLease,
    SuperviseError,
    UnknownDeadLetter,
)
from .ref import ActorRef, DeadLetter, HistoryEntry, Snapshot
from .supervision import Supervision

__all__ = [
    "ActorNotRegistered",
    "ActorRef",
    "ActorType",
    "AskNotAllowed",
    "AskTimeout",
    "ConfigurationError",
    "Context",
    "CorruptActorData",
    "DeadLetter",
    "HistoryEntry",
    "InvalidKey",
    "InvalidMessage",
    "MessageDeadLettered",
    "MessageTooLarge",
    "NotInstalled",
    "RedisUnavailable",
    "Snapshot",
    "StaleLease",
    "SuperviseError",
    "Supervision",
    "UnknownDeadLetter",
    "actor",
]

__version__ = "0.1.0"
