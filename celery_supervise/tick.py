"""The supervisor tick: ``celery_supervise.tick``, run by beat every ``tick_interval``.

A tick reads only the *due* part of the sharded hint index (``ZRANGEBYSCORE -inf now``),
so its cost grows with what is due, never with how many actors exist. For each due actor
it re-reads the actor's own keys -- the only source of truth -- and acts: crash a step whose
lease expired (``worker_lost``), decide a crash through the supervision tree, restart a
backoff that is due, fire due timers, relay an orphaned outbox, re-publish a run whose Celery
task was lost. Every transition is a compare-and-set script on the actor, so two ticks at
once (two beats, a slow tick) cannot double-act; a lock merely saves the wasted work.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .actors import registered
from .codec import text
from .errors import (
    ActorNotRegistered,
    CorruptActorData,
    RedisRejected,
    RedisUnavailable,
    StateRejected,
)
from .keyspace import parse_actor_member
from .mailbox import Entry, unparsed_entry
from .store import redis_errors, text_dict

if TYPE_CHECKING:
    from .supervision import Supervision

__all__ = ["run_tick", "visit_or_retry"]

log = logging.getLogger("celery_supervise")

#: What reading a field we did not write raises (``int("x")``, bad JSON, a list where a dict
#: was stored): the visited actor is reported as corrupt, the tick goes on with the others.
_GARBAGE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)
#: Most due hints read from one bucket per tick; the rest wait for the next tick.
DUE_PER_BUCKET = 500
#: How long a tick waits before looking again at an actor whose visit raised (ms).
RETRY_FAILED_VISIT_MS = 30_000
#: Decisions listed in one tick's result (the rest are in the events stream).
DECISIONS_IN_RESULT = 50
#: Longest a repaired-but-still-unclaimed actor waits between re-publishes (seconds).
REPAIR_CAP = 300.0


def redis_now_ms(sup: Supervision) -> int:
    seconds, micros = sup.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def run_tick(sup: Supervision) -> dict[str, Any]:
    """One supervisor tick. Returns a summary (shown as the task result in Flower).
    With Redis away it returns at once: the next tick, a beat interval later, resumes."""
    try:
        with redis_errors("tick"):
            return _tick(sup)
    except RedisUnavailable as exc:
        log.warning("celery_supervise tick_skipped reason=redis_unavailable error=%s", exc)
        return {"skipped": "redis unavailable"}
    except RedisRejected as exc:  # e.g. out of memory: not even the tick lock could be set
        log.warning("celery_supervise tick_skipped reason=redis_rejected error=%s", exc)
        return {"skipped": "redis refused writes"}


def _tick(sup: Supervision) -> dict[str, Any]:
    client = sup.client
    holder = uuid.uuid4().hex
    # Short enough that a tick killed with its worker delays the next by seconds only;
    # overlapping ticks are safe anyway (every transition is compare-and-set).
    lock_ms = int(max(sup.settings.tick_interval * 5, 3.0) * 1000)
    if not client.set(sup.keyspace.tick_lock, holder, nx=True, px=lock_ms):
        return {"skipped": "another tick is running"}
    started = time.monotonic()
    counts: dict[str, Any] = {}
    sup.decisions = []
    try:
        now = redis_now_ms(sup)
        pipe = client.pipeline(transaction=False)
        buckets = sup.keyspace.all_due()
        for bucket in buckets:
            pipe.zrangebyscore(bucket, "-inf", now, start=0, num=DUE_PER_BUCKET, withscores=True)
        for bucket, due in zip(buckets, pipe.execute(), strict=True):
            for member_raw, score in due:
                outcome = visit_or_retry(sup, bucket, text(member_raw), float(score), now)
                counts[outcome] = counts.get(outcome, 0) + 1
    finally:
        sup.scripts.tick_lock(keys=[sup.keyspace.tick_lock], args=[holder])
        decisions, sup.decisions = sup.decisions, None
    counts["ms"] = int((time.monotonic() - started) * 1000)
    if decisions:
        # The tick's result is what Flower shows: restarts, quarantines, escalations and
        # dead letters decided in this tick, readable without opening Redis.
        counts["decisions"] = decisions[:DECISIONS_IN_RESULT]
    return counts


def visit_or_retry(sup: Supervision, bucket: str, member: str, score: float, now: int) -> str:
    """``visit`` one due actor; whatever goes wrong stays with that actor."""
    try:
        return visit(sup, bucket, member, score, now)
    except (CorruptActorData, ActorNotRegistered) as exc:
        # Garbage in the actor's keys, or a type no process declares: named in an event;
        # nothing else is touched, and the tick goes on (SPEC 6.6).
        sup.log_event("corrupt_actor", member=member, error=str(exc))
        _drop_hint(sup, bucket, member, score)
        return "corrupt"
    except RedisUnavailable:
        raise
    except Exception as exc:
        # Anything else (Redis refusing writes, out of memory; a bug) must neither stop the
        # tick for every other actor nor lose this one: it is logged and looked at again a
        # little later. If Redis refuses to move the hint too, it stays due as it was.
        log.exception("celery_supervise tick_visit_failed member=%s", member)
        sup.log_event("tick_visit_failed", member=member, error=repr(exc))
        try:
            with redis_errors(f"hint of {member}"):
                retry = redis_now_ms(sup) + RETRY_FAILED_VISIT_MS
                _move_hint(sup, bucket, member, score, retry)
        except RedisRejected:
            pass
        return "failed"


def _drop_hint(sup: Supervision, bucket: str, member: str, score: float) -> None:
    _move_hint(sup, bucket, member, score, None)


def _move_hint(sup: Supervision, bucket: str, member: str, old: float, new: float | None) -> None:
    """Replace the hint we read (``old``) by ``new`` (None: drop it) unless someone moved
    it meanwhile; a hint moved earlier by a worker is kept (it is more urgent)."""
    sup.scripts.hint_move(keys=[bucket], args=[member, old, "" if new is None else new])


@dataclass
class _Look:
    """One actor's keys as one round trip saw them."""

    meta: dict[str, str]
    pending: int
    outbox: int
    isolates: bool
    next_timer: float | None

    @property
    def status(self) -> str:
        return self.meta.get("status", "idle")

    @property
    def leased(self) -> bool:
        return bool(self.meta.get("lease_until"))


