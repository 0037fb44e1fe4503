"""The reading commands: ``status``, ``actor`` and ``dead-letters`` (whose ``--requeue`` is
the one write, kept beside the listing it acts on)."""

from __future__ import annotations

import click
from celery.bin.base import CeleryCommand

from .base import actor_ref, json_option, operator_errors, supervise, supervision
from .queries import actor_dead_letters, actor_report, dead_letter_holders, tree_status
from .render import (
    actor_text,
    dead_letter_holders_text,
    dead_letters_text,
    echo,
    print_json,
    status_text,
)

__all__ = ["actor", "dead_letters", "status"]


@supervise.command(cls=CeleryCommand)
@json_option
@click.pass_context
@operator_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the supervision tree, restart histories and recent decisions."""
    report = tree_status(supervision(ctx))
    if as_json:
        print_json(report)
    else:
        status_text(ctx, report)


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@click.argument("key")
@click.option(
    "--history",
    "-n",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Committed versions to show (newest first).",
)
@json_option
@click.pass_context
@operator_errors
def actor(ctx: click.Context, type_name: str, key: str, history: int, as_json: bool) -> None:
    """Show one actor: state, version, status, mailbox, crashes, history."""
    sup = supervision(ctx)
    report = actor_report(sup, actor_ref(sup, type_name, key, must_exist=False), history)
    if as_json:
        print_json(report)
    else:
        actor_text(ctx, report)


@supervise.command("dead-letters", cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE", required=False)
@click.argument("key", required=False)
@click.option(
    "--requeue",
    "requeue",
    metavar="MESSAGE_ID",
    help="Put this dead letter back at the end of the mailbox (a fresh attempt count).",
)
@json_option
@click.pass_context
@operator_errors
def dead_letters(
    ctx: click.Context,
    type_name: str | None,
    key: str | None,
    requeue: str | None,
    as_json: bool,
) -> None:
    """List the actors holding dead letters; with TYPE KEY, one actor's dead letters with
    their crash records, or requeue one."""
    sup = supervision(ctx)
    if type_name is None or key is None:
        if requeue is not None or type_name is not None:
            raise click.UsageError("give both TYPE and KEY (and --requeue only with them)")
        held = dead_letter_holders(sup)
        cap = sup.settings.max_dead_letters
        if as_json:
            print_json({"actors": [vars(h) for h in held], "max_dead_letters": cap})
        else:
            dead_letter_holders_text(ctx, held, cap)
        return
    ref = actor_ref(sup, type_name, key, must_exist=requeue is not None)
    if requeue is None:
        report = actor_dead_letters(ref)
        if as_json:
            print_json(report)
        else:
            dead_letters_text(ctx, report)
        return
    ref.requeue_dead_letter(requeue)
    left = int(sup.client.llen(ref.keys.dead))
    if as_json:
        print_json({"actor": f"{type_name}:{key}", "requeued": requeue, "dead_letters": left})
    else:
        echo(
            ctx,
            f"requeued {requeue!r} at the end of {type_name}:{key}'s mailbox "
            f"({left} dead letter(s) left)",
        )
