"""The imperative shell around one actor's Redis keys: thin typed wrappers over the scripts.

Every state change of an actor is one script on the actor's own slot. The due-time index
(other slots) only holds hints: written *before* the change they announce (``ZADD LT``,
pipelined with it) so a process dying in between leaves at worst a spurious hint, which the
tick checks against the actor's own keys and drops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import redis

from .codec import decode, encode, text
from .errors import (
    AskTimeout,
    CorruptActorData,
    MessageDeadLettered,
    RedisRejected,
    RedisUnavailable,
)
from .keyspace import ActorKeys, actor_member
from .mailbox import header_json

if TYPE_CHECKING:
    from .ref import ActorRef, DeadLetter
    from .supervision import Supervision

__all__ = ["ActorStore", "patiently", "redis_errors", "run_pipeline"]

T = TypeVar("T")
log = logging.getLogger("celery_supervise")

#: Crash records kept per actor (the per-message records travel with dead letters).
CRASHES_KEPT = 50
#: How long an ``ask`` reply waits in Redis for its asker.
REPLY_TTL_SECONDS = 300
#: Longest single blocking read: under redis-py's 5 s socket timeout.
BLOCK_SECONDS = 1.0
#: How long a worker or tick waits for Redis to come back before giving up a call.
REDIS_PATIENCE = 120.0


#: Error codes of a Redis that refuses writes for a while; a script meets them at its first
#: write (Redis checks before a script has written anything), so nothing was written.
REJECTED_CODES = ("OOM", "MISCONF", "READONLY", "NOREPLICAS", "MASTERDOWN", "BUSY")
#: What marks corrupt data: the scripts' own "CORRUPT ..." (they check every field before
#: their first write) and Redis' WRONGTYPE (a key of another type, met by a plain read).
CORRUPT_CODES = ("CORRUPT", "WRONGTYPE")


@contextmanager
def redis_errors(where: str) -> Iterator[None]:
    """Turn Redis' complaints about data we did not write into ``CorruptActorData``, a Redis
    refusing writes into ``RedisRejected``, and a Redis that does not answer into
    ``RedisUnavailable``. Any other error (a script bug) is raised as it is: never taken for
    corruption, since that would drop the actor's hint."""
    try:
        yield
    except redis.ResponseError as exc:
        # redis-py prefixes an error met in a pipeline with "Command # N (...) of pipeline
        # caused error: "; the error code comes after it.
        text = str(exc).partition(" of pipeline caused error: ")[2] or str(exc)
        # redis-py strips the code of the errors it has a class for (OOM, READONLY, ...)
        code = getattr(exc, "status_code", None) or text.split(" ", 1)[0]
        if code in CORRUPT_CODES:
            raise CorruptActorData(f"{where}: {text}") from None
        if code in REJECTED_CODES:
            raise RedisRejected(
                f"{where}: Redis refused the write, nothing was written ({code} {text})"
            ) from None
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(f"{where}: Redis did not answer ({exc})") from exc