def _look(sup: Supervision, keys: Any) -> _Look:
    pipe = sup.client.pipeline(transaction=False)
    pipe.hgetall(keys.meta)
    pipe.llen(keys.mailbox)
    pipe.llen(keys.outbox)
    pipe.exists(keys.isolates)
    pipe.zrange(keys.timers, 0, 0, withscores=True)
    meta, pending, outbox, isolates, timer = pipe.execute()
    return _Look(
        meta=text_dict(meta),
        pending=int(pending),
        outbox=int(outbox),
        isolates=bool(isolates),
        next_timer=float(timer[0][1]) if timer else None,
    )


def visit(sup: Supervision, bucket: str, member: str, score: float, now: int | None = None) -> str:
    """Look at one due actor; act on what its own keys say; set its next hint.

    One pipelined read to look; a script per action actually taken; one script to move the
    hint. A visit that finds nothing to do costs two round trips."""
    type_name, key = parse_actor_member(member)
    atype = registered(type_name)
    ref = sup.ref(type_name, key)
    keys = ref.keys
    outcome = "checked"
    with redis_errors(f"actor {type_name}:{key}"):
        look = _look(sup, keys)
        if not look.meta:
            _drop_hint(sup, bucket, member, score)
            return "gone"
        if now is None:
            now = redis_now_ms(sup)
        changed = False
        lease_until = look.meta.get("lease_until")
        if lease_until and int(lease_until) <= now:
            if look.meta.get("stop_requested") == "1":
                # The step that called ctx.stop() committed, then its worker died before
                # releasing: that is the normal exit it asked for, not a crash (SPEC 6.4).
                outcome = _release_stopped(sup, ref, look.meta)
            else:
                outcome = _worker_lost(sup, atype, ref, look.meta)
            changed = True
        if changed:
            look = _look(sup, keys)
        if look.outbox and not look.leased:
            sup.relay_outbox(type_name, key)
            changed = True
        if look.status == "crashed" or (
            look.status == "stopped"
            and look.meta.get("stopped_normally") == "1"
            and look.meta.get("exit_reported") != look.meta.get("stopped_at")
        ):
            from .tree_shell import decide_exit

            if sup.client.llen(keys.dead):  # repair the index if its writer died
                sup.store.index_dead(type_name, key)
            outcome = decide_exit(sup, atype, ref, look.meta)
            look = _look(sup, keys)
        if look.status == "backoff" and int(look.meta.get("restart_at", "0")) <= now:
            recovery = look.meta.get("recovery") or atype.recovery
            try:
                initial = atype.valid_initial(key) if recovery == "reset" else None
            except StateRejected as exc:
                # Committed state always passes validate (SPEC 6.5): an actor whose reset
                # state would not is kept as it is, quarantined, for an operator.
                sup.store.halt(
                    ref, "quarantined", reason=f"reset refused: {exc}", only_from="backoff"
                )
                sup.log_event(
                    "quarantine",
                    actor=type_name,
                    key=key,
                    cause="reset_state_invalid",
                    error=str(exc),
                )
                outcome = "quarantined"
            else:
                result = sup.store.restart(
                    ref,
                    mode="due",
                    recovery=recovery,
                    initial=initial,
                    history=atype.history,
                    clear_crashes=False,
                )
                if result in ("woke", "idle"):
                    sup.log_event("restarted", actor=type_name, key=key, recovery=recovery)
                    outcome = "restarted"
            changed = True
        if look.isolates:
            sup.isolation.check(type_name, key, keys, now)
            changed = True
        if look.next_timer is not None and look.next_timer <= now:
            woke, fired, _ = (
                int(x) for x in sup.scripts.fire_timers(keys=[keys.meta, keys.mailbox, keys.timers])
            )
            if woke:
                sup.publish(type_name, key)
            if fired:
                outcome = "timers"
            changed = True
        if changed:
            look = _look(sup, keys)
        if _needs_rewake(sup, look, now):
            base = int(sup.repair_after * 1000)
            if sup.scripts.rewake(
                keys=[keys.meta, keys.mailbox], args=[base, int(REPAIR_CAP * 1000)]
            ):
                sup.publish(type_name, key)
                sup.log_event("rewoken", actor=type_name, key=key, pending=look.pending)
                outcome = "rewoken"
                look = _look(sup, keys)
        due = _next_due(sup, look, now)
        if due is None:
            _drop_if_unchanged(sup, bucket, member, score, keys, look)
        else:
            _move_hint(sup, bucket, member, score, due)
    return outcome


