"""The census: per actor type, how many actors are in each status, how many messages and
dead letters they hold, steps, crashes by reason and a step-time histogram -- kept in Redis
by the scripts that change them, so reading it never visits an actor.

Each type's census is split into ``STAT_SHARDS`` shards (an actor counts in the shard of
its cluster slot, ``Keyspace.stat_shard``): a counters hash and one sorted set per status.
The scripts in ``scripts.ACCOUNTED`` keep them exact (``scripts/_account.lua``): after
the script's own work, the actor's share -- its status index, mailbox and dead-letter
lengths, recorded in its meta -- is brought up to date from its own keys. A read costs
O(types x statuses x shards) whatever the number of actors; ``metrics.py`` turns it into
Prometheus metrics and ``actors_by_status`` pages through one status index.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .codec import text
from .errors import InvalidArgument
from .keyspace import parse_actor_member
from .runtime import Runtime
from .status import PUBLIC_STATUSES, STATUSES, PublicStatus

__all__ = [
    "CURSOR_SPAN",
    "STEP_BUCKETS",
    "TICK_BUCKETS",
    "Histogram",
    "TypeCensus",
    "actors_by_status",
    "observe_tick",
    "read_census",
    "read_tick_histogram",
    "reindex_type",
    "step_bucket",
    "stored_statuses",
]

#: Upper bounds (seconds) of the step-time histogram's buckets (Prometheus' defaults); a
#: step longer than the last counts in +Inf.
STEP_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
#: The tick-time histogram's buckets (the same).
TICK_BUCKETS = STEP_BUCKETS
#: A cursor of ``actors_by_status`` is ``segment * CURSOR_SPAN + offset``.
CURSOR_SPAN = 2**32
#: Most keys ``actors_by_status`` returns in one page.
MAX_PAGE = 10_000


def step_bucket(seconds: float, bounds: Sequence[float] = STEP_BUCKETS) -> int:
    """The index of the bucket ``seconds`` falls in (``len(bounds)``: +Inf)."""
    return bisect.bisect_left(bounds, seconds)


def stored_statuses(status: str) -> tuple[str, ...]:
    """The stored statuses one public status stands for (``backoff`` includes ``crashed``,
    an actor waiting for its supervisor's decision, as ``Snapshot.status`` shows it)."""
    if status not in PUBLIC_STATUSES:
        raise InvalidArgument(f"unknown status {status!r} (known: {', '.join(PUBLIC_STATUSES)})")
    return ("backoff", "crashed") if status == "backoff" else (status,)


@dataclass
class Histogram:
    """Bucket counts (not cumulative; the last is +Inf) and the sum of observations."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, [0] * (len(bounds) + 1))

    def add(self, fields: dict[str, str], prefix: str) -> None:
        """Add one shard's fields ``<prefix>:<i>`` and ``<prefix>_sum``."""
        for i in range(len(self.counts)):
            self.counts[i] += int(fields.get(f"{prefix}:{i}", 0))
        self.total += float(fields.get(f"{prefix}_sum", 0.0))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs as Prometheus exposes them, ending with +Inf."""
        out, running = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class TypeCensus:
    """One actor type's census, summed over its shards."""

    type: str
    #: Actors per public status (``crashed`` counted as ``backoff``).
    actors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PUBLIC_STATUSES, 0))
    mailbox: int = 0
    dead_letters: int = 0
    steps: int = 0
    crashes: dict[str, int] = field(default_factory=dict)
    step_seconds: Histogram = field(default_factory=lambda: Histogram.empty(STEP_BUCKETS))


def read_census(rt: Runtime, type_names: Iterable[str]) -> dict[str, TypeCensus]:
    """The census of each type, in one pipelined round trip: no actor's own key is read.

    On one server that is ``types x shards x (1 + statuses)`` commands (the status counts
    are the status indexes' sizes); on a cluster, one ``HGETALL`` per type and slot (the
    status counts are the ``n:<status>`` fields), which the pipeline sends node by node."""
    names = sorted(set(type_names))
    ks = rt.keyspace
    from_indexes = not ks.cluster
    shards = census_shards(rt, names)
    pipe = rt.client.pipeline(transaction=False)
    for name in names:
        for shard in shards[name]:
            pipe.hgetall(ks.stats(name, shard))
            if from_indexes:
                for status in STATUSES:
                    pipe.zcard(ks.status_index(name, shard, status))
    replies = iter(pipe.execute())
    out: dict[str, TypeCensus] = {}
    for name in names:
        census = out[name] = TypeCensus(name)
        for _ in shards[name]:
            fields = {text(k): text(v) for k, v in next(replies).items()}
            for status in STATUSES:
                public = "backoff" if status == "crashed" else status
                held = next(replies) if from_indexes else fields.get(f"n:{status}", 0)
                census.actors[public] += int(held)
            _add_counters(census, fields)
    return out


def census_shards(rt: Runtime, type_names: Sequence[str]) -> dict[str, list[int]]:
    """The census shards to read for each type: all ``STAT_SHARDS`` on one server; on a
    cluster, the slots where the type has actors (``Keyspace.stat_slots``, one round trip)."""
    ks = rt.keyspace
    if not ks.cluster:
        return {name: list(range(ks.stat_shards)) for name in type_names}
    pipe = rt.client.pipeline(transaction=False)
    for name in type_names:
        pipe.smembers(ks.stat_slots(name))
    found = pipe.execute()
    return {
        name: sorted(int(s) for s in slots) for name, slots in zip(type_names, found, strict=True)
    }


