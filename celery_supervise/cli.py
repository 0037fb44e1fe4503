"""``celery -A proj supervise ...``: the operator's view of the supervision tree (SPEC 5).

Installed through Celery's ``celery.commands`` entry point group, so *every* ``celery``
command imports this module: importing it does nothing but define the click commands. The
runtime (Redis, the tick, the tree shell) is reached only inside a subcommand.

Nothing here scans Redis: ``status`` reads the supervisors' own keys, the static children
named in the specs, and the capped events stream; per-actor detail is ``actor TYPE KEY``.
Every subcommand takes ``--json``. Errors a user can cause (unknown type or supervisor, bad
key, Redis down, app without ``Supervision(app)``) end with a one-line message on stderr and
a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
from celery.bin.base import CeleryCommand, handle_preload_options

from .codec import text

if TYPE_CHECKING:
    from .ref import ActorRef
    from .supervision import Supervision

__all__ = ["supervise"]

#: Decisions shown by ``status`` (newest of the capped events stream).
EVENTS_SHOWN = 20
#: Restarts listed per supervisor by ``status``.
RESTARTS_SHOWN = 5
#: Flagged (stopped/crashed/quarantined) actors listed per supervisor by ``status``.
FLAGGED_SHOWN = 20
#: Longest state printed in text form; ``--json`` always has all of it.
STATE_SHOWN_CHARS = 2000
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
    import redis
    from kombu.exceptions import OperationalError

    from .errors import RedisUnavailable, SuperviseError

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


def _operator_errors(fn: Callable[P, R]) -> Callable[P, R]:
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


def _supervision(ctx: click.Context) -> Supervision:
    """celery_supervise as installed on the app given by ``celery -A``."""
    from kombu.utils.url import maybe_sanitize_url

    from .supervision import Supervision

    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise OperatorError("run this as `celery -A proj supervise ...`")
    # Actor types live in the project's task modules (Django's autodiscovery among them);
    # ``celery worker`` imports them the same way before it starts.
    app.loader.import_default_modules()
    sup = Supervision.for_app(app)
    ctx.meta["supervise.redis_url"] = maybe_sanitize_url(sup.settings.redis_url)
    # One round trip up front: an unreachable Redis is reported the same way by every
    # command (the tick, for one, would only log it and skip).
    sup.client.ping()
    return sup


def _actor(sup: Supervision, type_name: str, key: str, *, must_exist: bool) -> ActorRef:
    ref = sup.ref(type_name, key)
    if must_exist and not sup.client.exists(ref.keys.meta):
        raise OperatorError(
            f"actor {type_name}:{key} does not exist (it exists once it has received a message)"
        )
    return ref


# -- output ----------------------------------------------------------------------------------
def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _echo(ctx: click.Context, text: str = "") -> None:
    ctx.obj.echo(text)


def _style(ctx: click.Context, text: str, **styles: Any) -> str:
    return str(ctx.obj.style(text, **styles))


_STATUS_COLORS = {
    "running": "green",
    "idle": "green",
    "active": "cyan",
    "backoff": "yellow",
    "stopped": "red",
    "quarantined": "red",
}


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


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


# -- the group ---------------------------------------------------------------------------------
@click.group(name="supervise")
@click.pass_context
@handle_preload_options  # type: ignore[untyped-decorator]  # celery.bin has no type hints
def supervise(ctx: click.Context, **kwargs: Any) -> None:
    """Operate celery_supervise: the supervision tree, actors, dead letters and ticks."""


# -- status ------------------------------------------------------------------------------------
def status_report(sup: Supervision) -> dict[str, Any]:
    """What ``supervise status`` shows, without scanning any key space."""
    from .registry import all_types
    from .specs import is_actor_child, split_actor_child

    tree, ks, client = sup.tree, sup.keyspace, sup.client
    names = tree.names()
    types_by_sup: dict[str, list[str]] = {}
    unplaced: list[str] = []
    for type_name, atype in sorted(all_types().items()):
        if atype.supervisor in tree:
            types_by_sup.setdefault(atype.supervisor, []).append(type_name)
        else:
            unplaced.append(type_name)
    actor_children = [c for n in names for c in tree.static_children(n) if is_actor_child(c)]

    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(ks.supervisor(name))
        pipe.zrange(ks.supervisor_history(name), 0, -1, withscores=True)
        pipe.scard(ks.supervisor_members(name))
        pipe.srandmember(ks.supervisor_members(name), FLAGGED_SHOWN)
    for child in actor_children:
        pipe.hget(ks.actor(*split_actor_child(child)).meta, "status")
    pipe.xrevrange(ks.events, count=EVENTS_SHOWN)
    pipe.exists(ks.tick_lock)
    results = pipe.execute()
    now = time.time()

    from .ref import public_status

    child_status = {
        child: public_status(text(raw)) if raw is not None else "absent"
        for child, raw in zip(actor_children, results[4 * len(names) : -2], strict=True)
    }
    supervisors = []
    for i, name in enumerate(names):
        raw_hash, history, flagged_count, flagged = results[4 * i : 4 * i + 4]
        fields = {text(k): text(v) for k, v in raw_hash.items()}
        spec = tree.spec(name)
        restarts: list[dict[str, Any]] = []
        in_period = 0
        for member, score in history:
            exit_id, _, child = text(member).partition("\n")
            restarts.append({"exit_id": exit_id, "child": child, "at": float(score)})
            in_period += float(score) >= now - spec.period
        depth, parent = 0, spec.parent
        while parent is not None:
            depth, parent = depth + 1, tree.parent(parent)
        supervisors.append(
            {
                "name": name,
                "parent": spec.parent,
                "depth": depth,
                "status": fields.get("status", "running"),
                "reason": fields.get("reason"),
                "strategy": spec.strategy,
                "intensity": spec.intensity,
                "period": spec.period,
                "on_limit": spec.on_limit,
                "max_consecutive_crashes": spec.max_consecutive_crashes,
                "backoff": vars(spec.backoff),
                "children": [
                    {"child": c, "kind": "actor", "status": child_status[c]}
                    if is_actor_child(c)
                    else {"child": c, "kind": "supervisor"}
                    for c in tree.static_children(name)
                ],
                "actor_types": types_by_sup.get(name, []),
                "restarts": {
                    "in_period": in_period,
                    "kept": len(restarts),
                    "recent": restarts[-RESTARTS_SHOWN:][::-1],
                },
                "flagged": {
                    "count": int(flagged_count),
                    "shown": sorted(text(m) for m in flagged),
                },
            }
        )
    events = []
    for entry_id, entry in reversed(results[-2]):
        record = json.loads(text(entry.get(b"event", b"{}")))
        stream_id = text(entry_id)
        events.append({"id": stream_id, "at": int(stream_id.split("-")[0]) / 1000, **record})
    return {
        "key_prefix": ks.prefix,
        "tick_interval": sup.settings.tick_interval,
        "tick_running": bool(results[-1]),
        "now": now,
        "supervisors": supervisors,
        "unplaced_types": unplaced,
        "recent_events": events,
    }


def _print_status(ctx: click.Context, report: dict[str, Any]) -> None:
    now = report["now"]
    tick = "a tick is running now" if report["tick_running"] else "no tick running now"
    _echo(
        ctx,
        f"Supervision tree (key prefix {report['key_prefix']!r}, tick every "
        f"{report['tick_interval']:g} s; {tick})",
    )
    for node in report["supervisors"]:
        pad = "    " * node["depth"]
        # A running supervisor's reason is only its last transition ("operator resume").
        halted = node["reason"] and node["status"] != "running"
        reason = f" ({node['reason']})" if halted else ""
        _echo(ctx)
        _echo(
            ctx,
            f"{pad}{_style(ctx, node['name'], bold=True)}  {_status(ctx, node['status'])}{reason}",
        )
        pad += "  "
        _echo(
            ctx,
            f"{pad}{node['strategy']}, intensity {node['intensity']} per {node['period']:g} s, "
            f"on_limit {node['on_limit']}, max_consecutive_crashes "
            f"{node['max_consecutive_crashes']}",
        )
        restarts = node["restarts"]
        line = f"{pad}restarts: {restarts['in_period']} in the last {node['period']:g} s"
        _echo(ctx, line + (f" ({restarts['kept']} kept)" if restarts["kept"] else ""))
        for r in restarts["recent"]:
            _echo(ctx, f"{pad}  {_when(r['at'], now)}  {r['child']}  (exit {r['exit_id']})")
        types = ", ".join(node["actor_types"]) or "(none)"
        _echo(ctx, f"{pad}actor types: {types}")
        if node["children"]:
            _echo(ctx, f"{pad}static children:")
            for c in node["children"]:
                what = _status(ctx, c["status"]) if c["kind"] == "actor" else "supervisor"
                _echo(ctx, f"{pad}  {c['child']}  {what}")
        flagged = node["flagged"]
        if flagged["count"]:
            more = (
                f" (showing {len(flagged['shown'])})"
                if flagged["count"] > len(flagged["shown"])
                else ""
            )
            _echo(ctx, f"{pad}stopped/crashed/quarantined actors: {flagged['count']}{more}")
            for member in flagged["shown"]:
                _echo(ctx, f"{pad}  {member}")
    if report["unplaced_types"]:
        _echo(ctx)
        _echo(
            ctx,
            "actor types whose supervisor is not in the tree: "
            + ", ".join(report["unplaced_types"]),
        )
    _echo(ctx)
    events = report["recent_events"]
    _echo(
        ctx, f"Recent decisions ({len(events)}, oldest first):" if events else "No decisions yet."
    )
    for event in events:
        # Nested values (a decision's restart record) and repeats are in --json.
        details = " ".join(
            f"{k}={_compact(v, 60)}"
            for k, v in event.items()
            if k not in ("id", "at", "event")
            and v is not None
            and not isinstance(v, dict | list)
            and not (k == "cause_exit_id" and v == event.get("exit_id"))
        )
        _echo(
            ctx, f"  {_when(event['at'], now)}  {_style(ctx, event['event'], bold=True)}  {details}"
        )


@supervise.command(cls=CeleryCommand)
@json_option
@click.pass_context
@_operator_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the supervision tree, restart histories and recent decisions."""
    report = status_report(_supervision(ctx))
    if as_json:
        _print_json(report)
    else:
        _print_status(ctx, report)