def _drop_if_unchanged(
    sup: Supervision, bucket: str, member: str, score: float, keys: Any, look: _Look
) -> None:
    """Drop the hint of an actor that needs nothing -- unless a message arrived since we
    looked. A send writes its hint before *and after* its append, and this re-check runs
    after the drop, so one of the two always sees the other: either the re-check sees the
    new sequence number and puts the hint back, or the send's second hint lands after the
    drop."""
    _drop_hint(sup, bucket, member, score)
    if text(sup.client.hget(keys.meta, "seq") or b"") != look.meta.get("seq", ""):
        sup.client.zadd(bucket, {member: redis_now_ms(sup)})


def _repair_wait_ms(sup: Supervision, meta: dict[str, str]) -> float:
    """How long a scheduled actor may wait for its run before it is re-published."""
    rewakes = int(meta.get("rewakes", "0"))
    return float(min(sup.repair_after * 2**rewakes, REPAIR_CAP)) * 1000


def _needs_rewake(sup: Supervision, look: _Look, now: int) -> bool:
    if look.status not in ("idle", "active") or not look.pending or look.leased:
        return False
    if look.meta.get("sched") != "1":
        return True
    return now - int(look.meta.get("sched_at", "0")) >= _repair_wait_ms(sup, look.meta)


def _next_due(sup: Supervision, look: _Look, now: int) -> float | None:
    """When this actor next needs the tick, from its own keys; None if never."""
    candidates: list[float] = []
    if look.next_timer is not None:
        candidates.append(look.next_timer)
    if look.leased:
        candidates.append(int(look.meta["lease_until"]) + 1)
    if look.status == "backoff":
        candidates.append(int(look.meta.get("restart_at", "0")))
    elif look.status == "crashed":
        candidates.append(now)
    if look.status in ("idle", "active") and look.pending and not look.leased:
        candidates.append(int(look.meta.get("sched_at", "0")) + _repair_wait_ms(sup, look.meta))
    if look.outbox:
        candidates.append(now + sup.settings.lease_seconds * 1000)
    if look.isolates:
        candidates.append(
            sup.isolation.next_check_ms(
                sup.keyspace.actor(look.meta.get("type", ""), look.meta.get("key", ""))
            )
        )
    return min(candidates) if candidates else None


