"""Every Redis key celery_supervise uses, built in one place.

All keys of one actor share the hash tag ``{type:key}`` so every per-actor script touches
one Redis Cluster slot. Global indexes (the due-time hints) are sharded into
``DUE_BUCKETS`` tagged keys, each its own slot, so none grows with the whole system in one
place. The layout is drawn in ``docs/keyspace.md``.
"""

from __future__ import annotations

import binascii
import zlib
from dataclasses import dataclass
from functools import cache

from .status import STATUSES

__all__ = [
    "DUE_BUCKETS",
    "STAT_SHARDS",
    "ActorKeys",
    "Keyspace",
    "actor_member",
    "cluster_slot",
    "parse_actor_member",
    "slot_tag",
]

#: Number of shards of the due-time index; fixed, because members are hashed onto it.
DUE_BUCKETS = 16
#: Number of shards of each actor type's counters and status indexes (``census.py``);
#: fixed, because an actor's shard is its cluster slot modulo this.
STAT_SHARDS = 16
#: Redis Cluster's slot count.
CLUSTER_SLOTS = 16384


def _escape(part: str) -> str:
    # Braces would end the hash tag early and "%" is the escape itself; ":" separates
    # type from key inside the tag.
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A")


def actor_member(type_name: str, key: str) -> str:
    """The index member naming one actor; reversible by ``parse_actor_member``."""
    return f"{_escape(type_name)}:{_escape(key)}"


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def parse_actor_member(member: str) -> tuple[str, str]:
    type_part, _, key_part = member.partition(":")
    return _unescape(type_part), _unescape(key_part)


def cluster_slot(tag: str) -> int:
    """The Redis Cluster slot of a key whose hash tag is ``tag`` (CRC16/XMODEM, as Redis)."""
    return binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


@cache
def _slot_tags() -> tuple[str, ...]:
    # The smallest decimal number hashing to each slot; about 160,000 CRCs, done once.
    tags: list[str | None] = [None] * CLUSTER_SLOTS
    missing, n = CLUSTER_SLOTS, 0
    while missing:
        slot = cluster_slot(str(n))
        if tags[slot] is None:
            tags[slot] = str(n)
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(slot: int) -> str:
    """A hash tag whose key lands in cluster ``slot``: the census of the actors of that
    slot lives under it, so an actor's script never writes another slot."""
    return _slot_tags()[slot]


@dataclass(frozen=True)
class ActorKeys:
    """The keys of one actor; all in one cluster slot."""

    type_name: str  #: the actor these keys belong to
    key: str
    meta: str  #: hash: state, version, status, lease and fencing token, counters
    mailbox: str  #: list of pending entries, oldest first
    history: str  #: list of committed versions, newest first, capped at ``history``
    crashes: str  #: list of crash records, newest first, capped
    attempts: str  #: list of crash records of the message at the head of the mailbox
    dead: str  #: list of dead-lettered entries with their crash records, oldest first
    outbox: str  #: list of committed effects not yet relayed
    undelivered: str  #: list of outbox effects that can never be delivered, with the error
    timers: str  #: sorted set of durable timers, by due time
    timer_specs: str  #: hash: named timer's name -> its spec (``timers.py``)
    isolates: str  #: hash of isolated subtasks still owing their outcome message
    tombstone: str  #: "<seq> <version>" a deleted actor leaves for the dedup window
    dedup_prefix: str  #: + message_id: caller-given ids remembered for the dedup window
    origin_prefix: str  #: + sender: highest effect ordinal received from that actor
    requeue_prefix: str  #: + dead letter seq: that letter was requeued (its own namespace)
    reply_prefix: str  #: + message id: list holding the answer to an ``ask`` of this actor

    @property
    def owned(self) -> list[str]:
        """Every key ``delete`` removes (the prefixed marks expire by themselves)."""
        return [self.meta, self.mailbox, self.history, self.crashes, self.attempts, self.dead,
                self.outbox, self.undelivered, self.timers, self.isolates, self.timer_specs]

    def dedup(self, message_id: str) -> str:
        return self.dedup_prefix + message_id

    def origin(self, sender_member: str) -> str:
        return self.origin_prefix + sender_member

    def requeued(self, seq: int) -> str:
        return f"{self.requeue_prefix}{seq}"

    def reply(self, message_id: str) -> str:
        """Where the answer to an ``ask`` of this actor is pushed: keyed by actor *and* id,
        so two asks that reuse one business id with two actors never read each other's."""
        return self.reply_prefix + message_id