# -- one actor ---------------------------------------------------------------------------------
def actor_report(sup: Supervision, ref: ActorRef, history: int) -> dict[str, Any]:
    from .registry import registered

    atype = registered(ref.type_name)
    exists = bool(sup.client.exists(ref.keys.meta))
    snap = ref.snapshot()
    versions = ref.history()[:history] if history else []
    supervisor = atype.supervisor
    if supervisor in sup.tree:  # else the type names a supervisor this process never declared
        supervisor = sup.tree.supervisor_of_actor(f"{ref.type_name}:{ref.key}", supervisor)
    return {
        "type": ref.type_name,
        "key": ref.key,
        "exists": exists,
        "supervisor": supervisor,
        "status": snap.status,
        "halt_reason": snap.halt_reason,
        "version": snap.version,
        "pending": snap.pending,
        "consecutive_crashes": snap.consecutive_crashes,
        "last_crash": snap.last_crash,
        "state": snap.state,
        "dead_letters": int(sup.client.llen(ref.keys.dead)),
        "history": [vars(h) for h in versions],
    }


def _describe_crash(crash: dict[str, Any], now: float) -> str:
    return (
        f"{crash.get('type')}: {_compact(crash.get('message'), 120)} (attempt "
        f"{crash.get('attempt')}, worker {crash.get('worker')}, {_when(crash.get('time'), now)})"
    )


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
@_operator_errors
def actor(ctx: click.Context, type_name: str, key: str, history: int, as_json: bool) -> None:
    """Show one actor: state, version, status, mailbox, crashes, history."""
    sup = _supervision(ctx)
    report = actor_report(sup, _actor(sup, type_name, key, must_exist=False), history)
    if as_json:
        _print_json(report)
        return
    now = time.time()
    _echo(
        ctx, f"{_style(ctx, f'{type_name}:{key}', bold=True)}  (supervisor {report['supervisor']})"
    )
    if not report["exists"]:
        _echo(ctx, "  no such actor yet: it exists once it has received a message")
        return
    reason = f" ({report['halt_reason']})" if report["halt_reason"] else ""
    _echo(ctx, f"  status               {_status(ctx, report['status'])}{reason}")
    _echo(ctx, f"  version              {report['version']}")
    _echo(ctx, f"  pending messages     {report['pending']}")
    _echo(ctx, f"  consecutive crashes  {report['consecutive_crashes']}")
    _echo(ctx, f"  dead letters         {report['dead_letters']}")
    last = report["last_crash"]
    _echo(ctx, f"  last crash           {_describe_crash(last, now) if last else '-'}")
    state = json.dumps(report["state"], indent=2, sort_keys=True, default=str)
    if len(state) > STATE_SHOWN_CHARS:
        state = state[:STATE_SHOWN_CHARS] + "\n... (truncated; --json shows all of it)"
    _echo(ctx, "  state:")
    for line in state.splitlines():
        _echo(ctx, f"    {line}")
    if report["history"]:
        _echo(ctx, "  history (newest first):")
        for h in report["history"]:
            how = "reset to initial state" if h["reset"] else f"message {h['message_id']}"
            _echo(ctx, f"    v{h['version']}  {_when(h['at'], now)}  {how}")