def _release_stopped(sup: Supervision, ref: Any, meta: dict[str, str]) -> str:
    """Finish the release of a run whose committed step asked to stop (fenced by token)."""
    keys = ref.keys
    result = sup.scripts.release(keys=[keys.meta, keys.mailbox], args=[meta["token"]])
    if text(result[0]) != "stopped":
        return "checked"
    sup.log_event("stopped", actor=ref.type_name, key=ref.key, reason="normal")
    return "stopped"


def _worker_lost(sup: Supervision, atype: Any, ref: Any, meta: dict[str, str]) -> str:
    """The step's lease expired: record a ``worker_lost`` crash (fenced by the token)."""
    keys = ref.keys
    head = sup.client.lindex(keys.mailbox, 0)
    entry = None
    if head is None:
        # Nothing was queued, so no step can have been running: the worker died after
        # its last commit and before releasing. That is no crash; just free the lease.
        released = text(
            sup.scripts.release(keys=[keys.meta, keys.mailbox], args=[meta["token"]])[0]
        )
        if released == "more":
            sup.publish(ref.type_name, ref.key)
        return f"released_{released}"
    if head is not None:
        try:
            entry = Entry.parse(head, where=f"actor {ref.type_name}:{ref.key}")
        except CorruptActorData:
            entry = unparsed_entry(head)  # tied to the garbage head, like any message
    attempt = (
        int(meta.get("attempts", "0")) + 1
        if entry and meta.get("attempt_seq") == str(entry.seq)
        else 1
    )
    record = {
        "actor": ref.type_name,
        "key": ref.key,
        "version": int(meta.get("version", "0")),
        "message_id": entry.message_id if entry else None,
        "seq": entry.seq if entry else 0,
        "attempt": attempt,
        "reason": "worker_lost",
        "type": "WorkerLost",
        "message": f"lease of {meta.get('lease_owner')} expired mid-step",
        "traceback": None,
        "worker": meta.get("lease_owner"),
        "time": time.time(),
    }
    result = sup.scripts.crash(
        keys=[keys.meta, keys.mailbox, keys.crashes, keys.attempts, keys.dead, keys.outbox],
        args=[meta["token"], record["seq"], json.dumps(record), atype.max_attempts, "1", 50],
    )
    if text(result[0]) != "crashed":
        return "checked"
    if int(result[3]) == 1:
        sup.store.index_dead(ref.type_name, ref.key)
    sup.log_event(
        "crash",
        actor=ref.type_name,
        key=ref.key,
        reason="worker_lost",
        worker=meta.get("lease_owner"),
        message_id=record["message_id"],
        attempt=int(result[2]),
        dead_lettered=bool(int(result[3])),
        consecutive=int(result[4]),
    )
    sup.relay_outbox(ref.type_name, ref.key)
    return "worker_lost"