def patiently(fn: Callable[[], T], *, where: str, patience: float = REDIS_PATIENCE) -> T:
    """Call ``fn`` until Redis answers and accepts writes (workers and ticks wait out an
    outage, SPEC 6.7, or a Redis out of memory). ``fn`` must be safe to repeat: the scripts
    it runs recognise their own earlier success."""
    delay = 0.1
    deadline = time.monotonic() + patience
    while True:
        try:
            with redis_errors(where):
                return fn()
        except (RedisUnavailable, RedisRejected) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning(
                "celery_supervise redis_%s where=%r retry_in=%.1fs",
                "unavailable" if isinstance(exc, RedisUnavailable) else "rejected",
                where,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def run_pipeline(
    sup: Supervision, build: Callable[[Any], None], *, client: redis.Redis | None = None
) -> list[Any]:
    """Build and execute a non-transactional pipeline: one round trip. Pipelines hold at
    most one script; if Redis lost it (restart, flush), load them all and run again (safe:
    a script refused with NOSCRIPT did not run)."""
    for attempt in (1, 2):
        pipe = (client or sup.client).pipeline(transaction=False)
        build(pipe)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            sup.scripts.load_all()
    raise AssertionError("unreachable")


def reply_marker(reply_key: str) -> str:
    """The key saying the answer for ``reply_key`` was pushed: the reply key's hash tag, so
    any reply key works (one cluster slot)."""
    return reply_key + ":pushed"


def text_dict(raw: dict[Any, Any]) -> dict[str, str]:
    try:
        return {text(k): text(v) for k, v in raw.items()}
    except UnicodeDecodeError as exc:
        bad = next(k for k, v in raw.items() if not _utf8(k) or not _utf8(v))
        raise CorruptActorData(
            f"meta field {bad!r} holds bytes that are not UTF-8 text ({exc})"
        ) from None


def _utf8(value: Any) -> bool:
    try:
        if isinstance(value, bytes):
            value.decode()
        return True
    except UnicodeDecodeError:
        return False


class ActorStore:
    def __init__(self, supervision: Supervision) -> None:
        self.sup = supervision

    @property
    def client(self) -> redis.Redis:
        return self.sup.client

    def member(self, type_name: str, key: str) -> str:
        return actor_member(type_name, key)

    def add_hint(self, pipe: Any, type_name: str, key: str, seconds_from_now: float) -> None:
        """Ask the tick to look at this actor no later than ``seconds_from_now``."""
        member = self.member(type_name, key)
        pipe.zadd(
            self.sup.keyspace.due_bucket(member),
            {member: int((time.time() + seconds_from_now) * 1000)},
            lt=True,
        )

    # -- sending -------------------------------------------------------------------------
    def send(
        self,
        type_name: str,
        key: str,
        batch: Sequence[tuple[str, bytes, bool | str]],
        *,
        reply: bool = False,
        origin: tuple[str, int] | None = None,
    ) -> list[int]:
        """Append ``(message_id, body, dedup)`` entries; wake the actor if idle. ``dedup`` is
        True for a caller-given id, or the dedup key itself (a key of this actor outside the
        caller-id namespace, e.g. ``keys.requeued(seq)``).
        ``origin`` = (sender member, ordinal) marks a relay from another actor's outbox."""
        keys = self.sup.keyspace.actor(type_name, key)
        args: list[Any] = [type_name, key, self.sup.settings.dedup_window, len(batch)]
        dedup_keys = []
        for mid, body, given in batch:
            if origin is not None:
                args += [header_json(mid, reply=reply), body, f"2:{origin[1]}"]
                dedup_keys.append(keys.origin(origin[0]))
                continue
            args += [header_json(mid, reply=reply), body, "1" if given else "0"]
            dedup_keys.append(given if isinstance(given, str) else keys.dedup(mid))

        def build(pipe: Any) -> None:
            # The hint before the append covers a client dying mid-pipeline; the one after
            # covers a tick that, having read the actor empty, drops the hint in between
            # (the tick re-checks after dropping; see tick._drop_if_unchanged).
            self.add_hint(pipe, type_name, key, self.sup.repair_after)
            self.sup.scripts.send(
                keys=[keys.meta, keys.mailbox, *dedup_keys], args=args, client=pipe
            )
            self.add_hint(pipe, type_name, key, self.sup.repair_after)

        with redis_errors(f"actor {type_name}:{key}"):
            result = run_pipeline(self.sup, build, client=self.sup.client_once)[-2]
        if int(result[0]) == 1:
            # The messages are durable now; a failed publish must not make the caller think
            # they were not sent (a retry without caller ids would duplicate them). The hint
            # written above makes the tick re-publish the run (``rewake``) after
            # ``repair_after``.
            try:
                self.sup.publish(type_name, key)
            except Exception as exc:
                log.warning(
                    "celery_supervise publish_failed actor=%s key=%s error=%r "
                    "(messages are stored; the tick will wake the actor)",
                    type_name,
                    key,
                    exc,
                )
        return [int(x) for x in result[1:]]

    def ask(self, ref: ActorRef, message: Any, *, timeout: float, message_id: str | None) -> Any:
        import uuid

        mid = message_id or uuid.uuid4().hex
        body = ref._encode(message)
        reply_key = self.sup.keyspace.reply(mid)
        self.send(ref.type_name, ref.key, [(mid, body, message_id is not None)], reply=True)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AskTimeout(
                    f"no reply from {ref.type_name}:{ref.key} to message {mid!r} within "
                    f"{timeout} s (the message stays queued and will still be handled)"
                )
            got = self.client.blpop([reply_key], timeout=max(0.01, min(left, BLOCK_SECONDS)))
            if got:
                answer = decode(got[1], what=f"reply to {mid!r}")
                if "dead" in answer:
                    raise MessageDeadLettered(mid, answer["dead"])
                return answer["value"]

    def index_dead(self, type_name: str, key: str) -> None:
        """Note that this actor holds dead letters (after a crash script dead-lettered one)."""
        self.client.zadd(self.sup.keyspace.dead_index, {self.member(type_name, key): time.time()})

    def actors_with_dead_letters(self) -> list[tuple[str, str, int]]:
        """(type, key, count) of every actor holding dead letters, most recent first; the
        index is pruned of actors found to have none left."""
        from .keyspace import parse_actor_member

        index = self.sup.keyspace.dead_index
        members = [text(m) for m in self.client.zrevrange(index, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.llen(self.sup.keyspace.actor(*parse_actor_member(member)).dead)
        out = []
        for member, count in zip(members, pipe.execute(), strict=True):
            if count:
                out.append((*parse_actor_member(member), int(count)))
            else:
                self.client.zrem(index, member)
        return out

    def push_reply(self, pipe: Any, message_id: str, payload: bytes) -> None:
        """Queue on ``pipe`` the one push of this ask's answer (later pushes do nothing)."""
        key = self.sup.keyspace.reply(message_id)
        self.sup.scripts.reply(
            keys=[key, reply_marker(key)], args=[payload, REPLY_TTL_SECONDS], client=pipe
        )

    # -- reading -------------------------------------------------------------------------
    @overload
    def read_meta(self, keys: ActorKeys) -> tuple[dict[str, str], int]: ...
    @overload
    def read_meta(
        self, keys: ActorKeys, *, with_dead: Literal[True]
    ) -> tuple[dict[str, str], int, int]: ...
    def read_meta(self, keys: ActorKeys, *, with_dead: bool = False) -> Any:
        """(meta hash, mailbox length[, dead letter count]) in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.meta)
        pipe.llen(keys.mailbox)
        if with_dead:
            pipe.llen(keys.dead)
        with redis_errors(keys.meta):
            meta, pending, *dead = pipe.execute()
        if with_dead:
            return text_dict(meta), int(pending), int(dead[0])
        return text_dict(meta), int(pending)

    # -- operator and supervisor transitions -----------------------------------------------
    def halt(
        self,
        ref: ActorRef,
        status: str,
        *,
        reason: str,
        delay: float = 0.0,
        only_from: str = "*",
        cause: str = "",
    ) -> str:

        def build(pipe: Any) -> None:
            if status == "backoff":
                self.add_hint(pipe, ref.type_name, ref.key, delay)
            self.sup.scripts.halt(
                keys=[ref.keys.meta],
                args=[status, reason, int(delay * 1000), only_from, cause],
                client=pipe,
            )

        with redis_errors(f"actor {ref.type_name}:{ref.key}"):
            result = run_pipeline(self.sup, build)[-1]
        return str(result[0].decode() if isinstance(result[0], bytes) else result[0])

    def restart(
        self,
        ref: ActorRef,
        *,
        mode: str,
        recovery: str,
        initial: bytes | None,
        history: int,
        clear_crashes: bool,
        rollback_of: int | None = None,
    ) -> str:
        def build(pipe: Any) -> None:
            # If the run this restart publishes is lost, the tick repairs it from this hint.
            self.add_hint(pipe, ref.type_name, ref.key, self.sup.repair_after)
            self.sup.scripts.restart(
                keys=[ref.keys.meta, ref.keys.mailbox, ref.keys.history],
                args=[
                    mode,
                    recovery,
                    initial or b"null",
                    history,
                    "1" if clear_crashes else "0",
                    "" if rollback_of is None else rollback_of,
                ],
                client=pipe,
            )

        with redis_errors(f"actor {ref.type_name}:{ref.key}"):
            result = run_pipeline(self.sup, build)[-1]
        outcome = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
        if outcome == "woke":
            self.sup.publish(ref.type_name, ref.key)
        return outcome

    def requeue(self, ref: ActorRef, raw: Any, letter: DeadLetter) -> None:
        """Move one dead letter back to the mailbox, exactly once: the send lands before the
        removal (a crash in between loses nothing) and is deduplicated on the letter's
        sequence number (so requeueing it again after such a crash does not send twice)."""
        body = encode(letter.message, what="dead letter")
        marker = ref.keys.requeued(letter.seq)
        self.send(ref.type_name, ref.key, [(letter.message_id, body, marker)])
        # redis-py types list values as str; the bytes read back are what LREM compares
        self.client.lrem(ref.keys.dead, 1, raw)