def _add_counters(census: TypeCensus, fields: dict[str, str]) -> None:
    census.mailbox += int(fields.get("mbox", 0))
    census.dead_letters += int(fields.get("dead", 0))
    census.steps += int(fields.get("steps", 0))
    for name, value in fields.items():
        if name.startswith("crash:"):
            reason = name.removeprefix("crash:")
            census.crashes[reason] = census.crashes.get(reason, 0) + int(value)
    census.step_seconds.add(fields, "step")


def observe_tick(rt: Runtime, pipe: Any, seconds: float) -> None:
    """Count one tick's duration in the tick-time histogram, queued on ``pipe`` (the
    pipeline that gives the tick's lock back)."""
    key = rt.keyspace.tick_stats
    pipe.hincrby(key, f"tick:{step_bucket(seconds, TICK_BUCKETS)}", 1)
    pipe.hincrbyfloat(key, "tick_sum", max(0.0, seconds))


def read_tick_histogram(rt: Runtime) -> Histogram:
    histogram = Histogram.empty(TICK_BUCKETS)
    raw = rt.client.hgetall(rt.keyspace.tick_stats)
    histogram.add({text(k): text(v) for k, v in raw.items()}, "tick")
    return histogram


def actors_by_status(
    rt: Runtime, type_name: str, status: PublicStatus | str, *, cursor: int = 0, limit: int = 50
) -> tuple[list[str], int]:
    """One page of the keys of ``type_name``'s actors in ``status`` (a public status;
    ``backoff`` includes those waiting for their supervisor): (keys, next cursor), the
    cursor 0 at the end. Reads the status indexes only: two round trips, whatever the
    number of actors. Like ``SCAN``, an actor changing status between pages may be listed
    twice or missed; within a shard, the oldest in the status comes first."""
    stored = stored_statuses(status)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be an integer from 1 to {MAX_PAGE}, not {limit!r}")
    if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
        raise InvalidArgument(f"cursor must be a non-negative integer, not {cursor!r}")
    first, offset = divmod(cursor, CURSOR_SPAN)
    if first >= rt.keyspace.stat_shards * len(stored):
        raise InvalidArgument(f"cursor {cursor} is not one this listing returned")
    # A segment is one status index of one shard, numbered by shard (not by position), so
    # a cursor stays valid when a cluster's type gains actors in more slots.
    segments = [
        (shard * len(stored) + i, rt.keyspace.status_index(type_name, shard, status))
        for shard in census_shards(rt, [type_name])[type_name]
        for i, status in enumerate(stored)
        if shard * len(stored) + i >= first
    ]
    pipe = rt.client.pipeline(transaction=False)
    for _, key in segments:
        pipe.zcard(key)
    sizes = [int(n) for n in pipe.execute()]
    return _page(rt, segments, sizes, first, offset, limit)


def _page(
    rt: Runtime,
    segments: list[tuple[int, str]],
    sizes: list[int],
    first: int,
    offset: int,
    limit: int,
) -> tuple[list[str], int]:
    wanted: list[tuple[str, int, int]] = []  # (key, start, stop) inclusive
    need, cursor = limit, 0
    for (seg, key), size in zip(segments, sizes, strict=True):
        start = offset if seg == first else 0
        if start >= size:
            continue
        if need == 0:
            cursor = seg * CURSOR_SPAN + start
            break
        take = min(need, size - start)
        wanted.append((key, start, start + take - 1))
        need -= take
        if start + take < size:
            cursor = seg * CURSOR_SPAN + start + take
            break
    if not wanted:
        return [], 0
    pipe = rt.client.pipeline(transaction=False)
    for key, lo, hi in wanted:
        pipe.zrange(key, lo, hi)
    keys = [parse_actor_member(text(m))[1] for page in pipe.execute() for m in page]
    return keys, cursor


#: Members of a type's index read per round trip by ``reindex_type``.
REINDEX_PAGE = 500


def reindex_type(rt: Runtime, type_name: str) -> int:
    """Count the actors of ``type_name`` the census has not seen (written before it
    existed): each member of the type's index (``Keyspace.type_index``) gets the
    accounting alone (``census.lua``), a no-op for an actor already counted. Returns how
    many of them exist. Actors older than the type index itself are counted the first
    time a script touches them (any message, step, timer or operator action)."""
    ks = rt.keyspace
    index, found, start = ks.type_index(type_name), 0, 0
    while True:
        members = [text(m) for m in rt.client.zrange(index, start, start + REINDEX_PAGE - 1)]
        if not members:
            return found
        for member in members:
            keys = ks.actor(*parse_actor_member(member))
            counted = int(rt.scripts.census(keys=[keys.meta, *ks.metric_keys(keys)]))
            if counted and ks.cluster:  # repairs a shard hint a dying sender left out
                rt.client.sadd(ks.stat_slots(type_name), ks.stat_shard(keys.type_name, keys.key))
            found += counted
        start += len(members)
