"""One Celery task run of an actor: take the lease, handle a bounded batch, commit each step.

The run holds the actor's lease (renewed by a thread while a handler runs) and a fencing
token; every commit presents the token, so a worker that lost its lease -- paused, partitioned,
or simply too slow -- can never commit. A crash is recorded and the batch ends; the
supervisor tick decides the restart.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from .codec import encode, text
from .context import Context, in_handler
from .crashes import record_crash
from .effects import encode_effects
from .errors import CodecError, CorruptActorData, StateRejected, SuperviseError
from .keyspace import ActorKeys, actor_member
from .mailbox import Entry, unparsed_entry
from .registry import ActorSpec
from .relay import relay_outbox
from .runtime import Runtime, new_run_id
from .store import ActorStore, Claim, CrashOutcome, CrashRecord
from .tracing import Carrier, StepSpan, step_span
from .tree_shell import supervisor_chain

__all__ = [
    "StepCrashed",
    "TimeLimitExceeded",
    "check_state",
    "crash_reason",
    "run_actor",
    "step_on_copy",
]

log = logging.getLogger("celery_supervise")

#: Most messages one task run handles before handing the actor back to the queue.
BATCH_SIZE = 32
#: Actors this process refused for a payload it cannot open (logged once each).
_refused: set[str] = set()
#: Longest a task run keeps going (seconds) before re-enqueueing, so one busy actor
#: cannot hold a worker process while others wait.
BATCH_SECONDS = 1.0


class StepCrashed(SuperviseError):
    """Raised by an actor's task run after a crash was recorded (shows in Flower)."""


class TimeLimitExceeded(SuperviseError):
    """A step ran past its actor type's ``time_limit``."""


class _Lease:
    """One step's lease, renewed by this process's renewal thread (``_Renewals``) every
    third of its length until stopped, lost, or past the step's time limit (counted from
    the start of each step: ``step_started``)."""

    def __init__(self, rt: Runtime, keys: ActorKeys, token: int, limit: float | None) -> None:
        self.rt, self.keys, self.token = rt, keys, token
        self.limit = limit
        self.deadline = time.monotonic() + limit if limit else None
        self.interval = rt.settings.lease_seconds / 3
        self.lease_ms = int(rt.settings.lease_seconds * 1000)
        self.next_at = time.monotonic() + self.interval
        self.lost = False

    def step_started(self) -> None:
        if self.limit:
            self.deadline = time.monotonic() + self.limit

    def start(self) -> None:
        _RENEWALS.watch(self)

    def stop(self) -> None:
        _RENEWALS.unwatch(self)

    def renew(self) -> bool:
        """Renew once; False when it is no longer to be renewed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            return False  # past time_limit: let the lease lapse so the tick can act
        try:
            if not ActorStore(self.rt).renew(self.keys, self.token, self.lease_ms):
                self.lost = True
                return False
        except redis.RedisError:
            pass  # Redis away: keep trying; the commit's fencing decides anyway
        return True


class _Renewals:
    """One thread per process renews the leases of the steps it runs: a run serves many
    actors, and a thread started for each would cost more than the step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Made anew in a forked child (the parent's thread and lock do not come along)."""
        self.cond = threading.Condition()
        self.leases: set[_Lease] = set()
        self.thread: threading.Thread | None = None

    def watch(self, lease: _Lease) -> None:
        with self.cond:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._loop, name="celery_supervise-lease", daemon=True
                )
                self.thread.start()
            self.leases.add(lease)
            self.cond.notify()

    def unwatch(self, lease: _Lease) -> None:
        with self.cond:
            self.leases.discard(lease)

    def _loop(self) -> None:
        while True:
            with self.cond:
                now = time.monotonic()
                due = [lease for lease in self.leases if lease.next_at <= now]
                if not due:
                    soonest = min((lease.next_at for lease in self.leases), default=now + 60)
                    self.cond.wait(max(soonest - now, 0.001))
                    continue
                for lease in due:
                    lease.next_at = now + lease.interval
            for lease in due:  # outside the lock: a slow Redis holds up no step's start
                try:
                    renewing = lease.renew()
                except Exception as exc:  # never the end of this thread: every lease needs it
                    log.warning("celery_supervise lease_renew_failed actor=%s key=%s error=%r",
                                lease.keys.type_name, lease.keys.key, exc)  # fmt: skip
                    renewing = True
                if not renewing:
                    self.unwatch(lease)


