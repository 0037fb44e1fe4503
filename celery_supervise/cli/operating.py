"""The operating commands: ``resume``, ``restart``, ``delete``, ``reencrypt`` and ``tick``.
Each acts through the same calls a program would use (``ActorRef``, ``resume_supervisor``,
``run_tick``, ``reencrypt_type``) and prints what it did in one line (or ``--json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from celery.bin.base import CeleryCommand

from .base import (
    EXIT_FAILED,
    OperatorError,
    Unavailable,
    actor_ref,
    json_option,
    operator_errors,
    supervise,
    supervision,
)
from .render import echo, print_json, tick_text

if TYPE_CHECKING:
    from ..supervision import Supervision

__all__ = ["delete", "reencrypt", "restart", "resume", "tick"]


@supervise.command(cls=CeleryCommand)
@click.argument("target")
@json_option
@click.pass_context
@operator_errors
def resume(ctx: click.Context, target: str, as_json: bool) -> None:
    """Resume a stopped or quarantined actor (TYPE:KEY) or supervisor (NAME)."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..specs import is_actor_child

    sup = supervision(ctx)
    if is_actor_child(target):
        result, text = _resume_actor(sup, target)
    else:
        result, text = _resume_supervisor(sup, target)
    if as_json:
        print_json(result)
    else:
        echo(ctx, text)


def _resume_actor(sup: Supervision, target: str) -> tuple[dict[str, Any], str]:
    """Resume the actor ``TYPE:KEY``: what ``--json`` prints, and the line of text."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..operations import restart_actor
    from ..specs import split_actor_child

    ref = actor_ref(sup, *split_actor_child(target), must_exist=True)
    made = restart_actor(sup.runtime, ref.keys, recovery="last_good", only_halted=True)
    snap = ref.snapshot()
    # The version is the one the resume left; a worker may have stepped on since (status).
    result: dict[str, Any] = {
        "target": target,
        "kind": "actor",
        "outcome": "skipped" if made.outcome == "skip" else "resumed",
        "status": snap.status,
        "version": made.version if made.outcome != "skip" else snap.version,
    }
    text = (
        f"{target} is {snap.status}, not stopped or quarantined: nothing to resume"
        if made.outcome == "skip"
        else f"resumed {target} from its last good state at version {made.version}: "
        f"now {snap.status}"
    )
    return result, text


def _resume_supervisor(sup: Supervision, target: str) -> tuple[dict[str, Any], str]:
    """Resume supervisor ``target`` and its subtree: what ``--json`` prints, and the text."""
    # The tree shell is runtime: not loaded by every `celery` command.
    from ..operations import resume_supervisor

    subtree = list(sup.tree.subtree(target))  # ConfigurationError names the known ones
    pipe = sup.client.pipeline(transaction=False)
    for name in subtree:
        pipe.scard(sup.keyspace.supervisor_members(name))
    flagged = sum(int(n) for n in pipe.execute())
    resume_supervisor(sup.runtime, target)
    result: dict[str, Any] = {
        "target": target,
        "kind": "supervisor",
        "outcome": "resumed",
        "subtree": subtree,
        "flagged_actors_restarted": flagged,
    }
    text = (
        f"resumed supervisor {target} (subtree: {', '.join(subtree)}); its restart "
        f"histories are cleared and {flagged} stopped actor(s) restart"
    )
    return result, text


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@click.argument("key")
@click.option("--reset", is_flag=True, help="Restart from the initial state (recovery reset).")
@json_option
@click.pass_context
@operator_errors
def restart(ctx: click.Context, type_name: str, key: str, reset: bool, as_json: bool) -> None:
    """Restart an actor now, from its last good state or (--reset) its initial state."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..operations import restart_actor
    from ..registry import registered

    sup = supervision(ctx)
    ref = actor_ref(sup, type_name, key, must_exist=True)
    recovery = "reset" if reset else registered(type_name).recovery
    made = restart_actor(sup.runtime, ref.keys, recovery=recovery)
    outcome = made.outcome
    snap = ref.snapshot()
    # The version is the one the restart made; a worker may have stepped on since (status).
    if as_json:
        print_json(
            {
                "actor": f"{type_name}:{key}",
                "recovery": recovery,
                "outcome": "skipped" if outcome == "skip" else "restarted",
                "status": snap.status,
                "version": made.version if outcome != "skip" else snap.version,
            }
        )
        if outcome == "skip":  # refused: the JSON says so, and the exit code as the text's
            ctx.exit(EXIT_FAILED)
    elif outcome == "skip":
        raise OperatorError(
            f"{type_name}:{key} is {snap.status}: a {recovery} restart applies only to a "
            f"halted actor (stopped, quarantined, backoff); --reset restarts any actor"
        )
    else:
        echo(
            ctx,
            f"restarted {type_name}:{key} ({recovery}) at version {made.version}: "
            f"now {snap.status}",
        )


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@click.argument("key")
@json_option
@click.pass_context
@operator_errors
def delete(ctx: click.Context, type_name: str, key: str, as_json: bool) -> None:
    """Delete every key of an actor that is stopped, quarantined, or idle with nothing
    queued and no timers; a busy actor is refused (exit 1) and left as it is."""
    sup = supervision(ctx)
    ref = actor_ref(sup, type_name, key, must_exist=True)
    outcome = ref.delete()  # ActorBusy: one line on stderr, exit 1 (operator_errors)
    if as_json:
        print_json({"actor": f"{type_name}:{key}", "outcome": outcome})
    elif outcome == "missing":  # deleted by someone else since actor_ref looked
        echo(ctx, f"{type_name}:{key} was already deleted")
    else:
        echo(ctx, f"deleted {type_name}:{key}")


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@json_option
@click.pass_context
@operator_errors
def reencrypt(ctx: click.Context, type_name: str, as_json: bool) -> None:
    """Seal every stored payload of every actor of TYPE again under the newest key of
    supervise_codec (a key rotation). Exit code 1 if some actor could not be rotated."""
    # Imported here, not at the top: every `celery` command imports this package.
    from dataclasses import asdict

    from ..reencrypt import reencrypt_type
    from ..registry import registered

    sup = supervision(ctx)
    registered(type_name)  # ActorNotRegistered names the known types
    report = reencrypt_type(sup.runtime, type_name)
    if as_json:
        print_json(asdict(report))
    else:
        echo(ctx, f"{type_name}: {len(report.rotated)} actor(s) re-encrypted, "
                  f"{len(report.gone)} gone, {len(report.failed)} failed")  # fmt: skip
        for key, error in sorted(report.failed.items()):
            echo(ctx, f"  {type_name}:{key}: {error}")
    if report.failed:
        ctx.exit(1)


@supervise.command(cls=CeleryCommand)
@json_option
@click.pass_context
@operator_errors
def tick(ctx: click.Context, as_json: bool) -> None:
    """Run one supervisor tick in this process and print its summary."""
    # The tick is runtime: not loaded by every `celery` command.
    from ..tick import run_tick

    summary = run_tick(supervision(ctx).runtime)
    if "redis" in str(summary.get("skipped", "")).lower():  # Redis went away mid-tick
        raise Unavailable(f"tick skipped: {summary['skipped']}")
    if as_json:
        print_json(summary)
    else:
        tick_text(ctx, summary)
