"""Printing: a result as ``--json`` or as text for a terminal (colours follow Celery's
``--no-color``, through the ``CLIContext`` that ``celery`` puts in ``ctx.obj``)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import time
from typing import TYPE_CHECKING, Any

import click

from .queries import ActorChild

if TYPE_CHECKING:
    from ..doctor import Finding
    from .queries import (
        ActorDeadLetters,
        ActorReport,
        DeadLetterHolder,
        Flagged,
        SupervisorStatus,
        TreeStatus,
    )

__all__ = [
    "actor_text",
    "dead_letter_holders_text",
    "dead_letters_text",
    "doctor_text",
    "echo",
    "print_json",
    "status_text",
    "tick_text",
]

#: Longest state printed in text form; ``--json`` always has all of it.
STATE_SHOWN_CHARS = 2000

_STATUS_COLORS = {
    "running": "green",
    "idle": "green",
    "active": "cyan",
    "backoff": "yellow",
    "stopped": "red",
    "quarantined": "red",
}
_VERDICT_COLORS = {"ok": "green", "warn": "yellow", "problem": "red"}


def print_json(data: Any) -> None:
    """``data`` (a dataclass from ``queries`` or plain JSON data) as indented JSON."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def echo(ctx: click.Context, text: str = "") -> None:
    ctx.obj.echo(text)


def _style(ctx: click.Context, text: str, **styles: Any) -> str:
    return str(ctx.obj.style(text, **styles))


def _status(ctx: click.Context, status: str) -> str:
    return _style(ctx, status, fg=_STATUS_COLORS.get(status, "white"), bold=True)


def _when(at: float | None, now: float | None = None) -> str:
    if not at:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    ago = max(0.0, (now or time.time()) - at)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if ago >= size:
            return f"{stamp} ({int(ago // size)}{unit} ago)"
    return f"{stamp} ({ago:.0f}s ago)"


