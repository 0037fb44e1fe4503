"""The supervisor tick: ``celery_supervise.tick``, run by beat every ``tick_interval``.

A tick reads only the *due* part of the sharded hint index (``ZRANGEBYSCORE -inf now``),
so its cost grows with what is due, never with how many actors exist. Each due actor is
looked at once (one pipelined read of its own keys, the only source of truth), then put
through an ordered list of checks of one shape -- expire a lost lease, decide an exit,
restart a backoff that is due, check isolated subtasks, fire timers, relay a stuck
outbox -- and, if any acted, looked at once more to re-publish a lost run and set its next
hint. Every transition is a compare-and-set script on the actor, so two ticks at once (two
beats, a slow tick) cannot double-act; a lock merely saves the wasted work.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from .census import observe_tick
from .codec import text
from .crashes import record_crash
from .delivery import Delivery
from .errors import (
    ActorNotRegistered,
    CorruptActorData,
    RedisRejected,
    RedisUnavailable,
    StateRejected,
)
from .isolation import Isolation
from .keyspace import DUE_BUCKETS, ActorKeys, parse_actor_member
from .mailbox import Entry, unparsed_entry
from .registry import ActorSpec, all_types, registered
from .relay import relay_outbox
from .runtime import EventLog, Runtime, new_run_id, redis_errors, waiting_at_most
from .store import ActorStore, CrashRecord, Look
from .tree_shell import decide_exit

__all__ = ["SENDERS_KEPT_MS", "TickReport", "note_sender", "run_tick", "visit", "visit_or_retry"]

log = logging.getLogger("celery_supervise")

#: The tick's Celery task (``Supervision`` registers it; beat sends it).
TICK_TASK = "celery_supervise.tick"
#: Most due hints read from one bucket per tick; the rest wait for the next tick.
DUE_PER_BUCKET = 500
#: How long a tick waits before looking again at an actor whose visit raised (ms).
RETRY_FAILED_VISIT_MS = 30_000
#: Decisions listed in one tick's result (the rest are in the events stream).
DECISIONS_IN_RESULT = 50
#: Longest a repaired-but-still-unclaimed actor waits between re-publishes (seconds).
REPAIR_CAP = 300.0

#: The due buckets are visited in this many groups, each under its own lock, so that a
#: tick with much due work shares it with other workers (``_tick``).
TICK_GROUPS = 4
#: A tick hands the other groups to group ticks (one Celery task each, for any worker)
#: when at least this many hints are due; below it, it visits them all itself.
FAN_OUT_AT = 100

#: How long a sender of the tick is remembered in ``keyspace.tick_senders`` (ms).
SENDERS_KEPT_MS = 3_600_000

#: Actor types this process's ticks met without knowing them (each logged once).
_unknown_types: set[str] = set()


@dataclass
class TickReport:
    """What one tick did: outcomes counted, and the decisions it made (Flower shows them)."""

    counts: dict[str, int] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    ms: int = 0
    skipped: str | None = None
    #: The bucket groups this tick visited, and those it handed to group ticks.
    groups: list[int] = field(default_factory=list)
    handed: list[int] = field(default_factory=list)

    def as_result(self) -> dict[str, Any]:
        """The task result: ``{"skipped": why}`` or the counts, ``ms``, the groups and the
        decisions."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        result: dict[str, Any] = {**self.counts, "ms": self.ms, "groups": self.groups}
        if self.handed:
            result["handed"] = self.handed
        if self.decisions:
            result["decisions"] = self.decisions[:DECISIONS_IN_RESULT]
        return result


def run_tick(
    rt: Runtime, *, sender: str | None = None, group: int | None = None
) -> dict[str, Any]:
    """One supervisor tick. Returns a summary (shown as the task result in Flower).
    With Redis away it returns at once: the next tick, a beat interval later, resumes.
    ``sender`` names the process that sent the tick task (Celery's ``origin`` header: a
    beat's ``gen<pid>@<host>``); it is noted, with the time, before the tick runs, so
    ``supervise doctor`` can tell whether beat runs and whether more than one does.
    ``group``: a group tick, handed one group of the due buckets by a tick with much due
    work (its sender, a worker, is not noted)."""
    try:
        with redis_errors("tick"):
            if group is not None:
                return _group_tick(rt, group).as_result()
            return _tick(rt, sender).as_result()
    except RedisUnavailable as exc:
        log.warning("celery_supervise tick_skipped reason=redis_unavailable error=%s", exc)
        return {"skipped": "redis unavailable"}
    except RedisRejected as exc:  # e.g. out of memory: not even the tick lock could be set
        log.warning("celery_supervise tick_skipped reason=redis_rejected error=%s", exc)
        return {"skipped": "redis refused writes"}


