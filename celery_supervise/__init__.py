"""celery_supervise: Erlang/OTP-style supervision for stateful Celery actor tasks.

State lives in Redis and is committed after every step; a supervisor tick (a beat job)
applies restart intensity, backoff and escalation; failure-prone work runs as isolated
subtasks. See ``docs/``.

The public names below are imported on first use: ``celery`` imports every CLI plugin's
package and pytest imports every plugin (``celery_supervise.cli``,
``celery_supervise.testing``), and neither should pay for the runtime until it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actors import ActorType, actor
    from .context import Context
    from .errors import (
        ActorBusy,
        ActorNotRegistered,
        AskNotAllowed,
        AskTimeout,
        CodecError,
        ConfigurationError,
        CorruptActorData,
        InvalidKey,
        InvalidMessage,
        MailboxFull,
        MessageDeadLettered,
        MessageTooLarge,
        NotInstalled,
        NotQuarantined,
        RedisRejected,
        RedisTLSError,
        RedisTooOld,
        RedisUnavailable,
        ReplicaAckTimeout,
        StateRejected,
        SuperviseError,
        UnknownDeadLetter,
        UnknownVersion,
    )
    from .ref import ActorRef, DeadLetter, HistoryEntry, Snapshot, UndeliverableEffect
    from .replay import ReplayEffects, ReplayResult
    from .supervision import Supervision
    from .timers import Timer

#: Where each public name lives.
_HOME = {
    "ActorType": "actors",
    "actor": "actors",
    "Context": "context",
    "ActorRef": "ref",
    "DeadLetter": "ref",
    "HistoryEntry": "ref",
    "Snapshot": "ref",
    "UndeliverableEffect": "ref",
    "ReplayEffects": "replay",
    "ReplayResult": "replay",
    "Supervision": "supervision",
    "Timer": "timers",
    **dict.fromkeys(
        [
            "ActorBusy",
            "ActorNotRegistered",
            "AskNotAllowed",
            "AskTimeout",
            "CodecError",
            "ConfigurationError",
            "CorruptActorData",
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
        ],
        "errors",
    ),
}

__all__ = [
    "ActorBusy",
    "ActorNotRegistered",
    "ActorRef",
    "ActorType",
    "AskNotAllowed",
    "AskTimeout",
    "CodecError",
    "ConfigurationError",
    "Context",
    "CorruptActorData",
    "DeadLetter",
    "HistoryEntry",
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
    "ReplayEffects",
    "ReplayResult",
    "ReplicaAckTimeout",
    "Snapshot",
    "StateRejected",
    "SuperviseError",
    "Supervision",
    "Timer",
    "UndeliverableEffect",
    "UnknownDeadLetter",
    "UnknownVersion",
    "actor",
]
assert sorted(_HOME) == __all__

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'celery_supervise' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