def _compact(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_crash(crash: dict[str, Any], now: float) -> str:
    return (
        f"{crash.get('type')}: {_compact(crash.get('message'), 120)} (attempt "
        f"{crash.get('attempt')}, worker {crash.get('worker')}, {_when(crash.get('time'), now)})"
    )


def status_text(ctx: click.Context, report: TreeStatus) -> None:
    tick = "a tick is running now" if report.tick_running else "no tick running now"
    echo(
        ctx,
        f"Supervision tree (key prefix {report.key_prefix!r}, tick every "
        f"{report.tick_interval:g} s; {tick})",
    )
    for node in report.supervisors:
        _supervisor_text(ctx, node, report.now)
    if report.unplaced_types:
        echo(ctx)
        echo(
            ctx,
            "actor types whose supervisor is not in the tree: " + ", ".join(report.unplaced_types),
        )
    echo(ctx)
    _events_text(ctx, report.recent_events, report.now)


def _supervisor_text(ctx: click.Context, node: SupervisorStatus, now: float) -> None:
    """One supervisor's block, indented by its depth in the tree."""
    pad = "    " * node.depth
    # A running supervisor's reason is only its last transition ("operator resume").
    halted = node.reason and node.status != "running"
    reason = f" ({node.reason})" if halted else ""
    echo(ctx)
    echo(ctx, f"{pad}{_style(ctx, node.name, bold=True)}  {_status(ctx, node.status)}{reason}")
    pad += "  "
    echo(
        ctx,
        f"{pad}{node.strategy}, intensity {node.intensity} per {node.period:g} s, "
        f"on_limit {node.on_limit}, max_consecutive_crashes "
        f"{node.max_consecutive_crashes}",
    )
    _restarts_text(ctx, node, pad, now)
    types = ", ".join(node.actor_types) or "(none)"
    echo(ctx, f"{pad}actor types: {types}")
    if node.children:
        echo(ctx, f"{pad}static children:")
        for c in node.children:
            what = _status(ctx, c.status) if isinstance(c, ActorChild) else "supervisor"
            echo(ctx, f"{pad}  {c.child}  {what}")
    _actors_text(ctx, node.actors, pad)
    _flagged_text(ctx, node.flagged, pad)


def _actors_text(ctx: click.Context, actors: dict[str, int], pad: str) -> None:
    counted = ", ".join(f"{n} {status}" for status, n in actors.items() if n)
    if counted:
        echo(ctx, f"{pad}actors: {counted}")


def _restarts_text(ctx: click.Context, node: SupervisorStatus, pad: str, now: float) -> None:
    restarts = node.restarts
    line = f"{pad}restarts: {restarts.in_period} in the last {node.period:g} s"
    echo(ctx, line + (f" ({restarts.kept} kept)" if restarts.kept else ""))
    for r in restarts.recent:
        echo(ctx, f"{pad}  {_when(r.at, now)}  {r.child}  (exit {r.exit_id})")


def _flagged_text(ctx: click.Context, flagged: Flagged, pad: str) -> None:
    if flagged.count:
        more = f" (showing {len(flagged.shown)})" if flagged.count > len(flagged.shown) else ""
        quarantined = f", {flagged.quarantined} quarantined" if flagged.quarantined else ""
        echo(ctx, f"{pad}stopped/crashed/quarantined actors: {flagged.count}{quarantined}{more}")
        for member in flagged.shown:
            echo(ctx, f"{pad}  {member}")


def _events_text(ctx: click.Context, events: list[dict[str, Any]], now: float) -> None:
    echo(ctx, f"Recent decisions ({len(events)}, oldest first):" if events else "No decisions yet.")
    for event in events:
        kind = _style(ctx, event["event"], bold=True)
        echo(ctx, f"  {_when(event['at'], now)}  {kind}  {_event_details(event)}")


def _event_details(event: dict[str, Any]) -> str:
    """An event's flat fields as ``key=value``, past its id, time and kind."""
    # Nested values (a decision's restart record) and repeats are in --json.
    return " ".join(
        f"{k}={_compact(v, 60)}"
        for k, v in event.items()
        if k not in ("id", "at", "event")
        and v is not None
        and not isinstance(v, dict | list)
        and not (k == "cause_exit_id" and v == event.get("exit_id"))
    )


def actor_text(ctx: click.Context, report: ActorReport) -> None:
    now = time.time()
    name = f"{report.type}:{report.key}"
    echo(ctx, f"{_style(ctx, name, bold=True)}  (supervisor {report.supervisor})")
    if not report.exists:
        echo(ctx, "  no such actor yet: it exists once it has received a message")
        return
    reason = f" ({report.halt_reason})" if report.halt_reason else ""
    echo(ctx, f"  status               {_status(ctx, report.status)}{reason}")
    echo(ctx, f"  version              {report.version}")
    echo(ctx, f"  pending messages     {report.pending}")
    echo(ctx, f"  consecutive crashes  {report.consecutive_crashes}")
    echo(ctx, f"  dead letters         {report.dead_letters}")
    echo(ctx, f"  undelivered effects  {report.undeliverable}")
    for u in report.undeliverable_effects:
        what = f"{u.kind} to {u.target}" if u.target else "unreadable outbox entry"
        echo(ctx, f"    {_when(u.at, now)}  {what}: {_compact(u.error, 120)}")
    _timers_text(ctx, report, now)
    last = report.last_crash
    echo(ctx, f"  last crash           {_describe_crash(last, now) if last else '-'}")
    state = json.dumps(report.state, indent=2, sort_keys=True, default=str)
    if len(state) > STATE_SHOWN_CHARS:
        state = state[:STATE_SHOWN_CHARS] + "\n... (truncated; --json shows all of it)"
    echo(ctx, "  state:")
    for line in state.splitlines():
        echo(ctx, f"    {line}")
    if report.history:
        echo(ctx, "  history (newest first):")
        for h in report.history:
            how = "reset to initial state" if h.reset else f"message {h.message_id}"
            echo(ctx, f"    v{h.version}  {_when(h.at, now)}  {how}")


def _timers_text(ctx: click.Context, report: ActorReport, now: float) -> None:
    echo(ctx, f"  timers               {len(report.timers)}")
    for t in report.timers:
        label = t.name if t.name is not None else "(unnamed)"
        every = f"  every {t.every:g} s" if t.every is not None else ""
        echo(ctx, f"    {label}{every}  due {_due(t.due_at, now)}: {_compact(t.message)}")


def _due(at: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return f"{stamp} (in {max(0.0, at - now):.0f}s)"


def dead_letter_holders_text(ctx: click.Context, held: list[DeadLetterHolder], cap: int) -> None:
    full = sum(1 for h in held if h.quarantined)
    echo(
        ctx,
        f"{len(held)} actor(s) hold dead letters (at most {cap} each: supervise_max_dead_letters)",
    )
    for h in held:
        note = ""
        if h.full:
            note = " (full: quarantined, dead_letters_full)" if h.quarantined else " (full)"
        echo(ctx, f"  {h.type} {h.key}: {h.dead_letters}{note}")
    if full:
        echo(ctx, f"{full} actor(s) quarantined: dead_letters_full (requeue, then resume)")
    if held:
        echo(ctx, "(details: supervise dead-letters TYPE KEY)")


def dead_letters_text(ctx: click.Context, report: ActorDeadLetters) -> None:
    now = time.time()
    letters = report.dead_letters
    echo(ctx, f"{report.actor}: {len(letters)} dead letter(s)")
    for d in letters:
        echo(ctx)
        echo(ctx, f"- message {d.message_id}  (seq {d.seq})")
        echo(ctx, f"    sent {_when(d.sent_at, now)}, dead-lettered {_when(d.dead_at, now)}")
        echo(ctx, f"    message: {_compact(d.message, 200)}")
        for i, crash in enumerate(d.crashes, 1):
            echo(ctx, f"    crash {i}: {_describe_crash(crash, now)}")
    if letters:
        echo(ctx)
        echo(ctx, "(tracebacks: --json; requeue one: --requeue MESSAGE_ID)")


def tick_text(ctx: click.Context, summary: dict[str, Any]) -> None:
    """One line for ``run_tick``'s summary, then one JSON line per decision it took."""
    if "skipped" in summary:
        echo(ctx, f"tick skipped: {summary['skipped']}")
        return
    counts = dict(summary)
    ms = counts.pop("ms", 0)
    decisions = counts.pop("decisions", [])
    counts.pop("groups", None)  # which bucket groups it visited: all four unless handed
    handed = counts.pop("handed", [])
    visited = sum(counts.values())
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    echo(
        ctx,
        f"tick: {visited} due actor(s) visited"
        + (f" ({outcomes})" if outcomes else "")
        + f" in {ms} ms"
        + (f"; groups {', '.join(map(str, handed))} handed to group ticks" if handed else ""),
    )
    for decision in decisions:
        echo(ctx, "  " + json.dumps(decision, sort_keys=True, default=str))


def doctor_text(ctx: click.Context, findings: list[Finding]) -> None:
    """A table: check, verdict, what to do (long messages wrapped under the message column);
    then the count of problems and warnings."""
    width = max(len(f.name) for f in findings)
    indent = width + 2 + 9
    for f in findings:
        verdict = _style(ctx, f"{f.status:<7}", fg=_VERDICT_COLORS[f.status], bold=True)
        lines = textwrap.wrap(f.message, width=max(40, 100 - indent)) or [""]
        echo(ctx, f"{f.name:<{width}}  {verdict}  {lines[0]}")
        for line in lines[1:]:
            echo(ctx, " " * indent + line)
    problems = sum(f.status == "problem" for f in findings)
    warnings = sum(f.status == "warn" for f in findings)
    echo(ctx)
    echo(ctx, f"{problems} problem(s), {warnings} warning(s)")
