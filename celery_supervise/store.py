"""One actor's Redis keys: a typed method per script, each owning its key order, constants
and reply decoding.

Every state change of an actor is one script on the actor's own slot. The due-time index
(other slots) only holds hints: written *before* the change they announce (``ZADD LT``,
pipelined with it) so a process dying in between leaves at worst a spurious hint, which the
tick checks against the actor's own keys and drops.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from .census import step_bucket
from .codec import text
from .errors import SuperviseError
from .keyspace import ActorKeys, actor_member
from .records import (
    Claim,
    CommitOutcome,
    CrashOutcome,
    CrashRecord,
    EncodedEffects,
    Forfeit,
    Look,
    Release,
    RestartOutcome,
    text_dict,
)
from .registry import registered
from .runtime import Runtime, patiently, redis_errors
from .timers import Timer, parse_timers

__all__ = [
    "CRASHES_KEPT",
    "TIMERS_SHOWN",
    "ActorStore",
    "Claim",
    "CommitOutcome",
    "CrashOutcome",
    "CrashRecord",
    "EncodedEffects",
    "Look",
    "fence_of",
    "text_dict",
]

#: Crash records kept per actor (the per-message records travel with dead letters).
CRASHES_KEPT = 50
#: Timers listed per actor by ``snapshot()`` (the earliest).
TIMERS_SHOWN = 100


def fence_of(meta: dict[str, str]) -> str:
    """What an operator's conditional restart compares (``restart.lua`` ARGV[7]): the
    actor's status, fencing token, version and crash sequence number as ``meta`` holds
    them. A message sent meanwhile changes none of them; a step, a crash, a restart or a
    rollback changes at least one."""
    fields = ("status", "token", "version", "crash_seq")
    return "|".join(meta.get(name, "") for name in fields)


def _where(keys: ActorKeys) -> str:
    return f"actor {keys.type_name}:{keys.key}"


def _first_halted(supervisors: Sequence[str], statuses: Sequence[Any]) -> str | None:
    """The nearest supervisor whose status (read beside the claim) is stopped/quarantined."""
    for name, status in zip(supervisors, statuses, strict=False):
        if status is not None and text(status) in ("stopped", "quarantined"):
            return name
    return None


def _effect_args(effects: EncodedEffects, stepping_next: bool) -> list[Any]:
    """ARGV[7..] of ``commit.lua``: the stop flag, the four counts, whether the next step
    follows, then each list."""
    args: list[Any] = ["1" if effects.stop else "0"]
    args += [len(effects.outbox), len(effects.selfs), len(effects.timers), len(effects.isolates)]
    args.append("1" if stepping_next else "0")
    args += effects.outbox
    for pairs in (effects.selfs, effects.timers, effects.isolates):
        for pair in pairs:
            args += pair
    args.append(len(effects.named_timers))
    for name, delay_ms, spec in effects.named_timers:
        args += [name, "" if delay_ms is None else delay_ms, spec]
    return args


class ActorStore:
    """The scripts of one actor's lifecycle, called with the actor's keys."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def add_hint(self, pipe: Any, type_name: str, key: str, seconds_from_now: float) -> None:
        """Ask the tick to look at this actor no later than ``seconds_from_now`` (on Redis'
        clock, as the tick reads the index)."""
        member = actor_member(type_name, key)
        pipe.zadd(
            self.rt.keyspace.due_bucket(member),
            {member: int((self.rt.clock() + seconds_from_now) * 1000)},
            lt=True,
        )

    def note_quarantine(self, pipe: Any, type_name: str, key: str) -> None:
        """List the actor in its type's quarantine index (a hint ``supervise replay`` checks
        against the actor's own status). Queued both before and after the script that
        quarantines: a process dying between them leaves at worst a stale member. The score
        counts the notes, so it changes at every one: a pruner removes a member only if its
        score is still the one it read before finding the actor not quarantined
        (``zrem_unchanged.lua``), and so never drops one quarantined meanwhile."""
        index = self.rt.keyspace.quarantined_index(type_name)
        pipe.zincrby(index, 1, actor_member(type_name, key))

    def census(self, keys: ActorKeys) -> list[str]:
        """The census keys every accounting script takes last (``scripts.ACCOUNTED``)."""
        return self.rt.keyspace.metric_keys(keys)

    def _run(self, where: str, build: Any) -> list[Any]:
        """One pipelined round trip, repeated while Redis is away (SPEC 6.7)."""
        return patiently(lambda: self.rt.pipeline(build), where=where)

    # -- the step path (a worker holding the lease) ----------------------------------------
    def claim(
        self,
        keys: ActorKeys,
        *,
        worker: str,
        lease_ms: int,
        batch: int,
        nonce: str,
        supervisors: Sequence[str],
        hint_in: float,
        state_version: int = 1,
    ) -> Claim:
        """Take the lease and read a batch; the supervisors' statuses come in the same trip.
        ``state_version``: the newest state version this process's code knows; a state
        stored at a newer one is refused ('too_new')."""

        def build(pipe: Any) -> None:
            for name in supervisors:
                pipe.hget(self.rt.keyspace.supervisor(name), "status")
            self.add_hint(pipe, keys.type_name, keys.key, hint_in)
            self.rt.scripts.claim(
                keys=[keys.meta, keys.mailbox, *self.census(keys)],
                args=[worker, lease_ms, batch, nonce, state_version],
                client=pipe,
            )

        replies = self._run(_where(keys), build)
        reply = replies[-1]
        outcome = text(reply[0])
        if outcome != "ok":
            return Claim(outcome)  # type: ignore[arg-type]  # the script's own words
        halted_by = _first_halted(supervisors, replies)
        token = int(reply[1])  # HINCRBY'd by claim.lua: always an integer
        try:
            version, attempt_seq, attempts = int(reply[2]), int(reply[4]), int(reply[5])
            state_version = int(reply[6])
        except ValueError as exc:
            return Claim("ok", token, halted_by=halted_by, problem=f"meta hash: {exc}")
        return Claim(
            "ok", token, version, reply[3], attempt_seq, attempts, tuple(reply[7:]), halted_by,
            state_version=state_version,
        )

    def commit(
        self,
        keys: ActorKeys,
        *,
        token: int,
        seq: int,
        state: bytes,
        message_id: str,
        history: int,
        lease_ms: int,
        effects: EncodedEffects,
        hints: Sequence[float],
        stepping_next: bool,
        state_version: int = 1,
        step_seconds: float = 0.0,
    ) -> CommitOutcome:
        """Commit one step: state, version + 1, the entry consumed, its effects recorded.
        ``stepping_next``: this worker steps the next entry at once (blame it if lost).
        ``state_version``: the shape ``state`` has (kept with it and in its history entry).
        ``step_seconds``: how long the step took, for the census' step-time histogram."""
        entry = '{"message_id":' + json.dumps(message_id, ensure_ascii=False)
        entry += f',"state_version":{state_version},"state":'
        state = self.rt.payloads.seal(state)  # the same sealed JSON in meta and history
        args: list[Any] = [token, seq, state, entry + state.decode() + "}", history, lease_ms]
        args += _effect_args(effects, stepping_next)
        args.insert(12, state_version)  # ARGV[13..15]: before the effect lists
        args[13:13] = [step_bucket(step_seconds), repr(max(0.0, step_seconds))]
        commit_keys = [keys.meta, keys.mailbox, keys.history, keys.attempts, keys.outbox]
        commit_keys += [keys.timers, keys.isolates, keys.timer_specs, *self.census(keys)]

        def build(pipe: Any) -> None:
            for seconds in hints:
                self.add_hint(pipe, keys.type_name, keys.key, seconds)
            self.rt.scripts.commit(keys=commit_keys, args=args, client=pipe)
            self.rt.wait_replicas(pipe)

        replies = self._run(_where(keys), build)
        reply = replies[len(hints)]
        if text(reply[0]) != "ok":
            return CommitOutcome(False, refused=text(reply[0]))
        # Not repeated by _run: a WAIT on another connection would not cover this write. The
        # run stops as in an outage; the next run (or the tick) finds the step committed.
        self.rt.check_replicas(replies, f"commit of actor {keys.type_name}:{keys.key}")
        return CommitOutcome(True, int(reply[1]))

    def crash(
        self,
        keys: ActorKeys,
        *,
        token: int | str,
        record: CrashRecord,
        max_attempts: int,
        only_if_expired: bool,
    ) -> CrashOutcome:
        """Record a crash of the lease holder; count and maybe dead-letter its message."""

        def build(pipe: Any) -> None:
            # The tick must look at this actor now: the hint goes first.
            self.add_hint(pipe, keys.type_name, keys.key, 0)
            self.rt.scripts.crash(
                keys=[keys.meta, keys.mailbox, keys.crashes, keys.attempts, keys.dead, keys.outbox,
                      *self.census(keys)],
                args=[
                    token,
                    record.seq,
                    record.encode(),
                    max_attempts,
                    "1" if only_if_expired else "0",
                    CRASHES_KEPT,
                    self.rt.settings.max_dead_letters,
                    record.reason,
                ],
                client=pipe,
            )

        reply = self._run(_where(keys), build)[-1]
        if text(reply[0]) != "crashed":
            return CrashOutcome(False)
        return CrashOutcome(
            True,
            int(reply[1]),
            int(reply[2]),
            int(reply[3]) == 1,
            int(reply[4]),
            int(reply[5]) == 1,
        )

    def release(self, keys: ActorKeys, token: int | str) -> Release:
        """Give the lease back: 'more' (publish the next run), 'idle', 'stopped' or 'stale'."""
        reply = self._run(
            _where(keys),
            lambda pipe: self.rt.scripts.release(
                keys=[keys.meta, keys.mailbox, *self.census(keys)], args=[token], client=pipe
            ),
        )[-1]
        return text(reply[0])  # type: ignore[return-value]  # the script's own words

    def renew(self, keys: ActorKeys, token: int, lease_ms: int) -> bool:
        """Extend the lease; False if it was lost (superseded or expired)."""
        return bool(self.rt.scripts.renew(keys=[keys.meta], args=[token, lease_ms]))

    def forfeit(self, keys: ActorKeys, worker: str) -> tuple[Forfeit, float | None]:
        """End now the lease ``worker`` (a pool process found dead) still holds, as if it
        had run out; the actor's hint is set due first. (outcome, the hint's score after:
        what the tick's ``visit`` of the actor is given to move)."""
        member = actor_member(keys.type_name, keys.key)
        bucket = self.rt.keyspace.due_bucket(member)

        def build(pipe: Any) -> None:
            self.add_hint(pipe, keys.type_name, keys.key, 0)
            self.rt.scripts.forfeit(keys=[keys.meta], args=[worker], client=pipe)
            pipe.zscore(bucket, member)

        replies = self._run(_where(keys), build)
        outcome: Forfeit = text(replies[-2][0])  # type: ignore[assignment]  # the script's words
        score = replies[-1]
        return outcome, None if score is None else float(score)

    # -- supervisor and operator transitions --------------------------------------------
    def halt(
        self,
        keys: ActorKeys,
        status: str,
        *,
        reason: str,
        delay: float = 0.0,
        only_from: Sequence[str] = (),
        cause: str = "",
    ) -> str:
        """Stop, quarantine or back off an actor from outside its steps ('ok' | 'skip')."""
        args = [status, reason, int(delay * 1000), ",".join(only_from) or "*", cause]
        with redis_errors(_where(keys)):
            reply = self._transition(keys, status, delay, self.rt.scripts.halt, args)
        return text(reply[0])

    def _transition(
        self, keys: ActorKeys, status: str, delay: float, script: Any, args: list[Any]
    ) -> Any:
        """Run ``script`` on the actor's meta with the hints its new ``status`` needs: a
        backoff's due hint before it, a quarantine's index entry before *and* after it (the
        index is a hint the tick and ``replay`` re-check). Returns the script's reply."""
        quarantine = status == "quarantined"

        def build(pipe: Any) -> None:
            if status == "backoff":
                self.add_hint(pipe, keys.type_name, keys.key, delay)
            if quarantine:
                self.note_quarantine(pipe, keys.type_name, keys.key)
            script(keys=[keys.meta, *self.census(keys)], args=args, client=pipe)
            if quarantine:
                self.note_quarantine(pipe, keys.type_name, keys.key)

        reply = self.rt.pipeline(build)[-2 if quarantine else -1]
        if quarantine and text(reply[0]) == "ok":
            self._count_quarantine(keys)
        return reply

    def _count_quarantine(self, keys: ActorKeys) -> None:
        """``quarantines_total`` of the actor's supervisor: after the script said it
        quarantined (a process dying in between misses one; none is counted twice, since a
        second quarantine of a quarantined actor is refused)."""
        try:
            owner = self.rt.tree.supervisor_of_actor(
                f"{keys.type_name}:{keys.key}", registered(keys.type_name).supervisor
            )
        except SuperviseError:  # a type this process does not know: its own supervisor's
            return  # workers count it; this one cannot place it
        self.rt.client.hincrby(self.rt.keyspace.supervisor(owner), "quarantines_total", 1)

    def restart(
        self,
        keys: ActorKeys,
        *,
        mode: Literal["due", "force"],
        recovery: str,
        initial: bytes | None,
        history: int,
        clear_crashes: bool,
        rollback_of: int | None = None,
        fence: str = "",
        state_version: int | None = None,
    ) -> RestartOutcome:
        """Bring a halted actor back ('woke' | 'idle' | 'skip', and the version it is at
        then); publishes the run it wakes.
        ``fence`` ("status|token|version|crash_seq", as ``fence_of`` builds it): only if the
        actor still matches it. ``state_version``: the shape of ``initial`` (for a reset)."""

        def build(pipe: Any) -> None:
            # If the run this restart publishes is lost, the tick repairs it from this hint.
            self.add_hint(pipe, keys.type_name, keys.key, self.rt.repair_after)
            self.rt.scripts.restart(
                keys=[keys.meta, keys.mailbox, keys.history, *self.census(keys)],
                args=[
                    mode,
                    recovery,
                    b"null" if initial is None else self.rt.payloads.seal(initial),
                    history,
                    "1" if clear_crashes else "0",
                    "" if rollback_of is None else rollback_of,
                    fence,
                    "" if state_version is None else state_version,
                ],
                client=pipe,
            )

        with redis_errors(_where(keys)):
            reply = self.rt.pipeline(build)[-1]
        outcome = text(reply[0])
        if outcome == "woke":
            # Directly: after a crash the run that counts as live may be the dead worker's,
            # and a restart must not wait a lease for it to stop counting.
            self.rt.publish(keys.type_name, keys.key, direct=True)
        return RestartOutcome(outcome, int(reply[1]) if outcome != "skip" else 0)

    def upgrade(
        self, keys: ActorKeys, *, fence: str, state: bytes, state_version: int, history: int
    ) -> tuple[str, int]:
        """Write ``state`` (upgraded to ``state_version``) as a new version, only if no lease
        is held and the actor still matches ``fence`` ("token|version|state_version" as
        read): ('upgraded', new version) | ('busy' | 'changed' | 'missing', 0)."""
        with redis_errors(_where(keys)):
            reply = self.rt.scripts.upgrade(
                keys=[keys.meta, keys.history], args=[fence, state, state_version, history]
            )
        outcome = text(reply[0])
        return outcome, int(reply[1]) if outcome == "upgraded" else 0

    def requeue(
        self,
        keys: ActorKeys,
        *,
        raw: bytes,
        seq: int,
        version: int | None,
        header: str,
        body: bytes,
    ) -> tuple[str, int]:
        """Move one dead letter (``raw``, as read) back to the end of the mailbox, in one
        script: only if the actor is still at ``version`` (None: any) and the letter still
        dead. ('requeued' | 'changed' | 'gone', new seq)."""

        def build(pipe: Any) -> None:
            self.add_hint(pipe, keys.type_name, keys.key, self.rt.repair_after)
            self.rt.scripts.requeue(
                keys=[keys.meta, keys.mailbox, keys.dead, keys.requeued(seq), *self.census(keys)],
                args=[raw, "" if version is None else version, header,
                      self.rt.payloads.seal(body), self.rt.settings.dedup_window],
                client=pipe,
            )

        with redis_errors(_where(keys)):
            reply = self.rt.pipeline(build)[-1]
        if text(reply[0]) != "requeued":
            return text(reply[1]), 0
        if int(reply[1]) == 1:
            self.rt.publish(keys.type_name, keys.key)
        return "requeued", int(reply[2])

    def settle(
        self,
        keys: ActorKeys,
        *,
        crash_seq: str,
        status: str,
        delay: float,
        level: int | str,
        reason: str,
    ) -> None:
        """Apply the supervisor's decision about one crash, once (by its crash_seq)."""
        args = [crash_seq, status, int(delay * 1000), level, reason]
        self._transition(keys, status, delay, self.rt.scripts.settle, args)

    def rewake(self, keys: ActorKeys, *, base_ms: int, cap_ms: int) -> bool:
        """Claim the right to re-publish a run whose task was lost; the caller publishes."""
        rewake_keys = [keys.meta, keys.mailbox, *self.census(keys)]
        return bool(self.rt.scripts.rewake(keys=rewake_keys, args=[base_ms, cap_ms]))

    def fire_timers(self, keys: ActorKeys) -> tuple[bool, int]:
        """Move due timers into the mailbox: (woke, how many fired)."""
        timer_keys = [keys.meta, keys.mailbox, keys.timers, keys.timer_specs, *self.census(keys)]
        woke, fired, _ = self.rt.scripts.fire_timers(keys=timer_keys)
        return bool(int(woke)), int(fired)

    def delete(self, keys: ActorKeys, *, idle_ttl: float | None = None) -> tuple[str, str]:
        """Delete every key of the actor if it has no work left (``delete.lua``):
        ('deleted' | 'missing' | 'busy', why). With ``idle_ttl`` only an idle actor whose
        last step is that old. The indexes that name it are cleaned after a deletion."""
        ks = self.rt.keyspace
        member = actor_member(keys.type_name, keys.key)
        indexes = [ks.quarantined_index(keys.type_name), ks.dead_index]
        ttl = "" if idle_ttl is None else int(idle_ttl * 1000)

        def build(pipe: Any) -> None:
            for index in indexes:  # read before: a member noted again meanwhile stays
                pipe.zscore(index, member)
            self.rt.scripts.delete(
                keys=[*keys.owned, keys.tombstone, *self.census(keys)],
                args=[keys.type_name, keys.key, self.rt.settings.dedup_window, ttl],
                client=pipe,
            )

        with redis_errors(_where(keys)):
            *scores, reply = self.rt.pipeline(build)
        outcome = text(reply[0])
        if outcome == "deleted":
            self.forget_in_indexes(keys, dict(zip(indexes, scores, strict=True)))
        return outcome, text(reply[1]) if len(reply) > 1 else ""

    def forget_in_indexes(self, keys: ActorKeys, seen: dict[str, Any]) -> None:
        """Remove a deleted actor from the hint indexes that name it: its due hint, and its
        member in the quarantine and dead-letter indexes if its score is still the one
        ``seen`` (read before the delete). All are hints, re-checked by their readers; the
        due hint is put back if a send created a fresh actor meanwhile (checked after the
        removal, so either this sees the fresh actor or its send's hint lands after)."""
        member = actor_member(keys.type_name, keys.key)
        bucket = self.rt.keyspace.due_bucket(member)

        def build(pipe: Any) -> None:
            pipe.zrem(bucket, member)
            for index, score in seen.items():
                if score is not None:
                    self.rt.scripts.zrem_unchanged(keys=[index], args=[member, score], client=pipe)
            pipe.exists(keys.meta)

        with redis_errors(_where(keys)):
            if self.rt.pipeline(build)[-1]:
                self.rt.pipeline(lambda pipe: self.add_hint(pipe, keys.type_name, keys.key, 0))

    def notify_exit(self, type_name: str, key: str) -> None:
        """An actor stopped normally: let the tick report it to its supervisor."""
        self.rt.pipeline(lambda pipe: self.add_hint(pipe, type_name, key, 0))

    # -- reading -------------------------------------------------------------------------
    def read_meta(self, keys: ActorKeys) -> tuple[dict[str, str], int, int, int]:
        """(meta hash, mailbox length, dead letter count, undeliverable effect count) in one
        round trip."""
        pipe = self.rt.client.pipeline(transaction=False)
        pipe.hgetall(keys.meta)
        pipe.llen(keys.mailbox)
        pipe.llen(keys.dead)
        pipe.llen(keys.undelivered)
        with redis_errors(keys.meta):
            meta, pending, dead, undelivered = pipe.execute()
        return text_dict(meta), int(pending), int(dead), int(undelivered)

    def read_timers(self, keys: ActorKeys) -> tuple[Timer, ...]:
        """The actor's pending timers, earliest first (the first ``TIMERS_SHOWN``)."""
        pipe = self.rt.client.pipeline(transaction=False)
        pipe.zrange(keys.timers, 0, TIMERS_SHOWN - 1, withscores=True)
        pipe.hgetall(keys.timer_specs)
        with redis_errors(keys.timers):
            members, specs = pipe.execute()
        where = _where(keys)
        payloads = self.rt.payloads
        return parse_timers(
            members, specs, where=where, opened=lambda raw: payloads.open(raw, what=where)
        )

    def look(self, keys: ActorKeys) -> Look:
        """Everything the tick decides from, in one round trip."""
        pipe = self.rt.client.pipeline(transaction=False)
        pipe.hgetall(keys.meta)
        pipe.llen(keys.mailbox)
        pipe.llen(keys.outbox)
        pipe.exists(keys.isolates)
        pipe.zrange(keys.timers, 0, 0, withscores=True)
        pipe.llen(keys.dead)
        meta, pending, outbox, isolates, timer, dead = pipe.execute()
        return Look(
            meta=text_dict(meta),
            pending=int(pending),
            outbox=int(outbox),
            isolates=bool(isolates),
            next_timer=float(timer[0][1]) if timer else None,
            dead=int(dead),
        )
