"""Replay before release (SPEC 7): run this process's handler on a copy of a quarantined
actor's committed state and its mailbox head (or one dead letter), write nothing, report
what the step would do; then release only what the replay proved.

A replay reads the actor in one round trip and steps the copy with the runner's own step
(``runner.step_on_copy``), so what it reports is what a worker running this code would
commit: the new state, ``validate``'s verdict, the effects it asks of ``ctx`` -- recorded,
never performed -- or the exception. Code outside ``ctx`` (a direct HTTP call) does run:
``ctx.replaying`` lets a handler tell.

Releasing is fenced: the resume compares the actor's status, token, version and crash
sequence number with what the replay read (``restart.lua``'s fence), the requeue the
committed version and the letter itself (``requeue.lua``), so a replay that raced a change
releases nothing.
"""

from __future__ import annotations

import difflib
import json
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .codec import decode, encode, text
from .context import Context
from .errors import CorruptActorData, InvalidMessage, NotQuarantined, UnknownDeadLetter
from .keyspace import ActorKeys, parse_actor_member
from .mailbox import Entry, header_json
from .operations import restart_actor
from .registry import ActorSpec, registered
from .runner import TimeLimitExceeded, crash_reason, step_on_copy
from .runtime import Runtime, redis_errors
from .store import ActorStore, fence_of, text_dict
from .tracing import carrier

__all__ = [
    "DEFAULT_TIMEOUT",
    "ReplayEffects",
    "ReplayResult",
    "quarantined_keys",
    "release",
    "replay_actor",
    "replay_type",
]

#: Longest a replayed step may run (seconds) when its type has no ``time_limit`` and no
#: ``timeout`` is given: a handler that loops forever must not hang the operator's shell.
DEFAULT_TIMEOUT = 60.0

Source = Literal["mailbox", "dead_letter"]
Released = Literal["resumed", "requeued", "failed", "changed", "gone"]
T = TypeVar("T")


@dataclass(frozen=True)
class ReplayEffects:
    """What the replayed step asked of ``ctx``; none of it was performed."""

    #: ``{"to": "TYPE:KEY", "message": ...}`` per ``ctx.send``.
    sends: tuple[dict[str, Any], ...] = ()
    #: The value of ``ctx.reply``, if called.
    replies: tuple[Any, ...] = ()
    #: ``{"tag", "task", "args", "kwargs", "timeout", "options"}`` per ``ctx.isolate``.
    isolates: tuple[dict[str, Any], ...] = ()
    #: ``{"after": seconds, "message": ...}`` per ``ctx.send_after``; with ``"name"`` and
    #: ``"every"`` too for a named one (the last one set per name).
    timers: tuple[dict[str, Any], ...] = ()
    #: ``ctx.stop()`` was called.
    stop: bool = False
    #: Names passed to ``ctx.cancel_timer`` (and not set again after it).
    cancelled_timers: tuple[str, ...] = ()

    @classmethod
    def of(cls, ctx: Context) -> ReplayEffects:
        e = ctx.effects
        return cls(
            sends=tuple({"to": f"{t}:{k}", "message": json.loads(b)} for t, k, b in e.sends),
            replies=tuple(json.loads(b) for b in e.replies),
            isolates=tuple(dict(spec) for spec in e.isolates),
            timers=tuple({"after": s, "message": json.loads(b)} for s, b in e.timers)
            + tuple(
                {"after": t.delay, "message": json.loads(t.body), "name": n, "every": t.every}
                for n, t in e.named_timers.items()
                if t is not None
            ),
            stop=e.stop,
            cancelled_timers=tuple(n for n, t in e.named_timers.items() if t is None),
        )


