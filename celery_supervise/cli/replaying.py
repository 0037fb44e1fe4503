"""``replay TYPE [KEY] [--message ID] [--release]``: prove a fix on quarantined work before
it runs for real (SPEC 7). The replay itself writes nothing; ``--release`` then resumes (or
requeues) exactly the actors whose replay succeeded, fenced against any change since.
Exit code 0 only when every replay succeeded (and, with ``--release``, was released)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from celery.bin.base import CeleryCommand

from .base import (
    EXIT_FAILED,
    OperatorError,
    actor_ref,
    json_option,
    operator_errors,
    supervise,
    supervision,
)
from .render import STATE_SHOWN_CHARS, echo, print_json

if TYPE_CHECKING:
    from ..errors import CorruptActorData
    from ..replay import ReplayResult
    from ..supervision import Supervision

    Outcome = ReplayResult | CorruptActorData

__all__ = ["replay"]


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@click.argument("key", required=False)
@click.option("--message", "message_id", metavar="ID",
              help="Replay this dead letter of KEY instead of its mailbox head.")
@click.option("--release", "release_", is_flag=True,
              help="Then resume (for --message: requeue) the actors whose replay succeeded.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop a replayed step after this long (default: its time_limit, or 60).")
@json_option
@click.pass_context
@operator_errors
def replay(ctx: click.Context, type_name: str, key: str | None, message_id: str | None,
           release_: bool, timeout: float | None, as_json: bool) -> None:  # fmt: skip
    """Run this process's handler on a copy of each quarantined actor of TYPE (or KEY's)."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..registry import registered

    sup = supervision(ctx)
    registered(type_name)  # ActorNotRegistered names the known types
    if message_id is not None and key is None:
        raise OperatorError("--message ID names a dead letter of one actor: give TYPE KEY")
    outcomes = _replay(sup, type_name, key, message_id, timeout)
    released = _release(sup, type_name, outcomes) if release_ else {}
    if as_json:
        print_json(_json(type_name, outcomes, released, release_))
    else:
        _text(ctx, type_name, outcomes, released, release_)
    good = all(_ok(o) for _, o in outcomes)
    if not good or (release_ and any(v not in ("resumed", "requeued") for v in released.values())):
        ctx.exit(EXIT_FAILED)


def _replay(sup: Supervision, type_name: str, key: str | None, message_id: str | None,
            timeout: float | None) -> list[tuple[str, Outcome]]:  # fmt: skip
    # Imported here, not at the top: every `celery` command imports this package.
    from ..replay import replay_type

    if key is None:
        return replay_type(sup.runtime, type_name, timeout=timeout)
    ref = actor_ref(sup, type_name, key, must_exist=True)
    return [(key, ref.replay(message_id=message_id, timeout=timeout))]


def _release(sup: Supervision, type_name: str, outcomes: list[tuple[str, Outcome]]
             ) -> dict[str, str]:  # fmt: skip
    """Release each successful replay; then prune the quarantine index (a writing command)."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..replay import ReplayResult, quarantined_keys, release

    out: dict[str, str] = {}
    for key, outcome in outcomes:
        out[key] = release(sup.runtime, outcome) if isinstance(outcome, ReplayResult) else "failed"
    quarantined_keys(sup.runtime, type_name, prune=True)
    return out


def _ok(outcome: Outcome) -> bool:
    return bool(getattr(outcome, "ok", False))


def _json(type_name: str, outcomes: list[tuple[str, Outcome]], released: dict[str, str],
          release_: bool) -> dict[str, Any]:  # fmt: skip
    results = []
    for key, outcome in outcomes:
        if hasattr(outcome, "as_dict"):  # a ReplayResult (not imported at the top)
            item = outcome.as_dict()
        else:
            item = {"actor": f"{type_name}:{key}", "ok": False, "reason": "corrupt_data",
                    "error": {"type": type(outcome).__name__, "message": str(outcome)}}  # fmt: skip
        if release_:
            item["released"] = released.get(key)
        results.append(item)
    succeeded = sum(1 for _, o in outcomes if _ok(o))
    return {"type": type_name, "replayed": len(outcomes), "succeeded": succeeded,
            "results": results}  # fmt: skip


def _text(ctx: click.Context, type_name: str, outcomes: list[tuple[str, Outcome]],
          released: dict[str, str], release_: bool) -> None:  # fmt: skip
    if not outcomes:
        echo(ctx, f"No quarantined actor of {type_name}: nothing to replay.")
        return
    for key, outcome in outcomes:
        _one_text(ctx, type_name, key, outcome)
        if release_:
            echo(ctx, f"  released: {released.get(key)}")
    succeeded = sum(1 for _, o in outcomes if _ok(o))
    done = sum(1 for v in released.values() if v in ("resumed", "requeued"))
    tail = f"; released {done}" if release_ else " (nothing written; --release lets them run)"
    echo(ctx, f"{succeeded} of {len(outcomes)} replay(s) succeeded{tail}.")


def _one_text(ctx: click.Context, type_name: str, key: str, outcome: Outcome) -> None:
    # Imported here, not at the top: every `celery` command imports this package.
    from ..replay import ReplayResult

    name = f"{type_name}:{key}"
    if not isinstance(outcome, ReplayResult):
        echo(ctx, f"{name}  {ctx.obj.style('FAILED', fg='red')}  {outcome}")
        return
    what = ("no message queued" if outcome.message_id is None
            else f"{outcome.source.replace('_', ' ')} {outcome.message_id!r}")  # fmt: skip
    if not outcome.ok:
        error = outcome.error or {}
        echo(ctx, f"{name}  {ctx.obj.style('FAILED', fg='red')}  {what} on version "
                  f"{outcome.version}: {outcome.reason}: {error.get('type')}: "
                  f"{error.get('message')}")  # fmt: skip
        for line in (error.get("traceback") or "").rstrip().splitlines():
            echo(ctx, f"    {line}")
        return
    echo(ctx, f"{name}  {ctx.obj.style('ok', fg='green')}  {what} on version "
              f"{outcome.version}: would commit; validate passed")  # fmt: skip
    diff = "\n".join(outcome.diff)[:STATE_SHOWN_CHARS]
    for line in diff.splitlines() or ["(state unchanged)"]:
        echo(ctx, f"    {line}")
    for line in _effect_lines(outcome):
        echo(ctx, f"  would {line}")


def _named(timer: dict[str, Any]) -> str:
    if "name" not in timer:
        return ""
    every = f", every {timer['every']} s" if timer["every"] is not None else ""
    return f" {timer['name']!r}{every}"


def _effect_lines(outcome: ReplayResult) -> list[str]:
    e = outcome.effects
    lines = [f"send {s['to']}: {s['message']!r}" for s in e.sends]
    lines += [f"reply: {r!r}" for r in e.replies]
    lines += [f"isolate {i['task']} (tag {i['tag']!r})" for i in e.isolates]
    lines += [f"set a timer{_named(t)} in {t['after']} s: {t['message']!r}" for t in e.timers]
    lines += [f"cancel the timer {name!r}" for name in e.cancelled_timers]
    return lines + (["stop after this step"] if e.stop else [])
