"""Actor types as the runtime sees them: a handler with its validated options, by name.

``@actor`` (``actors.py``) builds an ``ActorSpec`` and registers it here, process-wide, like
``@shared_task``; the layers below (runner, tick, store) look types up by name and never
import ``actors`` (which sits above them, because its tasks call the runner).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .codec import encode
from .errors import ActorNotRegistered, InvalidKey, StateRejected, SuperviseError
from .specs import Recovery, RestartType
from .validators import MAX_KEY_LENGTH

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "MAX_KEY_LENGTH",
    "ActorSpec",
    "Handler",
    "all_types",
    "mailbox_limit",
    "register",
    "registered",
    "validate_key",
]

S = TypeVar("S")
Handler = Callable[["Context", S, Any], "S | None"]
#: ``migrate[n]``: upgrades a state of state version ``n`` to ``n + 1``.
Upgrade = Callable[[Any], Any]


_REGISTRY: dict[str, ActorSpec[Any]] = {}


def validate_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidKey(f"actor key must be a str, got {type(key).__name__} {key!r}")
    if not key:
        raise InvalidKey("actor key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"actor key is {len(key)} characters, over the limit of {MAX_KEY_LENGTH}")
    try:
        key.encode()
    except UnicodeEncodeError as exc:
        raise InvalidKey(
            f"actor key holds {key[exc.start : exc.end]!r} at {exc.start}, a lone surrogate "
            f"(not valid Unicode, cannot be stored)"
        ) from None
    return key


def registered(name: str) -> ActorSpec[Any]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ActorNotRegistered(
            f"no actor type named {name!r} (known: {', '.join(sorted(_REGISTRY)) or 'none'})"
        ) from None


def mailbox_limit(name: str) -> int:
    """The ``max_mailbox`` of a type, 0 for none. A type this process does not know is
    unbounded here: a process sending to a type it never imports cannot know its limit,
    and refusing would break such deploys (docs/decisions.md)."""
    spec = _REGISTRY.get(name)
    return 0 if spec is None or spec.max_mailbox is None else spec.max_mailbox


def all_types() -> dict[str, ActorSpec[Any]]:
    return dict(_REGISTRY)


def register(spec: ActorSpec[Any]) -> None:
    _REGISTRY[spec.name] = spec


def same_handler(name: str, handler: Callable[..., Any]) -> bool:
    """True if no other handler is registered under ``name`` (a re-import is the same)."""
    existing = _REGISTRY.get(name)
    return (
        existing is None
        or existing.handler is handler
        or getattr(existing.handler, "__code__", None) is getattr(handler, "__code__", None)
    )


class ActorSpec(Generic[S]):
    """One kind of actor: a handler plus the options that govern its instances."""

    def __init__(
        self,
        handler: Handler[S],
        *,
        name: str,
        initial: Any,
        validate: Callable[[S], object] | None,
        supervisor: str,
        restart: RestartType,
        recovery: Recovery,
        max_attempts: int,
        history: int,
        time_limit: float | None,
        max_mailbox: int | None = None,
        idle_ttl: float | None = None,
        state_version: int = 1,
        migrate: Mapping[int, Upgrade] | None = None,
    ) -> None:
        self.handler = handler
        self.name = name
        self.initial = initial
        self.validate = validate
        self.supervisor = supervisor
        self.restart: RestartType = restart
        self.recovery: Recovery = recovery
        self.max_attempts = max_attempts
        self.history = history
        self.time_limit = time_limit
        #: Most messages its mailbox may hold before ``send`` raises ``MailboxFull``.
        self.max_mailbox = max_mailbox
        #: seconds after its last step at which an idle actor with no work is deleted
        self.idle_ttl = idle_ttl
        self.state_version = state_version
        self.migrate: Mapping[int, Upgrade] = dict(migrate or {})

    def __repr__(self) -> str:
        return f"<actor {self.name}>"

    def initial_state(self, key: str) -> Any:
        if callable(self.initial):
            return self.initial(key)
        return copy.deepcopy(self.initial)

    def valid_initial(self, key: str) -> bytes:
        """``initial(key)``, encoded, for a ``reset``; ``StateRejected`` if it is not a state
        that may be committed (it fails ``validate``, or is not JSON)."""
        state = self.initial_state(key)
        try:
            raw = encode(state, what=f"initial state of {self.name}:{key}")
        except SuperviseError as exc:
            raise StateRejected("unserializable_state", str(exc)) from None
        problem = self.check(state)
        if problem:
            raise StateRejected(
                "invalid_state", f"initial state of {self.name}:{key} fails validate: {problem}"
            )
        return raw

    def check(self, state: Any) -> str | None:
        """None if ``state`` passes ``validate``; otherwise why it does not."""
        if self.validate is None:
            return None
        try:
            ok = self.validate(state)
        except Exception as exc:  # the invariant itself failed: the state is not valid
            return f"validate raised {type(exc).__name__}: {exc}"
        return None if ok else "validate returned False"

    def upgrade(self, state: Any, stored_version: int) -> Any:
        """``state`` (of state version ``stored_version``) upgraded in order through
        ``migrate[n]`` up to ``state_version``; ``StateRejected('migration_failed')`` when an
        upgrade raises or its result fails ``validate`` (the stored state is not touched)."""
        for n in range(stored_version, self.state_version):
            try:
                state = self.migrate[n](state)
            except Exception as exc:
                raise StateRejected(
                    "migration_failed",
                    f"migrate[{n}] of {self.name} raised {type(exc).__name__}: {exc}",
                ) from exc
        if stored_version < self.state_version:
            problem = self.check(state)
            if problem:
                raise StateRejected(
                    "migration_failed",
                    f"state upgraded from state version {stored_version} to "
                    f"{self.state_version} fails validate: {problem}",
                )
        return state