def note_sender(rt: Runtime, pipe: Any, sender: str) -> None:
    """Stamp ``sender`` with Redis' clock in ``tick_senders``, queued on ``pipe`` (the one
    that takes the tick's lock); forget senders silent for an hour (a beat restarted has a
    new pid)."""
    now = rt.clock_ms()
    pipe.zadd(rt.keyspace.tick_senders, {sender: now})
    pipe.zremrangebyscore(rt.keyspace.tick_senders, "-inf", now - SENDERS_KEPT_MS)


def _tick(rt: Runtime, sender: str | None = None) -> TickReport:
    """The beat's tick: under the tick lock, read what is due; with ``FAN_OUT_AT`` or more,
    hand every other group that has due work to a group tick and visit the first group;
    else visit every group. A group whose lock another tick holds is left to it."""
    holder = uuid.uuid4().hex
    lock_ms = _lock_ms(rt)
    pipe = rt.client.pipeline(transaction=False)
    pipe.set(rt.keyspace.tick_lock, holder, nx=True, px=lock_ms)
    if sender:  # noted even when another tick holds the lock: it was sent all the same
        note_sender(rt, pipe, sender)
    if not pipe.execute()[0]:
        return TickReport(skipped="another tick is running")
    started = time.monotonic()
    report = TickReport()
    try:
        now = rt.now_ms()
        due = _due(rt, range(TICK_GROUPS), now)
        mine = list(range(TICK_GROUPS))
        if sum(len(items) for items in due.values()) >= FAN_OUT_AT:
            report.handed = [g for g in mine[1:] if due[g]]
            for group in report.handed:
                rt.dispatch(TICK_TASK, (), {"group": group}, {})
            mine = [0]
        for group in mine:
            if _visit_group(rt, group, due[group], now, lock_ms, report):
                report.groups.append(group)
        kick_ready(rt, report)
    finally:
        took = time.monotonic() - started

        def give_back(pipe: Any) -> None:
            rt.scripts.tick_lock(keys=[rt.keyspace.tick_lock], args=[holder], client=pipe)
            observe_tick(rt, pipe, took)

        rt.pipeline(give_back)
    report.ms = int(took * 1000)
    return report


def kick_ready(rt: Runtime, report: TickReport) -> None:
    """Start a run for each actor type whose ready set holds actors while no run of it is
    live any more (its runs died, or their tasks were lost), or with a run that died
    holding actors: one round trip for all the types, one script for each such type. So a
    woken actor waits for a dead run at most a lease and a tick."""
    names = sorted(all_types())
    ks = rt.keyspace
    now = rt.now_ms()

    def build(pipe: Any) -> None:
        for name in names:
            pipe.exists(ks.ready(name))
            pipe.zcount(ks.ready_runs(name), "-inf", now)  # runs no longer live
            pipe.zcount(ks.ready_runs(name), f"({now}", "+inf")  # live ones

    try:
        replies = rt.pipeline(build) if names else []
    except redis.RedisError as exc:
        log.warning("celery_supervise ready_kick_failed error=%r", exc)
        return
    for i, name in enumerate(names):
        waiting, dead, live = replies[3 * i : 3 * i + 3]
        if not dead and not (waiting and not live):
            continue  # no run died holding actors, and none waits without a live run
        try:
            spawn_id = new_run_id()
            (handed,) = (text(x) for x in rt.ready(name, "end", "", spawn_id=spawn_id))
            if handed:
                rt.dispatch_run(name, handed, spawn_id)
                report.counts["ready_kicked"] = report.counts.get("ready_kicked", 0) + 1
        except Exception as exc:  # garbage in one type's set stops no other type's kick
            log.warning("celery_supervise ready_kick_failed actor=%s error=%r", name, exc)


