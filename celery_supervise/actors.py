"""``@actor``: declare an actor type, one Celery task per type.

Like ``@shared_task``, the decorator does not need the app: the type is registered in a
process-wide registry and its task is created on every app that finalizes. Using it on an
app where ``Supervision(app)`` was not called raises ``NotInstalled``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from celery import shared_task

from .errors import ActorNotRegistered, ConfigurationError, InvalidKey
from .specs import RECOVERIES, RESTART_TYPES, Recovery, RestartType
from .validators import (
    MAX_KEY_LENGTH,
    check_choice,
    check_int,
    check_number,
    check_supervisor_name,
)

if TYPE_CHECKING:
    from .context import Context
    from .ref import ActorRef

__all__ = ["RECOVERIES", "RESTART_TYPES", "ActorType", "actor", "registered", "validate_key"]

S = TypeVar("S")
Handler = Callable[["Context", S, Any], "S | None"]

_REGISTRY: dict[str, ActorType[Any]] = {}


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


def registered(name: str) -> ActorType[Any]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ActorNotRegistered(
            f"no actor type named {name!r} (known: {', '.join(sorted(_REGISTRY)) or 'none'})"
        ) from None


def all_types() -> dict[str, ActorType[Any]]:
    return dict(_REGISTRY)


class ActorType(Generic[S]):
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
    ) -> None:
        self.handler = handler
        self.name = name
        self.initial = initial
        self.validate = validate
        self.supervisor = supervisor
        self.restart = restart
        self.recovery = recovery
        self.max_attempts = max_attempts
        self.history = history
        self.time_limit = time_limit
        self.__doc__ = handler.__doc__
        self.__wrapped__ = handler
        self.task = shared_task(name=name, bind=True, ignore_result=True)(_make_task_body(name))

    def __repr__(self) -> str:
        return f"<actor {self.name}>"

    def __call__(self, ctx: Context, state: S, message: Any) -> S | None:
        return self.handler(ctx, state, message)

    def ref(self, key: str) -> ActorRef:
        """A handle to the actor ``(this type, key)`` on the current Celery app."""
        from .supervision import Supervision

        return Supervision.for_app(self.task.app).ref(self.name, key)

    def initial_state(self, key: str) -> Any:
        if callable(self.initial):
            return self.initial(key)
        return copy.deepcopy(self.initial)

    def valid_initial(self, key: str) -> bytes:
        """``initial(key)``, encoded, for a ``reset``; ``StateRejected`` if it is not a state
        that may be committed (it fails ``validate``, or is not JSON)."""
        from .codec import encode
        from .errors import StateRejected, SuperviseError

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


def _make_task_body(name: str) -> Callable[..., Any]:
    def run(task: Any, key: str) -> dict[str, Any]:
        from .runner import run_actor
        from .supervision import Supervision

        return run_actor(Supervision.for_app(task.app), registered(name), key, task)

    run.__name__ = name.rsplit(".", 1)[-1]
    run.__qualname__ = run.__name__
    return run


_OPTIONS = frozenset(
    {
        "name",
        "initial",
        "validate",
        "supervisor",
        "restart",
        "recovery",
        "max_attempts",
        "history",
        "time_limit",
    }
)


def _build(handler: Handler[Any], options: dict[str, Any]) -> ActorType[Any]:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigurationError(
            f"@actor: unknown option(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_OPTIONS))})"
        )
    if not callable(handler):
        raise ConfigurationError(f"@actor must decorate a function, got {handler!r}")
    name = options.get("name") or f"{handler.__module__}.{handler.__qualname__}"
    where = f"@actor {name!r}"
    if not isinstance(name, str) or ":" in name or "{" in name or "}" in name:
        raise ConfigurationError(f"{where}: name must be a str without ':', '{{' or '}}'")
    restart = check_choice(
        options.get("restart", "permanent"), RESTART_TYPES, where, option="restart"
    )
    recovery = check_choice(
        options.get("recovery", "last_good"), RECOVERIES, where, option="recovery"
    )
    supervisor = check_supervisor_name(options.get("supervisor", "root"), f"{where}: supervisor")
    max_attempts = check_int(
        options.get("max_attempts", 3), where, minimum=1, option="max_attempts"
    )
    history = check_int(options.get("history", 10), where, minimum=1, option="history")
    time_limit = options.get("time_limit")
    if time_limit is not None:
        time_limit = check_number(time_limit, where, above=0, option="time_limit")
    validate = options.get("validate")
    if validate is not None and not callable(validate):
        raise ConfigurationError(f"{where}: validate must be callable, got {validate!r}")
    initial = options.get("initial")
    if not callable(initial):
        from .codec import encode

        try:
            encode(initial, what=f"{where}: initial")
        except Exception as exc:
            raise ConfigurationError(str(exc)) from None
    existing = _REGISTRY.get(name)
    if (
        existing is not None
        and existing.handler is not handler
        and (getattr(existing.handler, "__code__", None) is not getattr(handler, "__code__", None))
    ):
        raise ConfigurationError(
            f"{where}: another actor type is already registered with this name"
        )
    atype = ActorType(
        handler,
        name=name,
        initial=initial,
        validate=validate,
        supervisor=supervisor,
        restart=restart,
        recovery=recovery,
        max_attempts=max_attempts,
        history=history,
        time_limit=time_limit,
    )
    _REGISTRY[name] = atype
    return atype


@overload
def actor(fn: Handler[S], /) -> ActorType[S]: ...
@overload
def actor(fn: None = None, /, **options: Any) -> Callable[[Handler[S]], ActorType[S]]: ...
def actor(fn: Any = None, /, **options: Any) -> Any:
    """Declare an actor type (see SPEC 2 for the options). Usable bare or with options."""
    if fn is not None:
        return _build(fn, options)

    def decorate(handler: Handler[S]) -> ActorType[S]:
        return _build(handler, options)

    _build_check = set(options) - _OPTIONS
    if _build_check:
        raise ConfigurationError(
            f"@actor: unknown option(s) {', '.join(sorted(_build_check))} "
            f"(known: {', '.join(sorted(_OPTIONS))})"
        )
    return decorate
