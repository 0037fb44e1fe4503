"""Scripts are not transactions: Redis keeps a script's earlier writes when it fails later. So
every script that writes checks everything it reads or increments before its first write.

For each such script: a scenario in which it writes (checked: without garbage it changes
something), then garbage planted in one field it interprets or one key it touches (a key of
the wrong type), and the call must be refused with the library's corruption marker naming
the field or key, every key byte-identical to before. Scripts are called through
``Scripts(client)`` with explicit KEYS/ARGV on the real Redis; the last tests go through the
public API (a garbage mailbox head, duplicate replies)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import CorruptActorData
from celery_supervise.keyspace import ActorKeys, Keyspace
from celery_supervise.relay import relay_outbox
from celery_supervise.scripts import ACCOUNTED, Scripts

T, K = "atom.type", "k1"
FAR = 10**13  # a lease or time far in the future (ms)


def image(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every key under ``prefix`` with its serialized value and TTL state."""
    keys = sorted(client.scan_iter(match=f"{prefix}:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return dict(zip(keys, pipe.execute(), strict=True))


@dataclass
class World:
    client: redis.Redis
    scripts: Scripts
    prefix: str
    keys: ActorKeys
    extra: dict[str, str] = field(default_factory=dict)

    def meta(self, **fields: Any) -> None:
        self.client.hset(self.keys.meta, mapping={k: v for k, v in fields.items()})


#: A valid actor; each scenario adjusts it to a state in which its script writes.
BASE_META = {
    "type": T, "key": K, "version": 3, "status": "active", "token": 5, "seq": 2,
    "consumed": 1, "sched": 1, "sched_at": 1, "lease_until": FAR, "lease_owner": "w",
    "attempts": 1, "attempt_seq": 2, "crash_seq": 4, "crashes_in_row": 1, "rewakes": 0,
    "state": '{"n":1}', "claim_nonce": "n0", "restart_at": 1, "backoff_level": 0,
}
HEAD = b'2 1000 {"id":"m2"}\n{"a":1}'
#: A periodic named timer's spec (celery_supervise/timers.py), due in ``base``.
NAMED_SPEC = b'500\n"t:k@2.n0"\n,"timer":true,"name":"p"}\n{"b":2}'


def base(w: World, **changes: Any) -> None:
    uncounted(w, **changes)
    # Counted in the census, as every actor is from the send that created it.
    w.scripts.census(keys=[w.keys.meta, *Keyspace(w.prefix).metric_keys(w.keys)])


def uncounted(w: World, **changes: Any) -> None:
    """The scenario's actor as a version before the census left it."""
    meta = {**BASE_META, **changes}
    w.meta(**{k: v for k, v in meta.items() if v is not None})
    w.client.rpush(w.keys.mailbox, HEAD)
    w.client.lpush(w.keys.history, b'{"version":3,"at":1,"state":{"n":1}}')
    w.client.lpush(w.keys.crashes, b'{"reason":"x"}')
    w.client.rpush(w.keys.attempts, b'{"attempt":1}')
    w.client.rpush(w.keys.dead, b'{"seq":1}')
    w.client.rpush(w.keys.outbox, b'{"kind":"old"}')
    w.client.zadd(w.keys.timers, {b'{"id":"t0","timer":true}\n1': 1, b"@p": 1})
    w.client.hset(w.keys.timer_specs, "p", NAMED_SPEC)
    w.client.hset(w.keys.isolates, "iso1", '{"tag":"t"}')


@dataclass
class Case:
    script: str
    setup: Callable[[World], None]
    keys: Callable[[World], list[str]]
    args: Callable[[World], list[Any]]
    #: meta fields the script interprets (numbers, status), each planted with garbage
    fields: list[str]
    #: (ActorKeys attribute or World.extra name, the type the key must hold)
    typed: list[tuple[str, str]]


def actor_keys(*attrs: str) -> Callable[[World], list[str]]:
    return lambda w: [w.extra[a] if a in w.extra else getattr(w.keys, a) for a in attrs]


def _send_setup(w: World) -> None:
    base(w)
    w.extra["dedup"] = w.keys.dedup("given-1")
    w.extra["origin"] = w.keys.origin("other:x")
    w.client.set(w.extra["origin"], 3)  # relays up to ordinal 3 were received


def _delete_setup(w: World) -> None:
    """A stopped actor with nothing left to relay: deleted, queued messages and all."""
    base(w, status="stopped", lease_until=None, committed_at=1, created_at=1)
    w.client.delete(w.keys.outbox)


CASES = [
    Case("claim", lambda w: base(w, status="idle", lease_until=None),
         actor_keys("meta", "mailbox"), lambda w: ["w1", 5000, 10, "n1", 1],
         ["status", "lease_until", "version", "attempt_seq", "attempts", "token",
          "state_version"],
         [("meta", "hash"), ("mailbox", "list")]),
    Case("commit", base,
         actor_keys("meta", "mailbox", "history", "attempts", "outbox", "timers", "isolates",
                    "timer_specs"),
         lambda w: [5, 2, '{"n":2}', '{"message_id":"m2","state":{"n":2}}', 10, 5000, "0",
                    1, 1, 1, 1, "1", 1, 3, "0.04", '{"kind":"send"}', '{"id":"self"}', '{"b":1}',
                    1000, '{"id":"t1","timer":true}\n1', "iso2", '{"tag":"u"}',
                    2, "q", 1000, NAMED_SPEC, "p", "", ""],
         ["lease_until", "consumed", "version", "seq"],
         [("meta", "hash"), ("mailbox", "list"), ("history", "list"), ("outbox", "list"),
          ("timers", "zset"), ("isolates", "hash"), ("timer_specs", "hash")]),
    Case("crash", base,  # attempt 2 of max 2: the dead-letter path, every key written
         actor_keys("meta", "mailbox", "crashes", "attempts", "dead", "outbox"),
         lambda w: [5, 2, '{"reason":"exception"}', 2, "0", 50, 10, "exception"],
         ["token", "lease_until", "attempt_seq", "attempts", "crash_seq", "crashes_in_row"],
         [("meta", "hash"), ("mailbox", "list"), ("crashes", "list"), ("attempts", "list"),
          ("dead", "list"), ("outbox", "list")]),
    Case("release", base, actor_keys("meta", "mailbox"), lambda w: [5],
         ["lease_until"], [("meta", "hash"), ("mailbox", "list")]),
    Case("renew", base, actor_keys("meta"), lambda w: [5, 5000],
         ["lease_until"], [("meta", "hash")]),
    Case("forfeit", base, actor_keys("meta"), lambda w: ["w"],
         ["lease_until", "token"], [("meta", "hash")]),
    Case("settle", lambda w: base(w, status="crashed", lease_until=None),
         actor_keys("meta"), lambda w: [4, "backoff", 1000, 1, "restart"],
         ["status", "crash_seq"], [("meta", "hash")]),
    Case("halt", base, actor_keys("meta"), lambda w: ["stopped", "operator", 0, "*", ""],
         ["status", "lease_until", "token", "restart_at"], [("meta", "hash")]),
    Case("restart", lambda w: base(w, status="backoff"),
         actor_keys("meta", "mailbox", "history"),
         lambda w: ["due", "reset", '{"n":0}', 10, "1", ""],
         ["status", "restart_at", "lease_until", "token", "version"],
         [("meta", "hash"), ("mailbox", "list"), ("history", "list")]),
    Case("rewake", lambda w: base(w, lease_until=None), actor_keys("meta", "mailbox"),
         lambda w: [1000, 300000], ["status", "sched_at", "lease_until", "rewakes"],
         [("meta", "hash"), ("mailbox", "list")]),
    Case("fire_timers", lambda w: base(w, status="idle", sched=0, lease_until=None),
         actor_keys("meta", "mailbox", "timers", "timer_specs"), lambda w: [],
         ["seq", "status"],
         [("meta", "hash"), ("mailbox", "list"), ("timers", "zset"), ("timer_specs", "hash")]),
    Case("iso_outcome", lambda w: base(w, status="idle", sched=0, lease_until=None),
         actor_keys("meta", "mailbox", "isolates"),
         lambda w: ["iso1", '{"id":"iso1.outcome"}', '{"isolated":"t","ok":true}'],
         ["seq", "status"], [("meta", "hash"), ("mailbox", "list"), ("isolates", "hash")]),
    Case("iso_mark", base, actor_keys("isolates"), lambda w: ["iso1", "heartbeat", "now", "0"],
         [], [("isolates", "hash")]),
    Case("send", _send_setup, actor_keys("meta", "mailbox", "dedup", "origin", "tombstone"),
         lambda w: [T, K, 100, 2, 100, '{"id":"given-1"}', '"a"', "1", '{"id":"r"}', '"b"', "2:5"],
         ["seq", "status"],
         [("meta", "hash"), ("mailbox", "list"), ("dedup", "string"), ("origin", "string"),
          ("tombstone", "string")]),
    Case("delete", _delete_setup,
         actor_keys("meta", "mailbox", "history", "crashes", "attempts", "dead", "outbox",
                    "undelivered", "timers", "isolates", "timer_specs", "tombstone"),
         lambda w: [T, K, 100, ""],
         ["status", "lease_until", "committed_at", "created_at", "seq", "version", "token"],
         [("meta", "hash"), ("mailbox", "list"), ("outbox", "list"), ("timers", "zset"),
          ("isolates", "hash"), ("tombstone", "string")]),
    Case("hint_move", lambda w: (base(w), w.extra.update(bucket=f"{w.prefix}:due:{{0}}"),
                                 w.client.zadd(w.extra["bucket"], {"m": 5})),
         actor_keys("bucket"), lambda w: ["m", 5, 9], [], [("bucket", "zset")]),
    Case("reply", lambda w: (base(w), w.extra.update(reply=f"{w.prefix}:reply:{{m}}",
                                                     marker=f"{w.prefix}:reply:{{m}}:pushed")),
         actor_keys("reply", "marker"), lambda w: ['{"value":1}', 300], [],
         [("reply", "list"), ("marker", "string")]),
    Case("undeliver", base, actor_keys("outbox", "undelivered"),
         lambda w: ['{"kind":"old"}', '{"kind":"send","error":"x"}'], [],
         [("outbox", "list"), ("undelivered", "list")]),
    Case("requeue", lambda w: (base(w, status="idle", lease_until=None),
                               w.extra.update(mark=w.keys.requeued(1))),
         actor_keys("meta", "mailbox", "dead", "mark"),
         lambda w: ['{"seq":1}', 3, '{"id":"m1"}', '{"a":1}', 100],
         ["version", "seq", "status"],
         [("meta", "hash"), ("mailbox", "list"), ("dead", "list"), ("mark", "string")]),
    Case("zrem_unchanged", lambda w: (base(w), w.extra.update(index=f"{w.prefix}:q:{{t}}"),
                                      w.client.zadd(w.extra["index"], {"m": 2})),
         actor_keys("index"), lambda w: ["m", "2.0"], [], [("index", "zset")]),
    Case("upgrade", lambda w: base(w, lease_until=None), actor_keys("meta", "history"),
         lambda w: ["5|3|", '{"m":1}', 2, 10], ["token", "version", "state_version"],
         [("meta", "hash"), ("history", "list")]),
]
_REENCRYPT_KEYS = actor_keys("meta", "history", "mailbox", "dead", "timers", "outbox",
                             "timer_specs")


def _reencrypt_args(w: World) -> list[Any]:
    """A write fenced on the digest the read gives (the read refuses garbage the same way)."""
    digest = w.scripts.reencrypt(keys=_REENCRYPT_KEYS(w), args=["read"])[1]
    return ["write", digest, '{"n":2}', 0, 0, 0, 0, 0, 0]


_REENCRYPT_TYPED = [("meta", "hash"), ("history", "list"), ("mailbox", "list"),
                    ("dead", "list"), ("timers", "zset"), ("outbox", "list"),
                    ("timer_specs", "hash")]  # fmt: skip
CASES.append(Case("reencrypt", base, _REENCRYPT_KEYS, _reencrypt_args, [], _REENCRYPT_TYPED))


def _ready_setup(w: World) -> None:
    """A run that died holding "a" (no longer live), and "b" waiting."""
    w.extra.update(ready=f"{w.prefix}:ready:{{t}}", runs=f"{w.prefix}:runs:{{t}}",
                   taken=f"{w.prefix}:taken:{{t}}")  # fmt: skip
    w.client.zadd(w.extra["runs"], {"dead": 1})
    w.client.hset(w.extra["taken"], "dead", '["a"]')
    w.client.zadd(w.extra["ready"], {"b": 1})


CASES.append(Case("ready", _ready_setup, actor_keys("ready", "runs", "taken"),
                  lambda w: ["take", "run1", 5000, "run2", 8, 8], [],
                  [("ready", "zset"), ("runs", "zset"), ("taken", "hash")]))
CASES.append(Case("census", uncounted, actor_keys("meta"), lambda w: [], [], [("meta", "hash")]))
BY_NAME = {c.script: c for c in CASES}


def _targets() -> list[tuple[str, str, str]]:
    out = []
    for case in CASES:
        out += [(case.script, "field", f) for f in case.fields]
        out += [(case.script, "type", attr) for attr, _ in case.typed]
    return out


@pytest.fixture
def world(redis_client: redis.Redis) -> World:
    prefix = f"atom-{uuid.uuid4().hex[:8]}"
    return World(redis_client, Scripts(redis_client), prefix, Keyspace(prefix).actor(T, K))


def _call(w: World, case: Case) -> Any:
    keys = case.keys(w)
    if case.script in ACCOUNTED:  # the census keys come last (scripts/_account.lua)
        keys += Keyspace(w.prefix).metric_keys(w.keys)
    return getattr(w.scripts, case.script)(keys=keys, args=case.args(w))


@pytest.mark.parametrize("name", sorted(ACCOUNTED))
@pytest.mark.parametrize("which", [0, 1, 2, 3, 8])
def test_a_census_key_of_the_wrong_type_is_refused_before_any_write(
    world: World, name: str, which: int
) -> None:
    """The census keys (mailbox, dead letters, counters, status indexes) are checked before
    the script's own work starts."""
    case = BY_NAME[name]
    case.setup(world)
    key = Keyspace(world.prefix).metric_keys(world.keys)[which]
    world.client.delete(key)
    world.client.set(key, b"x")
    before = image(world.client, world.prefix)
    with pytest.raises(redis.ResponseError, match=r"^CORRUPT .*WRONGTYPE"):
        _call(world, case)
    assert image(world.client, world.prefix) == before


def test_every_writing_script_has_a_case() -> None:
    from celery_supervise.scripts import SCRIPT_NAMES

    assert set(SCRIPT_NAMES) - set(BY_NAME) == {"tick_lock"}  # tested below on its own


@pytest.mark.parametrize("name", [c.script for c in CASES])
def test_each_scenario_writes_without_garbage(world: World, name: str) -> None:
    """The control: in each scenario the script does write, so the refusals below matter."""
    case = BY_NAME[name]
    case.setup(world)
    before = image(world.client, world.prefix)
    _call(world, case)
    assert image(world.client, world.prefix) != before


def _plant(w: World, case: Case, kind: str, target: str) -> str:
    """Plant garbage; return the word the error must contain."""
    if kind == "field":
        w.client.hset(w.keys.meta, target, b"x\xff7")
        return f"field {target} "
    name = w.extra[target] if target in w.extra else getattr(w.keys, target)
    w.client.delete(name)
    expected = dict(case.typed)[target]
    if expected == "string":
        w.client.rpush(name, b"x")
    else:
        w.client.set(name, b"x")
    return name


@pytest.mark.parametrize(("name", "kind", "target"), _targets())
def test_garbage_is_refused_before_any_write(
    world: World, name: str, kind: str, target: str
) -> None:
    case = BY_NAME[name]
    case.setup(world)
    word = _plant(world, case, kind, target)
    before = image(world.client, world.prefix)
    with pytest.raises(redis.ResponseError) as info:
        _call(world, case)
    assert image(world.client, world.prefix) == before, f"{name} wrote before refusing"
    text = str(info.value)
    assert text.startswith("CORRUPT"), text
    assert word in text, f"{text!r} does not name {word!r}"


@pytest.mark.parametrize("garbage", [b"x", b"3x", b"1" * 30, b"\xff"])
def test_garbage_dedup_marks_stop_a_send_of_several(world: World, garbage: bytes) -> None:
    """A batch whose second message meets a garbage mark appends nothing, not even the first."""
    case = BY_NAME["send"]
    case.setup(world)
    world.client.set(world.extra["origin"], garbage)
    before = image(world.client, world.prefix)
    with pytest.raises(redis.ResponseError, match=r"^CORRUPT .*from:"):
        _call(world, case)
    assert image(world.client, world.prefix) == before


@pytest.mark.parametrize(
    "spec", [None, b"", b"x\n\"id\"\n}\nnull", b"500\nid\n}\n1", b"5" * 16 + b'\n"i"\n}\n1']
)
def test_a_garbage_timer_spec_is_refused_before_any_write(
    world: World, spec: bytes | None
) -> None:
    """fire_timers.lua reads every due named timer's spec before it fires the first: an
    unnamed timer due before the garbage one is not fired either."""
    BY_NAME["fire_timers"].setup(world)
    if spec is None:
        world.client.hdel(world.keys.timer_specs, "p")
    else:
        world.client.hset(world.keys.timer_specs, "p", spec)
    before = image(world.client, world.prefix)
    with pytest.raises(redis.ResponseError, match=r"^CORRUPT timer spec of @p"):
        _call(world, BY_NAME["fire_timers"])
    assert image(world.client, world.prefix) == before


def test_tick_lock_with_garbage_changes_nothing(world: World) -> None:
    lock = f"{world.prefix}:tick:lock"
    world.client.rpush(lock, b"x")
    before = image(world.client, world.prefix)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        world.scripts.tick_lock(keys=[lock], args=["holder"])
    assert image(world.client, world.prefix) == before


# -- through the public API ------------------------------------------------------------------


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> Any:
    return supervise_runner(bank.supervision)


def test_garbage_seq_refuses_the_send_naming_it(
    bank: ModuleType, local: Any, redis_client: redis.Redis
) -> None:
    ref = bank.poison.ref("seq-garbage")
    ref.send("a")
    local.run()
    redis_client.hset(ref.keys.meta, "seq", "oops")
    before = image(redis_client, "t")
    with pytest.raises(CorruptActorData, match="meta field seq is not an integer"):
        ref.send("b")
    assert image(redis_client, "t") == before


@pytest.mark.parametrize(
    "garbage", [b"garbage without a seq", b"\xff\xfe\x00 junk", b"0 1 {}\n1", b"x 1 {}\n1",
                b"1_0 1 {\"id\":\"m\"}\n1", b"-3 0 {}\n1", b"1234567890123456789 1 {}\n1"]
)
def test_garbage_head_without_a_seq_is_dead_lettered(
    bank: ModuleType, local: Any, redis_client: redis.Redis, garbage: bytes
) -> None:
    """A head the runner cannot tie to a seq still counts attempts and is dead-lettered at
    max_attempts with its bytes kept; the actor then goes on with the next message."""
    ref = bank.poison.ref(f"junk-{uuid.uuid4().hex[:6]}")  # max_attempts=3
    ref.send("a")
    local.run()
    redis_client.lpush(ref.keys.mailbox, garbage)
    ref.send("b")
    deadline = time.monotonic() + 30  # three attempts with real backoffs, however loaded
    while ref.snapshot().state != {"applied": ["a", "b"]} and time.monotonic() < deadline:
        local.settle(0.5)
    snap = ref.snapshot()
    assert snap.state == {"applied": ["a", "b"]}, snap
    assert snap.status == "idle" and snap.pending == 0
    (letter,) = ref.dead_letters()
    assert len(letter.crashes) == 3
    raw = letter.message.encode("utf-8" if _utf8(garbage) else "latin-1")
    assert raw == garbage  # the raw bytes, readable
    assert "mailbox entry" in letter.crashes[-1]["message"]
    assert letter.seq < 0  # a seq of its own, unique among the actor's dead letters


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_a_reply_relayed_twice_is_pushed_once(
    bank: ModuleType, local: Any, redis_client: redis.Redis
) -> None:
    """A worker that relays and dies before removing the outbox entry, then a tick relaying
    the same entry: the asker's list still holds one answer, and it has its TTL."""
    from celery_supervise.delivery import reply_marker

    sup = bank.supervision
    ref = bank.poison.ref("replier")
    item = json.dumps({"kind": "reply", "id": "ask-1", "value": 42}).encode()
    for _ in range(2):
        redis_client.rpush(ref.keys.outbox, item)
        relay_outbox(sup.runtime, ref.type_name, ref.key)
    reply_key = ref.keys.reply("ask-1")
    assert redis_client.lrange(reply_key, 0, -1) == [b'{"value": 42}']
    assert 0 < redis_client.ttl(reply_key) <= 300
    assert 0 < redis_client.ttl(reply_marker(reply_key)) <= 300
    # the asker took the answer: a late relay does not push another for a reused id
    redis_client.delete(reply_key)
    redis_client.rpush(ref.keys.outbox, item)
    relay_outbox(sup.runtime, ref.type_name, ref.key)
    assert redis_client.llen(reply_key) == 0


@pytest.mark.parametrize("fence", ["quarantined|5|3|4", "quarantined|5|3|5", "stopped|5|3|4"])
def test_a_fenced_restart_acts_only_on_the_actor_as_it_was_read(world: World, fence: str) -> None:
    """restart.lua's ARGV[7] (a release after a replay): any difference in status, token,
    version or crash_seq and nothing is written."""
    base(world, status="quarantined", lease_until=None)
    before = image(world.client, world.prefix)
    args = ["force", "last_good", "null", 10, "1", "", fence]
    keys = actor_keys("meta", "mailbox", "history")(world)
    keys += Keyspace(world.prefix).metric_keys(world.keys)
    reply = world.scripts.restart(keys=keys, args=args)
    if fence == "quarantined|5|3|4":
        assert reply[0] == b"woke" and image(world.client, world.prefix) != before
    else:
        assert reply == [b"skip", b"changed"] and image(world.client, world.prefix) == before