# -- dead letters ------------------------------------------------------------------------------
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
@_operator_errors
def dead_letters(
    ctx: click.Context,
    type_name: str | None,
    key: str | None,
    requeue: str | None,
    as_json: bool,
) -> None:
    """List the actors holding dead letters; with TYPE KEY, one actor's dead letters with
    their crash records, or requeue one."""
    from .delivery import Delivery

    sup = _supervision(ctx)
    if type_name is None or key is None:
        if requeue is not None or type_name is not None:
            raise click.UsageError("give both TYPE and KEY (and --requeue only with them)")
        held = Delivery(sup.runtime).actors_with_dead_letters()
        if as_json:
            _print_json({"actors": [{"type": t, "key": k, "dead_letters": n} for t, k, n in held]})
            return
        _echo(ctx, f"{len(held)} actor(s) hold dead letters")
        for t, k, n in held:
            _echo(ctx, f"  {t} {k}: {n}")
        if held:
            _echo(ctx, "(details: supervise dead-letters TYPE KEY)")
        return
    ref = _actor(sup, type_name, key, must_exist=requeue is not None)
    if requeue is not None:
        ref.requeue_dead_letter(requeue)
        left = int(sup.client.llen(ref.keys.dead))
        if as_json:
            _print_json({"actor": f"{type_name}:{key}", "requeued": requeue, "dead_letters": left})
        else:
            _echo(
                ctx,
                f"requeued {requeue!r} at the end of {type_name}:{key}'s mailbox "
                f"({left} dead letter(s) left)",
            )
        return
    letters = ref.dead_letters()
    if as_json:
        _print_json({"actor": f"{type_name}:{key}", "dead_letters": [vars(d) for d in letters]})
        return
    now = time.time()
    _echo(ctx, f"{type_name}:{key}: {len(letters)} dead letter(s)")
    for d in letters:
        _echo(ctx)
        _echo(ctx, f"- message {d.message_id}  (seq {d.seq})")
        _echo(ctx, f"    sent {_when(d.sent_at, now)}, dead-lettered {_when(d.dead_at, now)}")
        _echo(ctx, f"    message: {_compact(d.message, 200)}")
        for i, crash in enumerate(d.crashes, 1):
            _echo(ctx, f"    crash {i}: {_describe_crash(crash, now)}")
    if letters:
        _echo(ctx)
        _echo(ctx, "(tracebacks: --json; requeue one: --requeue MESSAGE_ID)")