def _group_tick(rt: Runtime, group: int) -> TickReport:
    """A group tick: the due hints of one group of buckets, read again (the handing tick's
    reading is stale by now), visited under that group's lock."""
    if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < TICK_GROUPS:
        return TickReport(skipped=f"no bucket group {group!r}")
    started = time.monotonic()
    report = TickReport()
    now = rt.now_ms()
    if _visit_group(rt, group, _due(rt, [group], now)[group], now, _lock_ms(rt), report):
        report.groups.append(group)
    else:
        report.skipped = f"another tick is visiting group {group}"
    took = time.monotonic() - started
    rt.pipeline(lambda pipe: observe_tick(rt, pipe, took))
    report.ms = int(took * 1000)
    return report


def _lock_ms(rt: Runtime) -> int:
    # Short enough that a tick killed with its worker delays the next by seconds only;
    # overlapping ticks are safe anyway (every transition is compare-and-set).
    return int(max(rt.settings.tick_interval * 5, 3.0) * 1000)


def _visit_group(
    rt: Runtime, group: int, due: list[tuple[str, str, float]], now: int, lock_ms: int,
    report: TickReport,
) -> bool:
    """Visit ``due`` under ``group``'s lock; False if another tick holds it."""
    holder = uuid.uuid4().hex
    lock = rt.keyspace.tick_group_lock(group)
    if not rt.client.set(lock, holder, nx=True, px=lock_ms):
        return False
    try:
        # A visit waits for Redis a third of the lock at most (not a worker's minutes): the
        # actor stays due, and the next tick looks again.
        with EventLog.collect() as decisions, waiting_at_most(lock_ms / 3000):
            for bucket, member, score in due:
                outcome = visit_or_retry(rt, bucket, member, score, now)
                report.counts[outcome] = report.counts.get(outcome, 0) + 1
        report.decisions += decisions
    finally:
        rt.pipeline(lambda pipe: rt.scripts.tick_lock(keys=[lock], args=[holder], client=pipe))
    return True


def bucket_group(bucket: int) -> int:
    """The group of due bucket ``bucket``: consecutive buckets, ``DUE_BUCKETS / TICK_GROUPS``
    each."""
    return bucket * TICK_GROUPS // DUE_BUCKETS


def _due(
    rt: Runtime, groups: Iterable[int], now: int
) -> dict[int, list[tuple[str, str, float]]]:
    """(bucket, member, score) of every hint due at ``now`` in the buckets of ``groups``, by
    group, in one round trip (one command per bucket: on a cluster each is its own slot)."""
    wanted = set(groups)
    buckets = [(b, rt.keyspace.due(b)) for b in range(DUE_BUCKETS) if bucket_group(b) in wanted]
    pipe = rt.client.pipeline(transaction=False)
    for _, key in buckets:
        pipe.zrangebyscore(key, "-inf", now, start=0, num=DUE_PER_BUCKET, withscores=True)
    found: dict[int, list[tuple[str, str, float]]] = {g: [] for g in wanted}
    for (b, key), due in zip(buckets, pipe.execute(), strict=True):
        found[bucket_group(b)] += [(key, text(member), float(score)) for member, score in due]
    return found


def visit_or_retry(rt: Runtime, bucket: str, member: str, score: float, now: int) -> str:
    try:
        return visit(rt, bucket, member, score, now)
    except ActorNotRegistered as exc:
        # This process does not know the type (a rolling deploy, a worker that imports only
        # some modules): not the actor's fault. Looked at again later, by this tick or one
        # that knows the type; said once per type and process.
        type_name = parse_actor_member(member)[0]
        if type_name not in _unknown_types:
            _unknown_types.add(type_name)
            log.warning("celery_supervise tick_unknown_type %s (retried later): %s", type_name, exc)
        move_hint(rt, bucket, member, score, rt.now_ms() + RETRY_FAILED_VISIT_MS)
        return "unknown_type"
    except CorruptActorData as exc:
        # Garbage in the actor's keys: named in an event; nothing else is touched, and the
        # tick goes on (SPEC 6.6).
        rt.events.record("corrupt_actor", member=member, error=str(exc))
        move_hint(rt, bucket, member, score, None)
        return "corrupt"
    except RedisUnavailable:
        raise
    except Exception as exc:
        # Anything else (Redis refusing writes, out of memory; a bug) must neither stop the
        # tick for every other actor nor lose this one: it is logged and looked at again a
        # little later. If Redis refuses to move the hint too, it stays due as it was.
        log.exception("celery_supervise tick_visit_failed member=%s", member)
        rt.events.record("tick_visit_failed", member=member, error=repr(exc))
        try:
            with redis_errors(f"hint of {member}"):
                move_hint(rt, bucket, member, score, rt.now_ms() + RETRY_FAILED_VISIT_MS)
        except RedisRejected:
            pass
        return "failed"


