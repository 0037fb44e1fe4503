"""How messages get into mailboxes and answers back to askers.

``send.lua`` appends to one actor's mailbox and decides, in the same script, whether the
actor must be woken; only then is a Celery task published. Replies to an ``ask`` go to a
short-lived list the asker blocks on. A message sent while a span is active carries its trace
context in the entry's header (``tracing.py``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from .codec import decode, encode, text
from .errors import AskTimeout, MailboxFull, MessageDeadLettered
from .keyspace import ActorKeys, actor_member, parse_actor_member
from .mailbox import header_json
from .registry import mailbox_limit
from .runtime import READY_RUNS, READY_TAKE, Runtime, new_run_id, redis_errors
from .store import ActorStore
from .tracing import Carrier, carrier

__all__ = ["BLOCK_SECONDS", "REPLY_TTL_SECONDS", "Delivery", "Outgoing"]

log = logging.getLogger("celery_supervise")

#: How long an ``ask`` reply waits in Redis for its asker.
REPLY_TTL_SECONDS = 300
#: Longest single blocking read: under redis-py's 5 s socket timeout.
BLOCK_SECONDS = 1.0

#: ``(message_id, body, dedup)``: ``dedup`` is True for a caller-given id, False for none,
#: or the dedup key itself (a key of the actor outside the caller-id namespace).
Outgoing = tuple[str, bytes, bool | str]


def reply_marker(reply_key: str) -> str:
    """The key saying the answer for ``reply_key`` was pushed (same slot as the reply)."""
    return reply_key + ":pushed"


class Delivery:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.store = ActorStore(runtime)

    def send(
        self,
        type_name: str,
        key: str,
        batch: Sequence[Outgoing],
        *,
        reply: bool = False,
        origin: tuple[str, int] | None = None,
        trace: Carrier | None = None,
    ) -> list[int]:
        """Append the batch; wake the actor if idle. ``origin`` = (sender member, ordinal)
        marks a relay from another actor's outbox. ``trace``: the trace context stored with
        the messages (None: the active span's, if any; for a relay: none). Returns the seqs
        (see ``send.lua``). ``MailboxFull`` (nothing written) if the batch does not fit the
        type's max_mailbox."""
        keys = self.rt.keyspace.actor(type_name, key)
        limit = mailbox_limit(type_name)
        args: list[Any] = [type_name, key, self.rt.settings.dedup_window, len(batch), limit]
        dedup_keys = []
        if origin is None:  # a relay carries its step's context, never the relayer's
            trace = trace or carrier()
        for mid, body, given in batch:
            header = header_json(mid, reply=reply, trace=trace)
            if origin is not None:
                args += [header, body, f"2:{origin[1]}"]
                dedup_keys.append(keys.origin(origin[0]))
                continue
            args += [header, body, "1" if given else "0"]
            dedup_keys.append(given if isinstance(given, str) else keys.dedup(mid))

        ks = self.rt.keyspace
        # One server: the due hint and the type's ready set are written by the script too
        # (send.lua), one round trip. A cluster keeps them in other slots: the hints around
        # the script, and the wake (Runtime.publish) after it.
        one_server = not ks.cluster
        run_id = new_run_id()
        extra_keys: list[str] = []
        if one_server:
            extra_keys, extra_args = self._in_script(type_name, key, run_id)
            args += extra_args

        def build(pipe: Any) -> None:
            # The hint before the append covers a client dying mid-pipeline; the one after
            # covers a tick that, having read the actor empty, drops the hint in between
            # (the tick re-checks after dropping; see tick.drop_if_unchanged).
            if not one_server:
                self.store.add_hint(pipe, type_name, key, self.rt.repair_after)
            self.rt.scripts.send(
                keys=[keys.meta, keys.mailbox, *dedup_keys, keys.tombstone, *extra_keys,
                      *ks.metric_keys(keys)],
                args=args,
                client=pipe,
            )
            if not one_server:
                self.store.add_hint(pipe, type_name, key, self.rt.repair_after)
            self.rt.wait_replicas(pipe)

        with redis_errors(f"actor {type_name}:{key}"):
            replies = self.rt.pipeline(build, client=self.rt.client_once)
        result = replies[0 if one_server else 1]
        if text(result[0]) == "full":
            raise MailboxFull(f"{type_name}:{key}", limit, int(result[1]))
        if int(result[-1]) == 1:
            self._index_new(type_name, key)
        woke = int(result[0])
        if woke == 1 and one_server:  # no run was live: the script made this one live
            self._wake(type_name, key, run_id)
        elif woke in (1, 3):  # a cluster, or garbage in the ready set (reported there)
            self._wake(type_name, key)
        self.rt.check_replicas(replies, f"send to actor {type_name}:{key}")
        return [int(x) for x in result[1:-1]]

    def _in_script(self, type_name: str, key: str, run_id: str) -> tuple[list[str], list[Any]]:
        """The keys and arguments send.lua takes on one server to write the due hint and
        wake the actor through its type's ready set itself."""
        ks = self.rt.keyspace
        member = actor_member(type_name, key)
        keys = [ks.due_bucket(member), ks.ready(type_name), ks.ready_runs(type_name),
                ks.ready_taken(type_name)]  # fmt: skip
        live_ms = int(self.rt.settings.lease_seconds * 1000)
        args = [member, int(self.rt.repair_after * 1000), run_id, live_ms, READY_TAKE,
                READY_RUNS]  # fmt: skip
        return keys, args

    def _index_new(self, type_name: str, key: str) -> None:
        # After the script (another slot): a client dying in between leaves the actor out of
        # the index, which only ``supervise migrate`` reads (workers upgrade on load anyway).
        # The messages are durable already: a failure here must not fail the send.
        member = actor_member(type_name, key)
        ks = self.rt.keyspace

        def build(pipe: Any) -> None:
            pipe.zadd(ks.type_index(type_name), {member: self.rt.clock_ms()}, nx=True)
            if ks.cluster:  # the census shard this actor counts in (census.census_shards)
                pipe.sadd(ks.stat_slots(type_name), ks.stat_shard(type_name, key))

        try:
            self.rt.pipeline(build)
        except Exception as exc:
            log.warning("celery_supervise type_index_failed actor=%s key=%s error=%r",
                        type_name, key, exc)  # fmt: skip

    def _wake(self, type_name: str, key: str, run_id: str | None = None) -> None:
        """Publish the run ``run_id`` the send script made live, or (None) wake the actor
        through ``Runtime.publish``. The messages are durable now; a failed publish must
        not make the caller think they were not sent (a retry without caller ids would
        duplicate them): logged, and the hint written with them, or the tick's look at the
        ready set, brings the run."""
        try:
            if run_id is None:
                self.rt.publish(type_name, key)
            else:
                self.rt.dispatch_run(type_name, key, run_id)
        except Exception as exc:
            log.warning(
                "celery_supervise publish_failed actor=%s key=%s error=%r "
                "(messages are stored; the tick will wake the actor)",
                type_name, key, exc,
            )  # fmt: skip

    def ask(self, keys: ActorKeys, body: bytes, *, timeout: float, message_id: str | None) -> Any:
        """Send ``body`` and wait for the handler's reply (or the dead-letter notice)."""
        mid = message_id or uuid.uuid4().hex
        reply_key = keys.reply(mid)
        self.send(keys.type_name, keys.key, [(mid, body, message_id is not None)], reply=True)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AskTimeout(
                    f"no reply from {keys.type_name}:{keys.key} to message {mid!r} within "
                    f"{timeout} s (the message stays queued and will still be handled)"
                )
            # Redis going away while we wait is the caller's RedisUnavailable, as at send
            # (the message stays queued; asking again with the same message id is safe).
            with redis_errors(f"ask to {keys.type_name}:{keys.key}"):
                got = self.rt.client.blpop(
                    [reply_key], timeout=max(0.01, min(left, BLOCK_SECONDS))
                )
            if got:
                answer = decode(got[1], what=f"reply to {mid!r}")
                if "dead" in answer:
                    raise MessageDeadLettered(mid, answer["dead"])
                return self.rt.payloads.open_value(answer["value"], what=f"reply to {mid!r}")

    def push_reply(self, keys: ActorKeys, message_id: str, payload: bytes) -> None:
        """Push this ask's answer once: a relay repeated (a worker and a tick, or a worker
        that died before removing its outbox entry) pushes nothing more."""
        key = keys.reply(message_id)
        self.rt.pipeline(
            lambda pipe: self.rt.scripts.reply(
                keys=[key, reply_marker(key)], args=[payload, REPLY_TTL_SECONDS], client=pipe
            )
        )

    def requeue(self, keys: ActorKeys, raw: Any, message_id: str, seq: int, message: Any) -> str:
        """Move one dead letter back to the end of the mailbox, exactly once: in one script
        (``requeue.lua``), which removes the letter as it appends it, and marks the letter's
        seq so a retry after a lost reply appends nothing more. 'requeued', or 'gone' (it
        was requeued already). The span active here, if any, is its new sender's."""
        body = encode(message, what="dead letter")
        header = header_json(message_id, trace=carrier())
        outcome, _ = ActorStore(self.rt).requeue(
            keys, raw=raw, seq=seq, version=None, header=header, body=body
        )
        return outcome

    # -- the dead-letter index -------------------------------------------------------------
    def index_dead(self, type_name: str, key: str) -> None:
        """Note that this actor holds dead letters (after a crash script dead-lettered one)."""
        self.rt.client.zadd(
            self.rt.keyspace.dead_index, {actor_member(type_name, key): self.rt.clock()}
        )

    def actors_with_dead_letters(self) -> list[tuple[str, str, int]]:
        """(type, key, count) of every actor holding dead letters, most recent first; the
        index is pruned of actors found to have none left."""
        client, index = self.rt.client, self.rt.keyspace.dead_index
        members = [text(m) for m in client.zrevrange(index, 0, -1)]
        pipe = client.pipeline(transaction=False)
        for member in members:
            pipe.llen(self.rt.keyspace.actor(*parse_actor_member(member)).dead)
        out = []
        for member, count in zip(members, pipe.execute(), strict=True):
            if count:
                out.append((*parse_actor_member(member), int(count)))
            else:
                client.zrem(index, member)
        return out