_RENEWALS = _Renewals()
os.register_at_fork(after_in_child=_RENEWALS.reset)


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt the handler after ``seconds`` when running in the main thread (prefork)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded(f"step exceeded time_limit={seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Run:
    """One task run: claim, (halted by a supervisor?), load the state, handle entries one
    by one, release."""

    def __init__(
        self, rt: Runtime, atype: ActorSpec[Any], key: str, task: Any,
        deadline: float | None = None,
    ) -> None:
        self.rt, self.atype, self.key = rt, atype, key
        #: When (``time.monotonic()``) the batch stops going on: BATCH_SECONDS from the
        #: first step unless the task run it serves in ends sooner.
        self.deadline = deadline
        self.store = ActorStore(rt)
        self.keys = rt.keyspace.actor(atype.name, key)
        self.where = f"actor {atype.name}:{key}"
        hostname = getattr(getattr(task, "request", None), "hostname", None) or "local"
        self.worker = f"{hostname}:{os.getpid()}"
        self.lease_ms = int(rt.settings.lease_seconds * 1000)
        self.token = 0
        self.version = 0
        self.committed = 0
        self.renewer: _Lease | None = None

    def run(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"actor": self.atype.name, "key": self.key}
        claim = self.claim()
        if claim.outcome == "too_new":
            self.refuse_newer()
        if claim.outcome != "ok":
            return {**summary, "outcome": claim.outcome}
        if claim.halted_by is not None:
            return {**summary, "outcome": self.stop_for_supervisor(claim.halted_by)}
        self.token, self.version = claim.token, claim.version
        renewer = self.renewer = _Lease(
            self.rt, self.keys, self.token, self.atype.time_limit
        )
        renewer.start()
        try:
            state = self.load_state(claim)
            if not self.handle_batch(claim, state):
                return {**summary, "outcome": "lease_lost"}
        except CodecError as exc:
            renewer.stop()
            return {**summary, "outcome": self.refuse(exc)}
        finally:
            renewer.stop()
            summary.update(committed=self.committed, version=self.version)
        return {**summary, "outcome": self.release()}

    def refuse(self, exc: CodecError) -> str:
        """This process cannot open the actor's state or a message (a wrong or missing
        key): not the message's fault, so no crash and no attempt. Give the lease back and
        publish the run again one tick interval later, as for a state too new: published
        from inside this run, it goes to a worker that is free now (this one is not), so
        it soon lands on a worker whose codec opens it, at a bounded rate if none does.
        Left to the tick's rewake alone, the re-publish ran inside a tick, and with two
        workers the run kept going to whichever one had not taken that tick: the wrong
        one, every time. Logged once per actor and process."""
        member = actor_member(self.atype.name, self.key)
        if member not in _refused:
            _refused.add(member)
            log.error("celery_supervise codec_refused actor=%s key=%s worker=%s error=%s "
                      "(not stepped; left for a worker whose supervise_codec opens it)",
                      self.atype.name, self.key, self.worker, exc)  # fmt: skip
        released = self.store.release(self.keys, self.token)
        if released == "stale":
            return released
        self.publish_later()
        return "refused"

    def publish_later(self) -> None:
        """Publish this actor's run again one tick interval from now (a run this process
        must not step); the tick's rewake repairs it if the publish is lost."""
        self.rt.dispatch(
            self.atype.name, (self.key,), {}, {"countdown": self.rt.settings.tick_interval}
        )

    def claim(self) -> Claim:
        chain = supervisor_chain(self.rt.tree, self.atype.name, self.key, self.atype.supervisor)
        return self.store.claim(
            self.keys,
            worker=self.worker,
            lease_ms=self.lease_ms,
            batch=BATCH_SIZE,
            nonce=uuid.uuid4().hex,
            supervisors=chain,
            hint_in=self.rt.settings.lease_seconds + 0.5,
            state_version=self.atype.state_version,
        )

    def refuse_newer(self) -> None:
        """The stored state was written by newer code (a rolling deploy): this worker must
        not step it. The claim wrote nothing (the actor stays scheduled); the run is
        published again one tick interval later, so it soon lands on a newer worker at a
        bounded rate, and the tick's rewake repairs it if that publish is lost."""
        self.publish_later()
        log.warning(
            "celery_supervise too_new actor=%s key=%s worker=%s state_version=%s "
            "(stored state is newer than this code; published again for a newer worker)",
            self.atype.name, self.key, self.worker, self.atype.state_version,
        )  # fmt: skip

    def stop_for_supervisor(self, supervisor: str) -> str:
        """A supervisor above this actor was stopped (escalation): stop here too, keep the
        mailbox, and let the supervisor's restart bring it back. Recorded first: dying
        between the two leaves a member the supervisor's restart brings back (a spurious
        restart at worst), never a lost actor."""
        members = self.rt.keyspace.supervisor_members(supervisor)
        child = f"{self.atype.name}:{self.key}"
        self.rt.client.sadd(members, child)
        self.store.halt(self.keys, "stopped", reason=f"supervisor:{supervisor}")
        # The supervisor may have been restarted since the claim read it, its restart
        # listing its stopped children before this one joined them: look again, and come
        # back with it if so (a restart after this look finds the member and does that).
        status = self.rt.client.hget(self.rt.keyspace.supervisor(supervisor), "status")
        if status is None or text(status) not in ("stopped", "quarantined"):
            self.store.halt(self.keys, "backoff", reason=f"restart:{supervisor}",
                            only_from=("stopped",))  # fmt: skip
            self.rt.client.srem(members, child)
            return f"restarted with supervisor {supervisor}"
        return f"stopped by supervisor {supervisor}"

    def load_state(self, claim: Claim) -> bytes:
        """The committed state (or the initial one); unusable state is not any message's
        fault, so it is recorded against no message and the supervisor's limits apply."""
        try:
            if claim.problem is not None:
                raise CorruptActorData(f"{self.where}: {claim.problem}")
            if claim.state is None:
                return self.check_state(self.atype.initial_state(self.key))
            state = self.rt.payloads.open(claim.state, what=f"{self.where}: stored state")
            _check_stored_state(state, self.where)
            if claim.state_version < self.atype.state_version:
                return self.upgraded(state, claim.state_version)
            return state
        except CodecError:
            raise  # not the state's fault: refused (see ``refuse``)
        except Exception as exc:
            self.crash(CrashRecord.of(crash_reason(exc), exc, **self._about(None, 0)))
            raise StepCrashed(f"{self.where}: state unusable: {exc}") from exc

    def upgraded(self, raw: bytes, stored_version: int) -> bytes:
        """The stored state upgraded to this type's ``state_version``; the upgrade is
        written by the next commit only (a crash here leaves the stored state as it was)."""
        state = self.atype.upgrade(json.loads(raw), stored_version)
        try:
            return self.check_state(state)
        except StateRejected as exc:
            raise StateRejected("migration_failed", f"upgraded state: {exc}") from exc

    def handle_batch(self, claim: Claim, state: bytes) -> bool:
        """Handle the claimed entries in order, for at most ``BATCH_SECONDS``; False if the
        lease was lost."""
        deadline = time.monotonic() + BATCH_SECONDS
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        for i, raw in enumerate(claim.entries):
            has_next = i + 1 < len(claim.entries)

            def go_on(has_next: bool = has_next) -> bool:
                return has_next and time.monotonic() < deadline

            stepped = self.handle(raw, state, claim, go_on)
            if stepped is None:
                return False
            state, more = stepped
            if not more:
                break
        return True

    def handle(
        self, raw: bytes, state: bytes, claim: Claim, go_on: Callable[[], bool]
    ) -> tuple[bytes, bool] | None:
        """One entry: step it and commit. (new state, whether the next step follows), or
        None: the lease was lost. ``go_on`` says, at commit time, if the batch goes on: the
        commit records it, so a worker lost after it is blamed on the next entry only if it
        was about to step it."""
        parsed: Entry | CorruptActorData
        try:
            parsed = Entry.parse(raw, where=self.where)
        except CorruptActorData as exc:
            parsed = exc  # a crash of this step, recorded inside its span
        parent = parsed.trace if isinstance(parsed, Entry) else None
        # One span per step, its parent the sender's context kept in the entry (tracing.py).
        with step_span(self.atype.name, self.key, parent) as span:
            return self._handle(raw, parsed, state, claim, go_on, span)

    def _handle(
        self,
        raw: bytes,
        parsed: Entry | CorruptActorData,
        state: bytes,
        claim: Claim,
        go_on: Callable[[], bool],
        span: StepSpan,
    ) -> tuple[bytes, bool] | None:
        entry: Entry | None = None
        attempt = 1
        try:
            if not isinstance(parsed, Entry):
                raise parsed
            entry = parsed
            attempt = claim.attempts + 1 if claim.attempt_seq == entry.seq else 1
            span.note(message_id=entry.message_id, message_seq=entry.seq, attempt=attempt)
            started = time.monotonic()
            new_state, ctx = self.step(state, entry, attempt)
            took = time.monotonic() - started
        except CodecError:
            span.note(outcome="refused")
            raise  # a wrong key is not the message's fault: refused (see ``refuse``)
        except Exception as exc:
            if entry is None:  # garbage in the mailbox: tie the crash to it
                entry = unparsed_entry(raw)
                attempt = claim.attempts + 1 if claim.attempt_seq == entry.seq else 1
                span.note(message_id=entry.message_id, message_seq=entry.seq, attempt=attempt)
            span.note(outcome="crashed")
            span.failed(exc)
            record = CrashRecord.of(crash_reason(exc), exc, **self._about(entry, attempt))
            outcome = self.crash(record)
            raise StepCrashed(
                f"{self.where}: message {entry.message_id!r} attempt {attempt} crashed: "
                f"{type(exc).__name__}: {exc}"
                + _fate(outcome, attempt)
            ) from exc
        more = not ctx.effects.stop and go_on()
        if not self.commit(
            entry, new_state, ctx, stepping_next=more, trace=span.carrier, took=took
        ):
            span.note(outcome="lease_lost")
            return None
        span.note(outcome="committed", version=self.version)
        return new_state, more

    def _about(self, entry: Entry | None, attempt: int) -> dict[str, Any]:
        return {
            "actor": self.atype.name,
            "key": self.key,
            "version": self.version,
            "message_id": entry.message_id if entry else None,
            "seq": entry.seq if entry else 0,
            "attempt": attempt,
            "worker": self.worker,
        }

    def crash(self, record: CrashRecord) -> CrashOutcome:
        return record_crash(
            self.rt, self.keys, record, token=self.token, max_attempts=self.atype.max_attempts
        )

    def step(self, state_raw: bytes, entry: Entry, attempt: int) -> tuple[bytes, Context]:
        """Run the handler on a fresh copy of the state; return the new state, encoded."""
        renewer = self.renewer
        return step_on_copy(
            self.rt,
            self.atype,
            self.key,
            state_raw=state_raw,
            entry=entry,
            version=self.version,
            attempt=attempt,
            time_limit=self.atype.time_limit,
            on_start=renewer.step_started if renewer is not None else None,
        )

    def check_state(self, new_state: Any) -> bytes:
        return check_state(self.rt, self.atype, new_state)

    def commit(
        self,
        entry: Entry,
        new_raw: bytes,
        ctx: Context,
        *,
        stepping_next: bool,
        trace: Carrier | None = None,
        took: float = 0.0,
    ) -> bool:
        """Commit one step; ``trace`` (the step's span context) is stored with its effects,
        ``took`` (the handler's seconds) counted in the step-time histogram."""
        effects = encode_effects(
            ctx.effects,
            type_name=self.atype.name,
            key=self.key,
            version=self.version + 1,
            reply_to=entry.message_id if entry.reply_wanted else None,
            now_ms=self.rt.clock_ms(),
            seal=self.rt.payloads.seal,
            trace=trace,
        )
        hints = []
        if delays := ctx.effects.timer_delays():
            hints.append(min(delays))
        if effects.outbox:
            hints.append(self.rt.settings.lease_seconds)
        if self.atype.idle_ttl is not None:  # the tick deletes it if it stays idle that long
            hints.append(self.atype.idle_ttl)
        outcome = self.store.commit(
            self.keys,
            token=self.token,
            seq=entry.seq,
            state=new_raw,
            message_id=entry.message_id,
            history=self.atype.history,
            lease_ms=self.lease_ms,
            effects=effects,
            hints=hints,
            stepping_next=stepping_next,
            state_version=self.atype.state_version,
            step_seconds=took,
        )
        if not outcome.ok:
            log.warning(
                "celery_supervise lease_lost actor=%s key=%s worker=%s outcome=%s",
                self.atype.name,
                self.key,
                self.worker,
                outcome.refused,
            )
            return False
        self.version = outcome.version
        self.committed += 1
        if effects.outbox:
            relay_outbox(self.rt, self.atype.name, self.key)
        return True

    def release(self) -> str:
        released = self.store.release(self.keys, self.token)
        if released == "more":
            self.rt.publish(self.atype.name, self.key)
        elif released == "stopped":
            self.rt.events.record("stopped", actor=self.atype.name, key=self.key, reason="normal")
            self.store.notify_exit(self.atype.name, self.key)
        return released


def _fate(outcome: CrashOutcome, attempt: int) -> str:
    """What became of the crashed message, for the StepCrashed text."""
    if outcome.dead_lettered:
        return f" -- dead-lettered after {attempt} attempts"
    if outcome.dead_letters_full:
        return " -- kept, not dead-lettered: the dead letters are full, actor quarantined"
    return ""


def crash_reason(exc: BaseException) -> str:
    """The crash reason a step's exception is recorded with."""
    if isinstance(exc, StateRejected):
        return exc.reason
    if isinstance(exc, TimeLimitExceeded):
        return "time_limit"
    if isinstance(exc, CorruptActorData):
        return "corrupt_data"
    return "exception"


def _check_stored_state(raw: bytes, where: str) -> None:
    try:
        json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptActorData(f"{where}: stored state is not valid JSON ({exc})") from None


def step_on_copy(
    rt: Runtime,
    atype: ActorSpec[Any],
    key: str,
    *,
    state_raw: bytes,
    entry: Entry,
    version: int,
    attempt: int,
    time_limit: float | None,
    replaying: bool = False,
    on_start: Callable[[], None] | None = None,
) -> tuple[bytes, Context]:
    """One step, pure of Redis: the handler on a fresh copy of ``state_raw`` (JSON, already
    checked), then the new state checked and encoded. Raises what makes the step a crash;
    the effects asked for are in the returned ``ctx.effects``, performed by nobody here
    (the runner commits them, a replay only reports them)."""
    ctx = Context(
        actor=atype.name,
        key=key,
        message_id=entry.message_id,
        version=version,
        attempt=attempt,
        reply_wanted=entry.reply_wanted,
        max_message_bytes=rt.settings.max_message_bytes,
        replaying=replaying,
        min_timer_period=rt.settings.tick_interval,
    )
    state = json.loads(state_raw)
    message = entry.message(rt.payloads)
    marker = in_handler.set(True)
    if on_start is not None:
        on_start()
    try:
        with _time_limit(time_limit):
            started = time.monotonic()
            result = atype.handler(ctx, state, message)
            elapsed = time.monotonic() - started
    finally:
        in_handler.reset(marker)
    if time_limit and elapsed > time_limit:
        raise TimeLimitExceeded(f"step took {elapsed:.3f} s, over time_limit")
    new_state = state if result is None else result
    return check_state(rt, atype, new_state), ctx


def check_state(rt: Runtime, atype: ActorSpec[Any], new_state: Any) -> bytes:
    """``new_state`` encoded, or ``StateRejected``: not JSON, too large, or fails validate."""
    try:
        raw = encode(new_state, what="new state")
    except SuperviseError as exc:
        raise StateRejected("unserializable_state", str(exc)) from None
    limit = rt.settings.max_state_bytes
    if len(raw) > limit:
        raise StateRejected(
            "state_too_large",
            f"new state is {len(raw)} bytes, over supervise_max_state_bytes={limit}",
        )
    problem = atype.check(new_state)
    if problem:
        raise StateRejected("invalid_state", f"new state fails validate: {problem}")
    return raw


def run_actor(rt: Runtime, atype: ActorSpec[Any], key: str, task: Any) -> dict[str, Any]:
    """The body of an actor type's Celery task: a run of the actor ``key``, then of the
    actors of its type woken meanwhile (``serve_ready``) until ``BATCH_SECONDS`` are up.

    The result names the actor and what it committed, and ``served``: each other actor
    served, with its committed steps. A crash (or an actor's unusable data) is recorded on
    its actor and the run goes on with the next one; the run then raises the first
    (``StepCrashed`` for a crash; a note names the others), so Flower shows the run as
    failed, with the handler's exception chained."""
    deadline = time.monotonic() + BATCH_SECONDS
    failed: list[tuple[str, Exception]] = []
    summary: dict[str, Any] = {"actor": atype.name, "key": key}
    try:
        summary = _Run(rt, atype, key, task).run()
    except Exception as exc:
        failed.append((key, exc))
    run_id = getattr(getattr(task, "request", None), "id", None)
    served: dict[str, int] = {}
    if run_id:
        try:
            serve_ready(rt, atype, task, run_id, deadline, failed, served)
        except Exception as exc:  # the ready set failed (Redis, the broker): after the rest
            failed.append(("(ready set)", exc))
        if key in served:  # woken again while this run went on: its steps count as its own
            summary["committed"] = summary.get("committed", 0) + served.pop(key)
    summary["served"] = served
    if failed:
        _raise_first(atype.name, failed)
    return summary


def serve_ready(
    rt: Runtime,
    atype: ActorSpec[Any],
    task: Any,
    run_id: str,
    deadline: float,
    failed: list[tuple[str, Exception]],
    served: dict[str, int],
) -> None:
    """Serve the actors of ``atype`` waiting in its ready set, a few at a time, until
    ``deadline``; give back the ones taken and not reached -- when something fails here,
    all it holds. Counts actor key -> steps committed in ``served``; an actor's failure is
    appended to ``failed``, one of the ready set's own raised."""
    taken: list[str] = []
    ended = False
    clean = False
    try:
        while time.monotonic() < deadline:
            spawn_id = new_run_id()
            reply = rt.ready(atype.name, "take", run_id, spawn_id=spawn_id)
            spawned, *taken = (text(x) for x in reply)
            if spawned:
                rt.dispatch_run(atype.name, spawned, spawn_id)
            if not taken:
                ended = True
                break
            while taken and time.monotonic() < deadline:
                key = taken[0]
                try:
                    result = _Run(rt, atype, key, task, deadline=deadline).run()
                    served[key] = served.get(key, 0) + int(result.get("committed", 0))
                except Exception as exc:
                    failed.append((key, exc))
                    served.setdefault(key, 0)
                del taken[0]
        clean = True
    finally:
        if not ended:
            _end_run(rt, atype.name, run_id, taken, given_up=not clean)


def _end_run(
    rt: Runtime, type_name: str, run_id: str, unserved: list[str], *, given_up: bool
) -> None:
    """This run is no longer live: give back what it did not serve (``given_up``: all it
    holds, the local list may be behind), and hand the ready set to a new run if actors
    still wait. Redis refusing leaves the run to stop counting as live after a lease, its
    actors going back then."""
    spawn_id = new_run_id()
    try:
        mode = "lost" if given_up else "end"
        reply = rt.ready(type_name, mode, run_id, spawn_id=spawn_id, keys=tuple(unserved))
        (handed,) = (text(x) for x in reply)
    except redis.RedisError as exc:
        log.warning("celery_supervise ready_failed actor=%s run=%s error=%r "
                    "(its actors go back to the ready set when it stops counting as live)",
                    type_name, run_id, exc)  # fmt: skip
        return
    if handed:
        rt.dispatch_run(type_name, handed, spawn_id)


def _raise_first(type_name: str, failed: list[tuple[str, Exception]]) -> None:
    """Raise the run's first failure; a note names the others (each is recorded on its own
    actor already)."""
    first = failed[0][1]
    if len(failed) > 1:
        others = ", ".join(f"{type_name}:{key}" for key, _ in failed[1:])
        first.add_note(f"and {len(failed) - 1} more failed in this run: {others}")
    raise first