def move_hint(rt: Runtime, bucket: str, member: str, old: float, new: float | None) -> None:
    """Replace the hint we read (``old``) by ``new`` (None: drop it) unless someone moved
    it meanwhile; a hint moved earlier by a worker is kept (it is more urgent)."""
    rt.scripts.hint_move(keys=[bucket], args=[member, old, "" if new is None else new])


@dataclass
class Visit:
    """One due actor being looked at by one tick."""

    rt: Runtime
    atype: ActorSpec[Any]
    keys: ActorKeys
    now: int

    @property
    def store(self) -> ActorStore:
        return ActorStore(self.rt)


#: A check acts on what the look shows and returns its outcome, or None if it had nothing
#: to do. Checks run in this order, each on the same look.
Check = Callable[[Visit, Look], "str | None"]


def visit(rt: Runtime, bucket: str, member: str, score: float, now: int | None = None) -> str:
    """Look at one due actor; act on what its own keys say; set its next hint."""
    type_name, key = parse_actor_member(member)
    v = Visit(rt, registered(type_name), rt.keyspace.actor(type_name, key), now or rt.now_ms())
    with redis_errors(f"actor {type_name}:{key}"):
        look = v.store.look(v.keys)
        if not look.meta:
            # Deleted (or never created): dropped unless a send creates it meanwhile.
            drop_if_unchanged(rt, bucket, member, score, v.keys, look)
            return "gone"
        outcomes = [o for check in CHECKS if (o := check(v, look)) is not None]
        if outcomes:
            look = v.store.look(v.keys)
        rewoken = rewake(v, look)
        if rewoken:
            outcomes.append(rewoken)
            look = v.store.look(v.keys)
        due = next_due(rt, look, v.now, idle_ttl=v.atype.idle_ttl)
        if due is None:
            drop_if_unchanged(rt, bucket, member, score, v.keys, look)
        else:
            move_hint(rt, bucket, member, score, due)
    return outcomes[-1] if outcomes else "checked"


# -- the checks, in order ----------------------------------------------------------------
def expire_lease(v: Visit, look: Look) -> str | None:
    """A lease that ran out: the normal exit a committed ``ctx.stop()`` asked for, or a
    ``worker_lost`` crash; either exit is decided at once, not a tick later."""
    lease_until = look.meta.get("lease_until")
    if not lease_until or int(lease_until) > v.now:
        return None
    if look.meta.get("stop_requested") == "1":
        # The step that called ctx.stop() committed, then its worker died before
        # releasing: that is the normal exit it asked for, not a crash (SPEC 6.4).
        outcome = release_stopped(v, look)
    else:
        outcome = worker_lost(v, look)
    if outcome in ("worker_lost", "stopped"):
        decide_exit(v.rt, v.atype, v.keys)
    return outcome


def decide(v: Visit, look: Look) -> str | None:
    """A crash (or a normal stop) its supervisor has not decided yet."""
    stopped = (
        look.status == "stopped"
        and look.meta.get("stopped_normally") == "1"
        and look.meta.get("exit_reported") != look.meta.get("stopped_at")
    )
    if look.status != "crashed" and not stopped:
        return None
    if look.dead:  # repair the index if its writer died
        Delivery(v.rt).index_dead(v.keys.type_name, v.keys.key)
    return decide_exit(v.rt, v.atype, v.keys)