@dataclass(frozen=True)
class ReplayResult:
    """One actor's replay: would its step commit, and what would it do."""

    type: str
    key: str
    #: "mailbox" (its head message; released by a resume) or "dead_letter" (one dead
    #: letter; released by a requeue).
    source: Source
    #: The replayed message's id and body; None for a quarantined actor with an empty
    #: mailbox (then only its state is checked against ``validate``).
    message_id: str | None
    message: Any
    #: The committed version and state the copy was taken at.
    version: int
    state: Any
    #: True: the step would commit (``release`` would let it).
    ok: bool
    #: The state it would commit (None if it crashed).
    new_state: Any = None
    #: ``validate``'s verdict on the new state: True, False, or None when not reached.
    valid: bool | None = None
    #: The crash reason when not ``ok``: exception, invalid_state, unserializable_state,
    #: state_too_large, time_limit, corrupt_data.
    reason: str | None = None
    #: ``{"type", "message", "traceback"}`` of the exception when not ``ok``.
    error: dict[str, Any] | None = None
    effects: ReplayEffects = ReplayEffects()
    #: What the release compares (``store.fence_of``; for a dead letter the letter itself).
    fence: str = field(default="", repr=False)
    letter: bytes | None = field(default=None, repr=False)
    seq: int = field(default=0, repr=False)

    @property
    def diff(self) -> list[str]:
        """The state change as unified-diff lines of indented JSON ([] if none or crashed)."""
        if not self.ok:
            return []
        before, after = (_pretty(s).splitlines() for s in (self.state, self.new_state))
        lines = difflib.unified_diff(before, after, "state", "new state", lineterm="")
        return list(lines)

    def as_dict(self) -> dict[str, Any]:
        """What ``supervise replay --json`` prints for this actor."""
        return {
            "actor": f"{self.type}:{self.key}",
            "source": self.source,
            "message_id": self.message_id,
            "message": self.message,
            "version": self.version,
            "ok": self.ok,
            "state": self.state,
            "new_state": self.new_state,
            "valid": self.valid,
            "reason": self.reason,
            "error": self.error,
            "effects": {
                "sends": list(self.effects.sends),
                "replies": list(self.effects.replies),
                "isolates": list(self.effects.isolates),
                "timers": list(self.effects.timers),
                "stop": self.effects.stop,
            },
        }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class _Copy:
    """The actor as one round trip read it."""

    meta: dict[str, str]
    state_raw: bytes
    version: int
    entry: Entry | None
    attempt: int
    source: Source
    letter: bytes | None = None


# -- reading the copy -------------------------------------------------------------------------
def _read(
    rt: Runtime, keys: ActorKeys, with_dead: bool
) -> tuple[dict[str, str], Any, list[Any]]:
    """(meta, mailbox head, dead letters if ``with_dead``) in one round trip."""
    where = f"actor {keys.type_name}:{keys.key}"
    pipe = rt.client.pipeline(transaction=False)
    pipe.hgetall(keys.meta)
    pipe.lindex(keys.mailbox, 0)
    if with_dead:
        pipe.lrange(keys.dead, 0, -1)
    with redis_errors(where):
        meta, head, *dead = pipe.execute()
    if not meta:
        raise NotQuarantined(
            f"{where} does not exist (it exists once it has received a message)"
        )
    return text_dict(meta), head, list(dead[0]) if dead else []


def _state_of(
    rt: Runtime, atype: ActorSpec[Any], key: str, meta: dict[str, str], where: str
) -> bytes:
    stored = meta.get("state")
    if stored is None:  # nothing committed yet: its first step sees the initial state
        return encode(atype.initial_state(key), what=f"initial state of {where}")
    raw = rt.payloads.open(stored, what=f"{where}: stored state")
    try:
        state = json.loads(raw)
    except ValueError as exc:
        raise CorruptActorData(f"{where}: stored state does not decode ({exc})") from None
    stored_version = int(meta.get("state_version") or 1)
    if stored_version < atype.state_version:  # as the worker's load does (runner.upgraded)
        return encode(atype.upgrade(state, stored_version), what=f"upgraded state of {where}")
    return raw


def _int(meta: dict[str, str], name: str, where: str) -> int:
    try:
        return int(meta.get(name) or 0)
    except ValueError:
        raise CorruptActorData(f"{where}: meta field {name} is not an integer") from None


def read_copy(rt: Runtime, keys: ActorKeys, message_id: str | None) -> _Copy:
    """The actor's committed state and the message to replay: its mailbox head (it must be
    quarantined) or the dead letter ``message_id``."""
    atype, where = registered(keys.type_name), f"actor {keys.type_name}:{keys.key}"
    meta, head, dead = _read(rt, keys, message_id is not None)
    state_raw = _state_of(rt, atype, keys.key, meta, where)
    version = _int(meta, "version", where)
    if message_id is not None:
        raw, entry = _dead_letter(rt, dead, message_id, where)
        return _Copy(meta, state_raw, version, entry, 1, "dead_letter", raw)
    status = meta.get("status")
    if status != "quarantined":
        raise NotQuarantined(
            f"{where} is {status}, not quarantined: replay runs a quarantined actor's "
            f"mailbox head (--message ID replays one of its dead letters)"
        )
    if head is None:
        return _Copy(meta, state_raw, version, None, 0, "mailbox")
    entry = Entry.parse(head, where=where)
    same = _int(meta, "attempt_seq", where) == entry.seq
    attempt = _int(meta, "attempts", where) + 1 if same else 1
    return _Copy(meta, state_raw, version, entry, attempt, "mailbox")


