"""The census commands: ``metrics`` (Prometheus), ``actors`` (actors of a type by status,
a page at a time) and ``reindex`` (count actors written before the census existed). None
of them visits every actor: they read the census (``census.py``)."""

from __future__ import annotations

import click
from celery.bin.base import CeleryCommand

from .base import OperatorError, json_option, operator_errors, supervise, supervision
from .render import echo, print_json

__all__ = ["actors", "metrics", "reindex"]


@supervise.command(cls=CeleryCommand)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=9808, show_default=True, type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free one, printed at start).",
)  # fmt: skip
@click.option("--once", is_flag=True, help="Print one scrape to stdout and exit.")
@click.pass_context
@operator_errors
def metrics(ctx: click.Context, host: str, port: int, once: bool) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics (or print one scrape)."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..metrics import exposition, server

    sup = supervision(ctx)
    if once:
        click.echo(exposition(sup.runtime).decode(), nl=False)
        return
    try:
        httpd = server(sup.runtime, host=host, port=port)
    except OSError as exc:
        raise OperatorError(f"cannot listen on {host}:{port}: {exc}") from exc
    echo(ctx, f"serving metrics on http://{host}:{httpd.server_port}/metrics")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@click.option(
    "--status", "status", required=True,
    type=click.Choice(["idle", "active", "backoff", "stopped", "quarantined"]),
    help="List the actors in this status (backoff includes those awaiting a decision).",
)  # fmt: skip
@click.option("--cursor", default=0, type=click.IntRange(min=0), help="From a previous page.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
    help="Most keys to list.",
)  # fmt: skip
@json_option
@click.pass_context
@operator_errors
def actors(
    ctx: click.Context, type_name: str, status: str, cursor: int, limit: int, as_json: bool
) -> None:
    """List the keys of TYPE's actors in one status, a page at a time (no scan)."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..registry import registered
    from ..status import actors_by_status

    sup = supervision(ctx)
    registered(type_name)  # ActorNotRegistered names the known types
    keys, next_cursor = actors_by_status(
        sup.runtime, type_name, status, cursor=cursor, limit=limit
    )
    if as_json:
        print_json({"type": type_name, "status": status, "keys": keys, "cursor": next_cursor})
        return
    for key in keys:
        echo(ctx, key)
    if next_cursor:
        echo(ctx, f"-- more: --cursor {next_cursor}")


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@json_option
@click.pass_context
@operator_errors
def reindex(ctx: click.Context, type_name: str, as_json: bool) -> None:
    """Count TYPE's actors written before the census existed (those the type's index
    lists); an actor already counted is left as it is."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..census import reindex_type
    from ..registry import registered

    sup = supervision(ctx)
    registered(type_name)
    found = reindex_type(sup.runtime, type_name)
    if as_json:
        print_json({"type": type_name, "actors": found})
    else:
        echo(ctx, f"{type_name}: {found} actor(s) counted in the census")