def restart_due(v: Visit, look: Look) -> str | None:
    """A backoff whose time has come: restart, with the recovery it was decided with."""
    if look.status != "backoff" or look.field_int("restart_at") > v.now:
        return None
    recovery = look.meta.get("recovery") or v.atype.recovery
    try:
        initial = v.atype.valid_initial(v.keys.key) if recovery == "reset" else None
    except StateRejected as exc:
        # Committed state always passes validate (SPEC 6.5): an actor whose reset state
        # would not is kept as it is, quarantined, for an operator.
        v.store.halt(v.keys, "quarantined", reason=f"reset refused: {exc}", only_from=["backoff"])
        v.rt.events.record(
            "quarantine",
            actor=v.keys.type_name,
            key=v.keys.key,
            cause="reset_state_invalid",
            error=str(exc),
        )
        return "quarantined"
    result = v.store.restart(
        v.keys,
        mode="due",
        recovery=recovery,
        initial=initial,
        history=v.atype.history,
        clear_crashes=False,
        state_version=v.atype.state_version,
    )
    if result.outcome not in ("woke", "idle"):
        return "checked"
    v.rt.events.record("restarted", actor=v.keys.type_name, key=v.keys.key, recovery=recovery)
    return "restarted"


def check_isolates(v: Visit, look: Look) -> str | None:
    if not look.isolates:
        return None
    Isolation(v.rt).check(v.keys.type_name, v.keys.key, v.keys, v.now)
    return "checked"


def fire_timers(v: Visit, look: Look) -> str | None:
    if look.next_timer is None or look.next_timer > v.now:
        return None
    woke, fired = v.store.fire_timers(v.keys)
    if woke:
        v.rt.publish(v.keys.type_name, v.keys.key)
    return "timers" if fired else "checked"


def relay_orphaned(v: Visit, look: Look) -> str | None:
    """Committed effects still in the outbox a lease after their commit: the worker died
    before relaying them, or a receiver did not answer. Relayed whether or not the actor is
    leased -- a busy actor is always leased -- beside its worker's own relays: each effect
    is idempotent at its receiver, and each relayer keeps the order per receiver."""
    if not look.outbox:
        return None
    relayed = relay_outbox(v.rt, v.keys.type_name, v.keys.key)
    return "undeliverable" if relayed.undeliverable else "checked"


def expire_idle(v: Visit, look: Look) -> str | None:
    """``@actor(idle_ttl=...)``: delete an actor idle with no work that long after its
    last step. ``delete.lua`` re-checks all of it on the actor's own keys, atomically."""
    due = _idle_expiry(look, v.atype.idle_ttl)
    if due is None or due > v.now:
        return None
    outcome, _ = v.store.delete(v.keys, idle_ttl=v.atype.idle_ttl)
    if outcome != "deleted":
        return "checked"
    v.rt.events.record("deleted", actor=v.keys.type_name, key=v.keys.key, by="idle_ttl")
    return "deleted"


CHECKS: tuple[Check, ...] = (
    expire_lease,
    relay_orphaned,
    decide,
    restart_due,
    check_isolates,
    fire_timers,
    expire_idle,
)


# -- after the checks: repair a lost run, set the next hint --------------------------------
def rewake(v: Visit, look: Look) -> str | None:
    """Re-publish the run of an actor whose scheduled task was lost."""
    if not _needs_rewake(v.rt, look, v.now):
        return None
    base = int(v.rt.repair_after * 1000)
    if not v.store.rewake(v.keys, base_ms=base, cap_ms=int(REPAIR_CAP * 1000)):
        return None
    v.rt.publish(v.keys.type_name, v.keys.key, direct=True)  # the live run may be the lost one
    v.rt.events.record("rewoken", actor=v.keys.type_name, key=v.keys.key, pending=look.pending)
    return "rewoken"


def drop_if_unchanged(
    rt: Runtime, bucket: str, member: str, score: float, keys: ActorKeys, look: Look
) -> None:
    """Drop the hint of an actor that needs nothing -- unless it changed since we looked.
    Every script that changes an actor bumps its ``rev``; a change writes its hint with
    ``ZADD LT``, a no-op over the older hint this tick read. This re-check runs after the
    drop, so one of the two always sees the other: either the re-check sees the new ``rev``
    and puts the hint back, or the change's hint lands after the drop (a send writes its
    hint before *and after* its append for this reason)."""
    move_hint(rt, bucket, member, score, None)
    if text(rt.client.hget(keys.meta, "rev") or b"") != look.meta.get("rev", ""):
        rt.client.zadd(bucket, {member: rt.now_ms()})