def _dead_letter(
    rt: Runtime, dead: list[Any], message_id: str, where: str
) -> tuple[bytes, Entry]:
    """The dead letter ``message_id`` as the entry a requeue would append (no reply), its
    body in stored form (sealed, unless crash.lua kept a garbage entry as it found it)."""
    for raw in dead:
        try:
            item = decode(raw, what=f"dead letter of {where}")
            found = item["header"]["id"] == message_id
            if found:
                body = encode(item["message"], what="dead letter")
                if item["header"].get("corrupt"):
                    body = rt.payloads.seal(body)
                return bytes(raw), Entry(int(item["seq"]), 0, {"id": message_id}, body)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptActorData(
                f"{where}: a dead letter is not in celery_supervise's format ({exc!r})"
            ) from None
    ids = [_letter_id(raw) for raw in dead]
    raise UnknownDeadLetter(
        f"{where} has no dead letter {message_id!r} (it has: {', '.join(ids) or 'none'})"
    )


def _letter_id(raw: Any) -> str:
    try:
        return repr(json.loads(raw)["header"]["id"])
    except (KeyError, TypeError, ValueError):
        return "<unreadable>"


# -- stepping the copy -------------------------------------------------------------------------
def _bounded(call: Callable[[], T], seconds: float) -> T:
    """``call()``, stopped after ``seconds``. In the main thread the step's own SIGALRM
    (``runner._time_limit``) interrupts it; elsewhere it runs in a daemon thread that is
    abandoned, still running, when it overstays (it can commit nothing: nothing commits)."""
    if threading.current_thread() is threading.main_thread():
        return call()
    out: list[Any] = []

    def run() -> None:
        try:
            out.append((True, call()))
        except BaseException as exc:  # handed to the caller's thread below
            out.append((False, exc))

    thread = threading.Thread(target=run, name="celery_supervise-replay", daemon=True)
    thread.start()
    thread.join(seconds)
    if not out:
        raise TimeLimitExceeded(f"replayed step still running after {seconds} s (abandoned)")
    ok, value = out[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]  # call()'s own result


def _limit(atype: ActorSpec[Any], timeout: float | None) -> float:
    """A replay stops at the type's ``time_limit`` (past it, the real step crashes too) or
    the operator's ``timeout``, whichever is shorter."""
    limits = [x for x in (timeout, atype.time_limit) if x]
    return min(limits) if limits else DEFAULT_TIMEOUT


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def replay_actor(
    rt: Runtime, keys: ActorKeys, *, message_id: str | None = None, timeout: float | None = None
) -> ReplayResult:
    """Replay one actor (its mailbox head, or the dead letter ``message_id``); writes
    nothing. Raises for bad input: unknown type, missing actor, not quarantined, unknown
    dead letter, stored data that does not decode."""
    atype = registered(keys.type_name)
    copy = read_copy(rt, keys, message_id)
    about = _about(keys, copy, message_id)
    if copy.entry is None:
        return _state_only(atype, about)
    entry, limit = copy.entry, _limit(atype, timeout)
    try:
        message = entry.message(rt.payloads)
    except InvalidMessage as exc:
        where = f"actor {keys.type_name}:{keys.key}"
        raise CorruptActorData(f"{where}: message {entry.message_id!r}: {exc}") from None
    try:
        new_raw, ctx = _bounded(lambda: _step(rt, atype, keys, copy, entry, limit), limit)
    except Exception as exc:
        reason = crash_reason(exc)
        valid = False if reason == "invalid_state" else None
        return ReplayResult(**about, message_id=entry.message_id, message=message, ok=False,
                            valid=valid, reason=reason, error=_error(exc))  # fmt: skip
    return ReplayResult(**about, message_id=entry.message_id, message=message, ok=True,
                        new_state=json.loads(new_raw), valid=True,
                        effects=ReplayEffects.of(ctx))  # fmt: skip


def _state_only(atype: ActorSpec[Any], about: dict[str, Any]) -> ReplayResult:
    """A quarantined actor with nothing queued: released, it would only have to hold its
    state, so the replay checks that state against this process's ``validate``."""
    state = about["state"]
    problem = atype.check(state)
    error = {"type": "StateRejected", "message": problem, "traceback": None} if problem else None
    return ReplayResult(**about, message_id=None, message=None, ok=problem is None,
                        new_state=state, valid=problem is None,
                        reason="invalid_state" if problem else None, error=error)  # fmt: skip


