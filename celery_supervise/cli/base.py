"""The ``supervise`` click group and what every subcommand shares: operator errors with
their exit codes, the app's ``Supervision``, and actor lookup."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
from celery.bin.base import handle_preload_options

if TYPE_CHECKING:
    from ..ref import ActorRef
    from ..supervision import Supervision

__all__ = [
    "EXIT_FAILED",
    "EXIT_UNAVAILABLE",
    "OperatorError",
    "Unavailable",
    "actor_ref",
    "json_option",
    "operator_errors",
    "supervise",
    "supervision",
]

#: Exit code when a command fails for a reason the operator can fix.
EXIT_FAILED = 1
#: Exit code when Redis or the broker cannot be reached (sysexits' EX_UNAVAILABLE, as
#: Celery's own remote-control commands use).
EXIT_UNAVAILABLE = 69

P = ParamSpec("P")
R = TypeVar("R")


class OperatorError(click.ClickException):
    """A failure shown as one line on stderr (``Error: ...``), exit code 1."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class Unavailable(OperatorError):
    """Redis or the broker cannot be reached: exit code 69, as Celery's own commands."""

    exit_code = EXIT_UNAVAILABLE


def _explain(exc: Exception) -> OperatorError | None:
    """The one-line error for an exception an operator can cause; None for a bug."""
    # Imported here, not at the top: every `celery` command imports this package.
    import redis
    from kombu.exceptions import OperationalError

    from ..errors import RedisUnavailable, SuperviseError

    where = click.get_current_context().meta.get("supervise.redis_url", "Redis")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return Unavailable(f"cannot reach Redis at {where}: {exc}")
    if isinstance(exc, RedisUnavailable):
        return Unavailable(f"cannot reach Redis at {where}: {exc}")
    if isinstance(exc, OperationalError):
        return Unavailable(f"cannot reach the Celery broker: {exc}")
    if isinstance(exc, redis.RedisError):
        return OperatorError(f"Redis at {where} refused the command: {exc}")
    if isinstance(exc, SuperviseError):
        # KeyError subclasses (UnknownDeadLetter) would print their message quoted.
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return OperatorError(text)
    return None


def operator_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an exception an operator can cause into a one-line error and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            error = _explain(exc)
            if error is None:
                raise  # a bug: keep the traceback
            raise error from exc

    return wrapper


def supervision(ctx: click.Context) -> Supervision:
    """celery_supervise as installed on the app given by ``celery -A``."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..supervision import Supervision
    from ..topology import safe_url

    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise OperatorError("run this as `celery -A proj supervise ...`")
    # Actor types live in the project's task modules (Django's autodiscovery among them);
    # ``celery worker`` imports them the same way before it starts.
    app.loader.import_default_modules()
    sup = Supervision.for_app(app)
    ctx.meta["supervise.redis_url"] = safe_url(sup.settings.redis_url)
    # One round trip up front: an unreachable Redis is reported the same way by every
    # command (the tick, for one, would only log it and skip).
    sup.client.ping()
    return sup


def actor_ref(sup: Supervision, type_name: str, key: str, *, must_exist: bool) -> ActorRef:
    """The actor's ref; with ``must_exist``, an operator error if it never got a message."""
    ref = sup.ref(type_name, key)
    if must_exist and not sup.client.exists(ref.keys.meta):
        raise OperatorError(
            f"actor {type_name}:{key} does not exist (it exists once it has received a message)"
        )
    return ref


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group(name="supervise")
@click.pass_context
@handle_preload_options  # type: ignore[untyped-decorator]  # celery.bin has no type hints
def supervise(ctx: click.Context, **kwargs: Any) -> None:
    """Operate celery_supervise: the supervision tree, actors, dead letters and ticks."""