def _repair_wait_ms(rt: Runtime, look: Look) -> float:
    """How long a scheduled actor may wait for its run before it is re-published."""
    return float(min(rt.repair_after * 2 ** look.field_int("rewakes"), REPAIR_CAP)) * 1000


def _needs_rewake(rt: Runtime, look: Look, now: int) -> bool:
    if look.status not in ("idle", "active") or not look.pending or look.leased:
        return False
    if look.meta.get("sched") != "1":
        return True
    return now - look.field_int("sched_at") >= _repair_wait_ms(rt, look)


def _idle_expiry(look: Look, idle_ttl: float | None) -> float | None:
    """When an idle actor with no work is deleted (ms), if its type has an ``idle_ttl``."""
    if idle_ttl is None or not look.meta or look.status != "idle" or look.leased:
        return None
    if look.pending or look.next_timer is not None or look.isolates or look.outbox:
        return None  # work left: the hint that work set brings the tick back
    last = look.field_int("committed_at") or look.field_int("created_at")
    return last + idle_ttl * 1000


def next_due(
    rt: Runtime, look: Look, now: int, *, idle_ttl: float | None = None
) -> float | None:
    """When this actor next needs the tick, from its own keys; None if never."""
    candidates: list[float] = []
    expiry = _idle_expiry(look, idle_ttl)
    if expiry is not None:
        candidates.append(expiry)
    if look.next_timer is not None:
        candidates.append(look.next_timer)
    if look.leased:
        candidates.append(look.field_int("lease_until") + 1)
    if look.status == "backoff":
        candidates.append(look.field_int("restart_at"))
    elif look.status == "crashed":
        candidates.append(now)
    if look.status in ("idle", "active") and look.pending and not look.leased:
        candidates.append(look.field_int("sched_at") + _repair_wait_ms(rt, look))
    if look.outbox:
        candidates.append(now + rt.settings.lease_seconds * 1000)
    if look.isolates:
        keys = rt.keyspace.actor(look.meta.get("type", ""), look.meta.get("key", ""))
        candidates.append(Isolation(rt).next_check_ms(keys))
    return min(candidates) if candidates else None


# -- lease expiry ----------------------------------------------------------------------------
def release_stopped(v: Visit, look: Look) -> str:
    """Finish the release of a run whose committed step asked to stop (fenced by token)."""
    if v.store.release(v.keys, look.meta["token"]) != "stopped":
        return "checked"
    v.rt.events.record("stopped", actor=v.keys.type_name, key=v.keys.key, reason="normal")
    return "stopped"


def worker_lost(v: Visit, look: Look) -> str:
    """The step's lease expired: record a ``worker_lost`` crash (fenced by the token)."""
    keys, meta = v.keys, look.meta
    head = v.rt.client.lindex(keys.mailbox, 0)
    if head is None or meta.get("stepping") == "0":
        # No step was running: nothing was queued, or the worker's last commit said no step
        # would follow (its batch ended) and it died before releasing. That is no crash of
        # any message; just free the lease (and publish the next run if more are queued).
        released = v.store.release(keys, meta["token"])
        if released == "more":  # directly: the run counting as live may be the dead one
            v.rt.publish(keys.type_name, keys.key, direct=True)
        return f"released_{released}"
    try:
        entry = Entry.parse(head, where=f"actor {keys.type_name}:{keys.key}")
    except CorruptActorData:
        entry = unparsed_entry(head)  # tied to the garbage head, like any message
    same = meta.get("attempt_seq") == str(entry.seq)
    owner = meta.get("lease_owner")
    record = CrashRecord.of(
        "worker_lost", None, actor=keys.type_name, key=keys.key,
        version=look.field_int("version"), message_id=entry.message_id, seq=entry.seq,
        attempt=look.field_int("attempts") + 1 if same else 1, worker=owner,
        message=f"lease of {owner} expired mid-step",
    )  # fmt: skip
    outcome = record_crash(v.rt, keys, record, token=meta["token"],
                           max_attempts=v.atype.max_attempts, only_if_expired=True)  # fmt: skip
    return "worker_lost" if outcome.crashed else "checked"