def _about(keys: ActorKeys, copy: _Copy, message_id: str | None) -> dict[str, Any]:
    return {
        "type": keys.type_name,
        "key": keys.key,
        "source": copy.source,
        "version": copy.version,
        "state": json.loads(copy.state_raw),
        "fence": fence_of(copy.meta),
        "letter": copy.letter,
        "seq": copy.entry.seq if copy.entry is not None else 0,
    }


def _step(
    rt: Runtime, atype: ActorSpec[Any], keys: ActorKeys, copy: _Copy, entry: Entry, limit: float
) -> tuple[bytes, Context]:
    return step_on_copy(rt, atype, keys.key, state_raw=copy.state_raw, entry=entry,
                        version=copy.version, attempt=copy.attempt, time_limit=limit,
                        replaying=True)  # fmt: skip


# -- every quarantined actor of a type ---------------------------------------------------------
def _index(rt: Runtime, type_name: str) -> list[tuple[str, str, float]]:
    """(key, member, score) of the type's quarantine index, in member order."""
    index = rt.keyspace.quarantined_index(type_name)
    rows: list[Any] = list(rt.client.zrange(index, 0, -1, withscores=True))
    return sorted((parse_actor_member(text(m))[1], text(m), float(score)) for m, score in rows)


def quarantined_keys(rt: Runtime, type_name: str, *, prune: bool = False) -> list[str]:
    """Keys of the type's actors that are quarantined now: the index's members checked
    against each actor's own status. With ``prune``, members found not quarantined are
    removed (unless noted again meanwhile: ``zrem_unchanged.lua``); without, nothing is
    written."""
    registered(type_name)  # ActorNotRegistered names the known types
    rows = _index(rt, type_name)
    pipe = rt.client.pipeline(transaction=False)
    for key, _, _ in rows:
        pipe.hget(rt.keyspace.actor(type_name, key).meta, "status")
    statuses = pipe.execute() if rows else []
    keys, stale = [], []
    for (key, member, score), status in zip(rows, statuses, strict=True):
        if status is not None and text(status) == "quarantined":
            keys.append(key)
        else:
            stale += [member, repr(score)]
    if prune and stale:
        rt.scripts.zrem_unchanged(keys=[rt.keyspace.quarantined_index(type_name)], args=stale)
    return keys


def replay_type(
    rt: Runtime, type_name: str, *, timeout: float | None = None
) -> list[tuple[str, ReplayResult | CorruptActorData]]:
    """(key, result) for every quarantined actor of the type; one whose stored data does
    not decode has its error as result, and the others still replay."""
    out: list[tuple[str, ReplayResult | CorruptActorData]] = []
    for key in quarantined_keys(rt, type_name):
        try:
            out.append((key, replay_actor(rt, rt.keyspace.actor(type_name, key), timeout=timeout)))
        except NotQuarantined:
            continue  # brought back since the listing: not a candidate any more
        except CorruptActorData as exc:
            out.append((key, exc))
    return out


# -- releasing -----------------------------------------------------------------------------
def release(rt: Runtime, result: ReplayResult) -> Released:
    """Let the replayed step run for real, if the replay succeeded and the actor is still as
    the replay read it: 'resumed' or 'requeued'; else 'failed' (the replay did not succeed),
    'changed' (the actor changed since) or 'gone' (the dead letter is no longer dead)."""
    if not result.ok:
        return "failed"
    keys = rt.keyspace.actor(result.type, result.key)
    if result.source == "mailbox":
        outcome = restart_actor(
            rt, keys, recovery="last_good", only_halted=True, fence=result.fence
        )
        return "resumed" if outcome.outcome in ("woke", "idle") else "changed"
    assert result.letter is not None and result.message_id is not None  # a dead letter's
    requeued, _ = ActorStore(rt).requeue(
        keys,
        raw=result.letter,
        seq=result.seq,
        version=result.version,
        header=header_json(result.message_id, trace=carrier()),  # the releasing operator's
        body=encode(result.message, what="dead letter"),
    )
    rt.events.record("requeue", actor=keys.type_name, key=keys.key,
                     message_id=result.message_id, after="replay", outcome=requeued)  # fmt: skip
    return "requeued" if requeued == "requeued" else "gone" if requeued == "gone" else "changed"

