"""``doctor``: is the deployment set up so the guarantees hold (``celery_supervise.doctor``)?
Exit code 1 when a check finds a problem; warnings alone exit 0."""

from __future__ import annotations

import click
from celery.bin.base import CeleryCommand

from .base import EXIT_FAILED, json_option, operator_errors, supervise, supervision
from .render import doctor_text, echo, print_json

__all__ = ["doctor"]


@supervise.command(cls=CeleryCommand)
@click.option(
    "--timeout",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for the workers' answer (Celery's inspect active_queues).",
)
@json_option
@click.pass_context
@operator_errors
def doctor(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """Check Redis persistence, eviction, the ACL, the scripts, clock skew, the tick (beat),
    the workers on the actor queues and memory per actor; exit 1 on a problem."""
    # Imported here, not at the top: every `celery` command imports this package.
    from ..doctor import diagnose
    from ..supervision import TICK_TASK

    sup = supervision(ctx)
    findings = diagnose(sup.runtime, sup.app, tick_task=TICK_TASK, timeout=timeout)
    problems = [f for f in findings if f.status == "problem"]
    where = {"redis_url": ctx.meta["supervise.redis_url"], "key_prefix": sup.settings.key_prefix}
    if as_json:
        print_json({
            **where,
            "checks": [vars(f) for f in findings],
            "problems": len(problems),
            "warnings": sum(f.status == "warn" for f in findings),
        })  # fmt: skip
    else:
        echo(ctx, f"Redis at {where['redis_url']}, key prefix {where['key_prefix']!r}")
        echo(ctx)
        doctor_text(ctx, findings)
    if problems:
        ctx.exit(EXIT_FAILED)