# -- operating ---------------------------------------------------------------------------------
@supervise.command(cls=CeleryCommand)
@click.argument("target")
@json_option
@click.pass_context
@_operator_errors
def resume(ctx: click.Context, target: str, as_json: bool) -> None:
    """Resume a stopped or quarantined actor (TYPE:KEY) or supervisor (NAME)."""
    from .specs import is_actor_child, split_actor_child

    sup = _supervision(ctx)
    if is_actor_child(target):
        ref = _actor(sup, *split_actor_child(target), must_exist=True)
        outcome = ref.resume()
        snap = ref.snapshot()
        result: dict[str, Any] = {
            "target": target,
            "kind": "actor",
            "outcome": "skipped" if outcome == "skip" else "resumed",
            "status": snap.status,
            "version": snap.version,
        }
        text = (
            f"{target} is {snap.status}, not stopped or quarantined: nothing to resume"
            if outcome == "skip"
            else f"resumed {target} from its last good state: now {snap.status}, "
            f"version {snap.version}"
        )
    else:
        from .operations import resume_supervisor

        subtree = list(sup.tree.subtree(target))  # ConfigurationError names the known ones
        pipe = sup.client.pipeline(transaction=False)
        for name in subtree:
            pipe.scard(sup.keyspace.supervisor_members(name))
        flagged = sum(int(n) for n in pipe.execute())
        resume_supervisor(sup.runtime, target)
        result = {
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
    if as_json:
        _print_json(result)
    else:
        _echo(ctx, text)


@supervise.command(cls=CeleryCommand)
@click.argument("type_name", metavar="TYPE")
@click.argument("key")
@click.option("--reset", is_flag=True, help="Restart from the initial state (recovery reset).")
@json_option
@click.pass_context
@_operator_errors
def restart(ctx: click.Context, type_name: str, key: str, reset: bool, as_json: bool) -> None:
    """Restart an actor now, from its last good state or (--reset) its initial state."""
    from .registry import registered

    sup = _supervision(ctx)
    ref = _actor(sup, type_name, key, must_exist=True)
    recovery = "reset" if reset else registered(type_name).recovery
    outcome = ref.restart(recovery="reset" if reset else None)
    snap = ref.snapshot()
    if as_json:
        _print_json(
            {
                "actor": f"{type_name}:{key}",
                "recovery": recovery,
                "outcome": "skipped" if outcome == "skip" else "restarted",
                "status": snap.status,
                "version": snap.version,
            }
        )
    elif outcome == "skip":
        _echo(
            ctx,
            f"{type_name}:{key} is {snap.status}: a {recovery} restart applies only to a "
            f"halted actor (stopped, quarantined, backoff); --reset restarts any actor",
        )
    else:
        _echo(
            ctx,
            f"restarted {type_name}:{key} ({recovery}): now {snap.status}, version {snap.version}",
        )


@supervise.command(cls=CeleryCommand)
@json_option
@click.pass_context
@_operator_errors
def tick(ctx: click.Context, as_json: bool) -> None:
    """Run one supervisor tick in this process and print its summary."""
    from .tick import run_tick

    summary = run_tick(_supervision(ctx).runtime)
    if "redis" in str(summary.get("skipped", "")).lower():  # Redis went away mid-tick
        raise Unavailable(f"tick skipped: {summary['skipped']}")
    if as_json:
        _print_json(summary)
    elif "skipped" in summary:
        _echo(ctx, f"tick skipped: {summary['skipped']}")
    else:
        ms = summary.pop("ms", 0)
        decisions = summary.pop("decisions", [])
        visited = sum(summary.values())
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary.items()))
        _echo(
            ctx,
            f"tick: {visited} due actor(s) visited"
            + (f" ({outcomes})" if outcomes else "")
            + f" in {ms} ms",
        )
        for decision in decisions:
            _echo(ctx, "  " + json.dumps(decision, sort_keys=True, default=str))
