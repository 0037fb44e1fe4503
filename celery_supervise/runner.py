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
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis

from .codec import encode, text
from .context import Context, in_handler
from .effects import encode_effects
from .errors import CorruptActorData, StateRejected, SuperviseError
from .mailbox import Entry, unparsed_entry
from .store import patiently, run_pipeline

if TYPE_CHECKING:
    from .actors import ActorType
    from .supervision import Supervision

__all__ = ["StepCrashed", "run_actor"]

log = logging.getLogger("celery_supervise")

#: Most messages one task run handles before handing the actor back to the queue.
BATCH_SIZE = 32
#: Longest a task run keeps going (seconds) before re-enqueueing, so one busy actor
#: cannot hold a worker process while others wait.
BATCH_SECONDS = 1.0


class StepCrashed(SuperviseError):
    """Raised by an actor's task run after a crash was recorded (shows in Flower)."""


class TimeLimitExceeded(SuperviseError):
    """A step ran past its actor type's ``time_limit``."""


class _LeaseRenewer(threading.Thread):
    """Renews the lease every third of its length until stopped, lost, or past the limit."""

    def __init__(self, sup: Supervision, meta: str, token: int, limit: float | None) -> None:
        super().__init__(name="celery_supervise-lease", daemon=True)
        self.sup, self.meta, self.token = sup, meta, token
        self.deadline = time.monotonic() + limit if limit else None
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        interval = self.sup.settings.lease_seconds / 3
        lease_ms = int(self.sup.settings.lease_seconds * 1000)
        while not self.stopped.wait(interval):
            if self.deadline is not None and time.monotonic() > self.deadline:
                return  # past time_limit: let the lease lapse so the tick can act
            try:
                if not self.sup.scripts.renew(keys=[self.meta], args=[self.token, lease_ms]):
                    self.lost = True
                    return
            except redis.RedisError:
                continue  # Redis away: keep trying; the commit's fencing decides anyway

    def stop(self) -> None:
        self.stopped.set()


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
    def __init__(self, sup: Supervision, atype: ActorType[Any], key: str, task: Any) -> None:
        self.sup, self.atype, self.key = sup, atype, key
        self.keys = sup.keyspace.actor(atype.name, key)
        self.where = f"actor {atype.name}:{key}"
        hostname = getattr(getattr(task, "request", None), "hostname", None) or "local"
        self.worker = f"{hostname}:{os.getpid()}"
        self.token = 0
        self.version = 0
        self.committed = 0

    def execute(self, build: Callable[[Any], None]) -> list[Any]:
        """One pipelined round trip, repeated while Redis is away (SPEC 6.7)."""
        return patiently(lambda: run_pipeline(self.sup, build), where=self.where)

    def crash_record(
        self, reason: str, exc: BaseException | None, entry: Entry | None, attempt: int
    ) -> dict[str, Any]:
        return {
            "actor": self.atype.name,
            "key": self.key,
            "version": self.version,
            "message_id": entry.message_id if entry else None,
            "seq": entry.seq if entry else 0,
            "attempt": attempt,
            "reason": reason,
            "type": type(exc).__name__ if exc else reason,
            "message": str(exc) if exc else reason,
            "traceback": "".join(traceback.format_exception(exc)) if exc else None,
            "worker": self.worker,
            "time": time.time(),
        }

    def record_crash(self, record: dict[str, Any]) -> list[Any]:
        keys = self.keys

        def build(pipe: Any) -> None:
            # The tick must look at this actor now: the hint goes first.
            self.sup.store.add_hint(pipe, self.atype.name, self.key, 0)
            self.sup.scripts.crash(
                keys=[keys.meta, keys.mailbox, keys.crashes, keys.attempts, keys.dead, keys.outbox],
                args=[
                    self.token,
                    record["seq"],
                    encode(record, what="crash record"),
                    self.atype.max_attempts,
                    "0",
                    50,
                ],
                client=pipe,
            )

        result: list[Any] = self.execute(build)[-1]
        if text(result[0]) == "crashed" and int(result[3]) == 1:
            self.sup.store.index_dead(self.atype.name, self.key)
        if text(result[0]) == "crashed":
            self.sup.log_event(
                "crash",
                actor=self.atype.name,
                key=self.key,
                reason=record["reason"],
                error=f"{record['type']}: {record['message']}",
                message_id=record["message_id"],
                attempt=int(result[2]),
                dead_lettered=bool(int(result[3])),
                consecutive=int(result[4]),
            )
            self.sup.relay_outbox(self.atype.name, self.key)
        return result

    def step(self, state_raw: bytes, entry: Entry, attempt: int) -> tuple[bytes, Context]:
        """Run the handler on a fresh copy of the state; return the new state, encoded."""
        ctx = Context(
            actor=self.atype.name,
            key=self.key,
            message_id=entry.message_id,
            version=self.version,
            attempt=attempt,
            reply_wanted=entry.reply_wanted,
            max_message_bytes=self.sup.settings.max_message_bytes,
        )
        state = json.loads(state_raw)  # checked once per run in ``run``
        message = entry.message()
        marker = in_handler.set(True)
        try:
            with _time_limit(self.atype.time_limit):
                started = time.monotonic()
                result = self.atype.handler(ctx, state, message)
                elapsed = time.monotonic() - started
        finally:
            in_handler.reset(marker)
        if self.atype.time_limit and elapsed > self.atype.time_limit:
            raise TimeLimitExceeded(f"step took {elapsed:.3f} s, over time_limit")
        new_state = state if result is None else result
        return self.check_state(new_state), ctx

    def check_state(self, new_state: Any) -> bytes:
        try:
            raw = encode(new_state, what="new state")
        except SuperviseError as exc:
            raise StateRejected("unserializable_state", str(exc)) from None
        limit = self.sup.settings.max_state_bytes
        if len(raw) > limit:
            raise StateRejected(
                "state_too_large",
                f"new state is {len(raw)} bytes, over supervise_max_state_bytes={limit}",
            )
        problem = self.atype.check(new_state)
        if problem:
            raise StateRejected("invalid_state", f"new state fails validate: {problem}")
        return raw

    def commit(self, entry: Entry, new_raw: bytes, ctx: Context) -> bool:
        keys = self.keys
        effects = ctx.effects
        outbox, selfs, timers, isolates = encode_effects(self, entry, ctx)
        args: list[Any] = [
            self.token,
            entry.seq,
            new_raw,
            '{"message_id":' + _json_str(entry.message_id) + ',"state":' + new_raw.decode() + "}",
            self.atype.history,
            int(self.sup.settings.lease_seconds * 1000),
            "1" if effects.stop else "0",
            len(outbox),
            len(selfs),
            len(timers),
            len(isolates),
        ]
        args += outbox
        for pairs in (selfs, timers, isolates):
            for pair in pairs:
                args += pair
        commit_keys = [
            keys.meta,
            keys.mailbox,
            keys.history,
            keys.attempts,
            keys.outbox,
            keys.timers,
            keys.isolates,
        ]

        def build(pipe: Any) -> None:
            if timers:
                soonest = min(t[0] for t in ctx.effects.timers)
                self.sup.store.add_hint(pipe, self.atype.name, self.key, soonest)
            if outbox:
                self.sup.store.add_hint(
                    pipe, self.atype.name, self.key, self.sup.settings.lease_seconds
                )
            self.sup.scripts.commit(keys=commit_keys, args=args, client=pipe)

        result = self.execute(build)[-1]
        if text(result[0]) != "ok":
            log.warning(
                "celery_supervise lease_lost actor=%s key=%s worker=%s outcome=%s",
                self.atype.name,
                self.key,
                self.worker,
                text(result[0]),
            )
            return False
        self.version = int(result[1])
        self.committed += 1
        if outbox:
            self.sup.relay_outbox(self.atype.name, self.key)
        return True

    def run(self, task: Any) -> dict[str, Any]:
        sup, keys = self.sup, self.keys
        summary: dict[str, Any] = {"actor": self.atype.name, "key": self.key}
        lease_ms = int(sup.settings.lease_seconds * 1000)
        from .tree_shell import supervisor_chain

        chain = supervisor_chain(sup, self.atype.name, self.key, self.atype.supervisor)

        nonce = uuid.uuid4().hex

        def build(pipe: Any) -> None:
            for name in chain:
                pipe.hget(sup.keyspace.supervisor(name), "status")
            sup.store.add_hint(pipe, self.atype.name, self.key, sup.settings.lease_seconds + 0.5)
            sup.scripts.claim(
                keys=[keys.meta, keys.mailbox],
                args=[self.worker, lease_ms, BATCH_SIZE, nonce],
                client=pipe,
            )

        replies = self.execute(build)
        claim = replies[-1]
        outcome = text(claim[0])
        if outcome != "ok":
            summary["outcome"] = outcome
            return summary
        halted_by = next(
            (
                n
                for n, s in zip(chain, replies, strict=False)
                if s is not None and text(s) in ("stopped", "quarantined")
            ),
            None,
        )
        if halted_by is not None:
            # A supervisor above this actor was stopped (escalation): stop here too, keep
            # the mailbox, and let the supervisor's restart bring it back.
            # Recorded first: dying between the two leaves a member the supervisor's
            # restart brings back (a spurious restart at worst), never a lost actor.
            sup.client.sadd(
                sup.keyspace.supervisor_members(halted_by), f"{self.atype.name}:{self.key}"
            )
            ref = sup.ref(self.atype.name, self.key)
            sup.store.halt(ref, "stopped", reason=f"supervisor:{halted_by}")
            summary["outcome"] = f"stopped by supervisor {halted_by}"
            return summary
        self.token = int(claim[1])  # HINCRBY'd by claim.lua: always an integer
        state_raw: bytes | None = claim[3]
        try:
            self.version = int(claim[2])
            attempt_seq, attempts = int(claim[4]), int(claim[5])
        except ValueError as exc:
            # Garbage in the meta hash: a crash naming it, not an anonymous lost lease.
            bad = CorruptActorData(f"{self.where}: meta hash is not celery_supervise's ({exc})")
            self.record_crash(self.crash_record("corrupt_data", bad, None, 0))
            raise StepCrashed(str(bad)) from None
        renewer = _LeaseRenewer(sup, keys.meta, self.token, self.atype.time_limit)
        renewer.start()
        started = time.monotonic()
        try:
            try:
                if state_raw is None:
                    state_raw = self.check_state(self.atype.initial_state(self.key))
                else:
                    _check_stored_state(state_raw, self.where)
            except Exception as exc:
                # Not any message's fault: recorded against no message, so no innocent
                # message is dead-lettered for it; the supervisor's limits apply.
                self.record_crash(self.crash_record(_reason(exc), exc, None, 0))
                raise StepCrashed(f"{self.where}: state unusable: {exc}") from exc
            for raw in claim[6:]:
                if time.monotonic() - started > BATCH_SECONDS and self.committed:
                    break
                entry: Entry | None = None
                attempt = 1
                try:
                    entry = Entry.parse(raw, where=self.where)
                    attempt = attempts + 1 if attempt_seq == entry.seq else 1
                    new_raw, ctx = self.step(state_raw, entry, attempt)
                except Exception as exc:
                    if entry is None:  # garbage in the mailbox: tie the crash to it
                        entry = unparsed_entry(raw)
                        attempt = attempts + 1 if attempt_seq == entry.seq else 1
                    result = self.record_crash(self.crash_record(_reason(exc), exc, entry, attempt))
                    dead = len(result) > 3 and int(result[3]) == 1
                    raise StepCrashed(
                        f"{self.where}: message {entry.message_id!r} attempt {attempt} crashed: "
                        f"{type(exc).__name__}: {exc}"
                        + (f" -- dead-lettered after {attempt} attempts" if dead else "")
                    ) from exc
                if not self.commit(entry, new_raw, ctx):
                    summary["outcome"] = "lease_lost"
                    return summary
                state_raw = new_raw
                if ctx.effects.stop:
                    break
        finally:
            renewer.stop()
            summary.update(committed=self.committed, version=self.version)
        released = text(
            self.execute(
                lambda pipe: sup.scripts.release(
                    keys=[keys.meta, keys.mailbox], args=[self.token], client=pipe
                )
            )[-1][0]
        )
        if released == "more":
            sup.publish(self.atype.name, self.key)
        elif released == "stopped":
            sup.log_event("stopped", actor=self.atype.name, key=self.key, reason="normal")
            sup.notify_exit(self.atype.name, self.key)
        summary["outcome"] = released
        return summary


def _reason(exc: BaseException) -> str:
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


def _json_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def run_actor(sup: Supervision, atype: ActorType[Any], key: str, task: Any) -> dict[str, Any]:
    """The body of an actor type's Celery task."""
    return _Run(sup, atype, key, task).run(task)
