"""``@actor``: declare an actor type, one Celery task per type.

Like ``@shared_task``, the decorator does not need the app: the type is registered in a
process-wide registry (``registry``) and its task is created on every app that finalizes.
Using it on an app where ``Supervision(app)`` was not called raises ``NotInstalled``.
This module sits on top: its tasks call the runner through ``Supervision``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from celery import shared_task

from .codec import encode
from .context import Context
from .decisions import RECOVERIES, RESTART_TYPES, Recovery, RestartType
from .errors import ConfigurationError
from .ref import ActorRef
from .registry import ActorSpec, Handler, register, registered, same_handler
from .runner import run_actor
from .supervision import Supervision

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
    restart = options.get("restart", "permanent")
    if restart not in RESTART_TYPES:
        raise ConfigurationError(
            f"{where}: restart must be one of {RESTART_TYPES}, got {restart!r}"
        )
    recovery = options.get("recovery", "last_good")
    if recovery not in RECOVERIES:
        raise ConfigurationError(f"{where}: recovery must be one of {RECOVERIES}, got {recovery!r}")
    supervisor = options.get("supervisor", "root")
    if not isinstance(supervisor, str) or not supervisor or ":" in supervisor:
        raise ConfigurationError(
            f"{where}: supervisor must be a supervisor name, got {supervisor!r}"
        )
    max_attempts = options.get("max_attempts", 3)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigurationError(f"{where}: max_attempts must be an int >= 1, got {max_attempts!r}")
    history = options.get("history", 10)
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ConfigurationError(f"{where}: history must be an int >= 1, got {history!r}")
    time_limit = options.get("time_limit")
    if time_limit is not None and (
        isinstance(time_limit, bool) or not isinstance(time_limit, int | float) or time_limit <= 0
    ):
        raise ConfigurationError(f"{where}: time_limit must be None or > 0, got {time_limit!r}")
    validate = options.get("validate")
    if validate is not None and not callable(validate):
        raise ConfigurationError(f"{where}: validate must be callable, got {validate!r}")
    initial = options.get("initial")
    if not callable(initial):
        try:
            encode(initial, what=f"{where}: initial")
        except Exception as exc:
            raise ConfigurationError(str(exc)) from None
    if not same_handler(name, handler):
        raise ConfigurationError(
            f"{where}: another actor type is already registered with this name"
        )
    atype = ActorType(
        handler,
        name=name,
        initial=initial,
        validate=validate,
        supervisor=supervisor,
        restart=cast(RestartType, restart),
        recovery=cast(Recovery, recovery),
        max_attempts=max_attempts,
        history=history,
        time_limit=float(time_limit) if time_limit is not None else None,
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

    def decorate(handler: Handler[S]) -> ActorType[S]:
        return _build(handler, options)

    _build_check = set(options) - _OPTIONS
    if _build_check:
        raise ConfigurationError(
            f"@actor: unknown option(s) {', '.join(sorted(_build_check))} "
            f"(known: {', '.join(sorted(_OPTIONS))})"
        )
    return decorate
