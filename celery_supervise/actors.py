"""``@actor``: declare an actor type, one Celery task per type.

Like ``@shared_task``, the decorator does not need the app: the type is registered in a
process-wide registry (``registry``) and its task is created on every app that finalizes.
Using it on an app where ``Supervision(app)`` was not called raises ``NotInstalled``.
This module sits on top: its tasks call the runner through ``Supervision``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from celery import shared_task

from .codec import encode
from .context import Context
from .errors import ConfigurationError
from .ref import ActorRef
from .registry import ActorSpec, Handler, register, registered, same_handler
from .runner import run_actor
from .specs import RECOVERIES, RESTART_TYPES
from .supervision import Supervision
from .validators import (
    check_choice,
    check_int,
    check_migrations,
    check_number,
    check_supervisor_name,
)

__all__ = ["ActorType", "actor"]

S = TypeVar("S")


class ActorType(ActorSpec[S]):
    """What ``@actor`` returns: the spec, its Celery task, and ``ref(key)``."""

    def __init__(self, handler: Handler[S], **options: Any) -> None:
        super().__init__(handler, **options)
        self.__doc__ = handler.__doc__
        self.__wrapped__ = handler
        self.task = shared_task(name=self.name, bind=True, ignore_result=True)(
            _make_task_body(self.name)
        )

    def __call__(self, ctx: Context, state: S, message: Any) -> S | None:
        return self.handler(ctx, state, message)

    def ref(self, key: str) -> ActorRef:
        """A handle to the actor ``(this type, key)`` on the current Celery app (from any
        thread: see ``Supervision.for_current_app``)."""
        return Supervision.for_current_app().ref(self.name, key)


def _make_task_body(name: str) -> Callable[..., Any]:
    def run(task: Any, key: str) -> dict[str, Any]:
        sup = Supervision.for_app(task.app)
        return run_actor(sup.runtime, registered(name), key, task)

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
        "max_mailbox",
        "idle_ttl",
        "state_version",
        "migrate",
    }
)


def _check_unknown(options: dict[str, Any]) -> None:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigurationError(
            f"@actor: unknown option(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_OPTIONS))})"
        )


def _type_name(handler: Handler[Any], options: dict[str, Any]) -> str:
    if not callable(handler):
        raise ConfigurationError(f"@actor must decorate a function, got {handler!r}")
    name = options.get("name") or f"{handler.__module__}.{handler.__qualname__}"
    if not isinstance(name, str) or ":" in name or "{" in name or "}" in name:
        raise ConfigurationError(f"@actor {name!r}: name must be a str without ':', '{{' or '}}'")
    if not same_handler(name, handler):
        raise ConfigurationError(
            f"@actor {name!r}: another actor type is already registered with this name"
        )
    return name


def _state_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``initial`` (a JSON value or a callable of the key) and ``validate`` (a callable)."""
    validate = options.get("validate")
    if validate is not None and not callable(validate):
        raise ConfigurationError(f"{where}: validate must be callable, got {validate!r}")
    initial = options.get("initial")
    if not callable(initial):
        try:
            encode(initial, what=f"{where}: initial")
        except Exception as exc:
            raise ConfigurationError(str(exc)) from None
    return {"initial": initial, "validate": validate, **_version_options(options, where)}


def _version_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``state_version`` (int >= 1) and ``migrate`` (covering 1 .. state_version - 1)."""
    version = check_int(options.get("state_version", 1), where, minimum=1, option="state_version")
    migrate = check_migrations(options.get("migrate"), version, where)
    return {"state_version": version, "migrate": migrate}


def _build(handler: Handler[Any], options: dict[str, Any]) -> ActorType[Any]:
    _check_unknown(options)
    name = _type_name(handler, options)
    where = f"@actor {name!r}"
    get = options.get
    time_limit, idle_ttl = get("time_limit"), get("idle_ttl")
    max_mailbox = get("max_mailbox")
    atype = ActorType(
        handler,
        name=name,
        supervisor=check_supervisor_name(get("supervisor", "root"), f"{where}: supervisor"),
        restart=check_choice(get("restart", "permanent"), RESTART_TYPES, where, option="restart"),
        recovery=check_choice(get("recovery", "last_good"), RECOVERIES, where, option="recovery"),
        max_attempts=check_int(get("max_attempts", 3), where, minimum=1, option="max_attempts"),
        history=check_int(get("history", 10), where, minimum=1, option="history"),
        time_limit=None
        if time_limit is None
        else check_number(time_limit, where, above=0, option="time_limit"),
        max_mailbox=None
        if max_mailbox is None
        else check_int(max_mailbox, where, minimum=1, option="max_mailbox"),
        idle_ttl=None
        if idle_ttl is None
        else check_number(idle_ttl, where, above=0, option="idle_ttl"),
        **_state_options(options, where),
    )
    register(atype)
    return atype


@overload
def actor(fn: Handler[S], /) -> ActorType[S]: ...
@overload
def actor(fn: None = None, /, **options: Any) -> Callable[[Handler[S]], ActorType[S]]: ...
def actor(fn: Any = None, /, **options: Any) -> Any:
    """Declare an actor type (see SPEC 2 for the options). Usable bare or with options."""
    if fn is not None:
        return _build(fn, options)
    _check_unknown(options)

    def decorate(handler: Handler[S]) -> ActorType[S]:
        return _build(handler, options)

    return decorate
