"""``migrate TYPE [--dry-run]``: upgrade every stored state of TYPE to its ``state_version``
(SPEC 7) while workers keep running. ``--dry-run`` runs every upgrade and lists failures
without writing. Exit code 0 only when no upgrade failed and none was left busy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from celery.bin.base import CeleryCommand

from .base import EXIT_FAILED, json_option, operator_errors, supervise, supervision
from .render import echo, print_json

if TYPE_CHECKING:
    from ..migration import MigrationResult

__all__ = ["migrate"]


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@click.option("--dry-run", "dry_run", is_flag=True,
              help="Run every upgrade and list failures; write nothing.")
@json_option
@click.pass_context
@operator_errors
def migrate(ctx: click.Context, type_name: str, dry_run: bool, as_json: bool) -> None:
    """Upgrade every stored state of TYPE to its state_version, in place."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..migration import migrate_type

    sup = supervision(ctx)
    results = migrate_type(sup.runtime, type_name, dry_run=dry_run)
    if as_json:
        print_json(_json(type_name, results, dry_run))
    else:
        _text(ctx, type_name, results, dry_run)
    if not all(r.ok for r in results):
        ctx.exit(EXIT_FAILED)


def _counts(results: list[MigrationResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts


def _json(type_name: str, results: list[MigrationResult], dry_run: bool) -> dict[str, Any]:
    return {"type": type_name, "dry_run": dry_run, "actors": len(results),
            "counts": _counts(results), "results": [r.as_dict() for r in results]}  # fmt: skip


def _text(ctx: click.Context, type_name: str, results: list[MigrationResult],
          dry_run: bool) -> None:  # fmt: skip
    for r in results:
        if r.outcome == "failed":
            echo(ctx, f"{type_name}:{r.key}  {ctx.obj.style('FAILED', fg='red')}  state "
                      f"version {r.from_version} -> {r.to_version}: {r.error}")  # fmt: skip
        elif r.outcome == "busy":
            echo(ctx, f"{type_name}:{r.key}  busy (a worker held it throughout): run again")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_counts(results).items()))
    tail = " (dry run: nothing written)" if dry_run else ""
    echo(ctx, f"{len(results)} actor(s) of {type_name}: {counts or 'none stored'}{tail}.")