@dataclass(frozen=True)
class Keyspace:
    prefix: str = "supervise"
    #: On Redis Cluster each type's census has one shard per slot, kept in that slot.
    cluster: bool = False

    @property
    def stat_shards(self) -> int:
        """How many shards each type's census has: ``STAT_SHARDS`` on one server, one per
        slot (``CLUSTER_SLOTS``) on a cluster."""
        return CLUSTER_SLOTS if self.cluster else STAT_SHARDS

    def actor(self, type_name: str, key: str) -> ActorKeys:
        base = f"{self.prefix}:a:{{{actor_member(type_name, key)}}}"
        return ActorKeys(
            type_name=type_name,
            key=key,
            meta=f"{base}:meta",
            mailbox=f"{base}:mbox",
            history=f"{base}:hist",
            crashes=f"{base}:crashes",
            attempts=f"{base}:attempts",
            dead=f"{base}:dead",
            outbox=f"{base}:outbox",
            undelivered=f"{base}:undelivered",
            timers=f"{base}:timers",
            timer_specs=f"{base}:tnamed",
            isolates=f"{base}:isolates",
            tombstone=f"{base}:gone",
            dedup_prefix=f"{base}:mid:",
            origin_prefix=f"{base}:from:",
            requeue_prefix=f"{base}:rq:",
            reply_prefix=f"{base}:reply:",
        )

    def stat_shard(self, type_name: str, key: str) -> int:
        """The shard of a type's counters an actor counts in: its own cluster slot modulo
        ``stat_shards`` (on a cluster: its own slot)."""
        return cluster_slot(actor_member(type_name, key)) % self.stat_shards

    def stats(self, type_name: str, shard: int) -> str:
        """Hash of one shard of a type's counters: ``mbox`` and ``dead`` (messages held),
        ``n:<status>`` (actors in each status), ``steps``, ``crash:<reason>``,
        ``step:<bucket>`` and ``step_sum`` (the step-time histogram), written by the
        scripts that change them (``_account.lua``). On a cluster its hash tag is one of
        slot ``shard`` (``slot_tag``): the shard shares the slot of the actors it counts."""
        if self.cluster:
            return f"{self.prefix}:stats:{{{slot_tag(shard)}}}:{_escape(type_name)}"
        return f"{self.prefix}:stats:{{{_escape(type_name)}:{shard}}}"

    def stat_slots(self, type_name: str) -> str:
        """On a cluster, the set of slots (census shards) where ``type_name`` has actors: a
        hint, added to when ``send`` creates an actor (beside ``type_index``) and by
        ``supervise reindex``, so that a scrape reads the shards in use, not all 16384."""
        return f"{self.prefix}:stats:slots:{{{_escape(type_name)}}}"

    def status_index(self, type_name: str, shard: int, status: str) -> str:
        """Sorted set of one shard of a type's actors in ``status`` (member "T:K", score:
        when it entered it, ms), kept exact by the scripts that change a status."""
        return f"{self.stats(type_name, shard)}:{status}"

    def metric_keys(self, keys: ActorKeys) -> list[str]:
        """The keys every accounting script takes last (``_account.lua``): the actor's
        mailbox and dead letters, its shard's counters, then its shard's status indexes in
        ``STATUSES`` order."""
        shard = self.stat_shard(keys.type_name, keys.key)
        indexes = [self.status_index(keys.type_name, shard, s) for s in STATUSES]
        return [keys.mailbox, keys.dead, self.stats(keys.type_name, shard), *indexes]

    @property
    def tick_stats(self) -> str:
        """Hash: the tick-time histogram (``tick:<bucket>``, ``tick_sum``)."""
        return f"{self.prefix}:tick:stats"

    def due_bucket(self, member: str) -> str:
        return self.due(zlib.crc32(member.encode()) % DUE_BUCKETS)

    def due(self, bucket: int) -> str:
        return f"{self.prefix}:due:{{{bucket}}}"

    def all_due(self) -> list[str]:
        return [self.due(b) for b in range(DUE_BUCKETS)]

    @property
    def dead_index(self) -> str:
        """Sorted set of actors holding dead letters (member "T:K", score: last dead-letter
        time). A hint like the due index: written after the dead-lettering, repaired by the
        tick, so ``supervise dead-letters`` lists them without a scan."""
        return f"{self.prefix}:deadletters"

    def quarantined_index(self, type_name: str) -> str:
        """Sorted set of one type's actors that were quarantined (member "T:K", score: how
        many times it was noted, so that a pruner can tell a member noted again).
        A hint like the dead-letter index: written beside the script that quarantines, never
        cleared by the scripts that bring an actor back, so ``supervise replay TYPE`` lists
        candidates without a scan and checks each against the actor's own status."""
        return f"{self.prefix}:quarantined:{{{_escape(type_name)}}}"

    def type_index(self, type_name: str) -> str:
        """Sorted set of one type's actors (member "T:K", score: creation time in ms),
        added to by ``Delivery.send`` when its script created the actor, so ``supervise
        migrate TYPE`` lists every stored state of a type without a scan. A hint: readers
        check each member against its own meta and prune a member whose meta is gone."""
        return f"{self.prefix}:type:{{{_escape(type_name)}}}"

    def ready(self, type_name: str) -> str:
        """Sorted set of one type's actors woken while a run of the type was live (member:
        the actor's key; score: ms it was added): a live run takes them (``ready_pop.lua``),
        so a burst of wakes costs a few Celery tasks. A hint, as the due index is: the claim
        decides whether there is anything to run."""
        return f"{self.prefix}:ready:{{{_escape(type_name)}}}"

    def ready_runs(self, type_name: str) -> str:
        """Sorted set of one type's live task runs (member: Celery task id; score: ms until
        which it counts as live), in the ready set's slot."""
        return f"{self.prefix}:runs:{{{_escape(type_name)}}}"

    def ready_taken(self, type_name: str) -> str:
        """Hash of what each live run of the type took from the ready set and has not
        served yet (Celery task id -> JSON list of actor keys), in the same slot: a run
        that dies gives them back (``ready.lua``)."""
        return f"{self.prefix}:taken:{{{_escape(type_name)}}}"

    @property
    def tick_lock(self) -> str:
        return f"{self.prefix}:tick:lock"

    def tick_group_lock(self, group: int) -> str:
        """Held by whichever tick visits group ``group`` of the due buckets
        (``tick.TICK_GROUPS``): the beat's tick, or a group tick it handed the group to."""
        return f"{self.prefix}:tick:lock:{group}"

    @property
    def tick_senders(self) -> str:
        """Sorted set of the processes that sent the tick task (member: Celery's ``origin``
        header, ``gen<pid>@<host>`` for a beat; score: Redis ms of its latest tick), kept an
        hour: ``supervise doctor`` tells from it whether beat runs, and whether more than one."""
        return f"{self.prefix}:tick:senders"

    @property
    def events(self) -> str:
        """Capped stream of supervision decisions, for ``supervise status`` and Flower."""
        return f"{self.prefix}:events"

    def plan(self, exit_id: str) -> str:
        """The stored restart plan of one exit (kept an hour, so a tick that dies half-way
        through it is finished by the next, which re-applies it instead of deciding again)."""
        return f"{self.prefix}:plan:{{{_escape(exit_id)}}}"

    def supervisor(self, name: str) -> str:
        """Hash of one supervisor: status and counters."""
        return f"{self.prefix}:sup:{{{_escape(name)}}}"

    def supervisor_history(self, name: str) -> str:
        """Sorted set of restart records (member: exit id, score: time)."""
        return f"{self.prefix}:sup:{{{_escape(name)}}}:restarts"

    @staticmethod
    def restart_member(exit_id: str, child: str) -> str:
        """A member of a supervisor's restart history: one per exit, naming its child."""
        return f"{exit_id}\n{child}"

    @staticmethod
    def parse_restart_member(member: str) -> tuple[str, str]:
        exit_id, _, child = member.partition("\n")
        return exit_id, child

    def supervisor_members(self, name: str) -> str:
        """Set of actors under this supervisor that are stopped, crashed or quarantined."""
        return f"{self.prefix}:sup:{{{_escape(name)}}}:flagged"
