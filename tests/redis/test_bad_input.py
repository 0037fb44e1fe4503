"""SPEC 6.6, property-based: bad input gets a clear ``SuperviseError`` naming the problem and
changes nothing; valid JSON round-trips exactly; garbage written into an actor's Redis keys gets
``CorruptActorData`` (or a crash record naming it) and never stops the runner, the tick or any
other actor. Steps run in this process (``LocalRunner``) against the real Redis."""

from __future__ import annotations

import decimal
import json
import math
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_supervise import (
    ActorNotRegistered,
    CorruptActorData,
    InvalidKey,
    InvalidMessage,
    MessageTooLarge,
    SuperviseError,
)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


def redis_image(client: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key with its serialized value: equal images mean nothing changed."""
    keys = sorted(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return dict(zip(keys, pipe.execute(), strict=True))


# -- strategies ---------------------------------------------------------------------------

json_leaves = (
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=25,
)


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


def _deep(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"d": value}
    return value


#: (bad value, a word the error must contain)
bad_leaves = st.one_of(
    st.sets(st.integers(), max_size=3).map(lambda v: (v, "set")),
    st.frozensets(st.integers(), max_size=3).map(lambda v: (v, "frozenset")),
    st.binary(max_size=10).map(lambda v: (v, "bytes")),
    st.tuples(st.integers(), st.sets(st.integers(), max_size=2)).map(lambda v: (v, "tuple")),
    st.lists(st.integers(), max_size=3).map(lambda v: (tuple(v), "tuple")),
    st.sampled_from([(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "inf")]),
    st.one_of(st.integers(), st.none(), st.booleans(), st.tuples(st.integers()),
              st.floats(allow_nan=False), st.binary(max_size=3))
    .map(lambda k: ({k: 1}, "key")),
    st.sampled_from([(object(), "object"), (Opaque(), "Opaque"), (1j, "complex"),
                     (decimal.Decimal("1.5"), "Decimal"), (range(3), "range")]),
    st.sampled_from(["\ud800", "a\udfffb", "x\udc80"]).map(lambda s: (s, "surrogate")),
    st.sampled_from(["\ud800", "k\udc00"]).map(lambda s: ({s: 1}, "surrogate")),
    st.integers(min_value=4400, max_value=6000).map(lambda d: (10**d, "digits")),
    st.integers(min_value=65, max_value=400).map(lambda d: (_deep(d), "deeper")),
    st.integers(min_value=262_145, max_value=400_000).map(lambda n: ("x" * n, "max_message")),
    st.integers(min_value=40_000, max_value=60_000).map(lambda n: (["abcdefg"] * n,
                                                                   "max_message")),
)


@st.composite
def bad_messages(draw: st.DrawFn) -> tuple[Any, str]:
    """A bad leaf, sometimes buried inside an otherwise valid JSON value."""
    leaf, word = draw(bad_leaves)
    wrap = draw(st.sampled_from(["bare", "list", "dict", "deep"]))
    if wrap == "list":
        return [*draw(st.lists(json_leaves, max_size=3)), leaf], word
    if wrap == "dict":
        return {"ok": draw(json_values), "bad": leaf}, word
    if wrap == "deep":
        return {"a": [1, {"b": [leaf]}]}, word
    return leaf, word


bad_keys = st.one_of(
    st.integers(), st.none(), st.binary(max_size=5), st.lists(st.text(max_size=2), max_size=2),
    st.just(""), st.text(min_size=201, max_size=300), st.sampled_from(["\ud800", "k\udc00y"]),
)
bad_ids = st.one_of(
    st.integers(), st.binary(max_size=5), st.just(""), st.text(min_size=201, max_size=260),
    st.sampled_from(["\ud800", "id\udfff"]), st.lists(st.text(max_size=2), max_size=2),
)
good_keys = st.text(min_size=1, max_size=200)  # any text: ":", "{", "}", "%" included


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a == 0.0:
        return math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# -- bad messages, keys, ids, types ----------------------------------------------------------


@SETTINGS
@given(bad=bad_messages(), how=st.sampled_from(["send", "send_many", "ask", "id"]))
def test_bad_messages_are_refused_and_change_nothing(
    bank: ModuleType, redis_client: redis.Redis, bad: tuple[Any, str], how: str
) -> None:
    value, word = bad
    ref = bank.poison.ref("bad-input")
    ref.send("before")  # the actor exists: a refused send must not touch it
    before = redis_image(redis_client)
    with pytest.raises(SuperviseError) as info:
        if how == "send":
            ref.send(value)
        elif how == "send_many":  # one bad message: none of the batch is stored
            ref.send_many(["good-1", value, "good-2"])
        elif how == "ask":
            ref.ask(value, timeout=0.2)
        else:
            ref.send(value, message_id=f"caller-{uuid.uuid4().hex}")
    exc = info.value
    assert isinstance(exc, InvalidMessage), repr(exc)
    if word == "max_message":
        assert isinstance(exc, MessageTooLarge), repr(exc)
    assert word.lower() in str(exc).lower(), f"{type(exc).__name__}: {exc} does not name {word!r}"
    assert redis_image(redis_client) == before


@SETTINGS
@given(key=bad_keys)
def test_bad_keys_are_refused(bank: ModuleType, redis_client: redis.Redis, key: Any) -> None:
    before = redis_image(redis_client)
    with pytest.raises(InvalidKey) as info:
        bank.poison.ref(key).send("x")
    assert "key" in str(info.value)
    with pytest.raises(InvalidKey):
        bank.supervision.ref("bank.poison", key)
    assert redis_image(redis_client) == before


@SETTINGS
@given(mid=bad_ids)
def test_bad_message_ids_are_refused(bank: ModuleType, redis_client: redis.Redis,
                                     mid: Any) -> None:
    ref = bank.poison.ref("ids")
    before = redis_image(redis_client)
    for call in (lambda: ref.send("x", message_id=mid),
                 lambda: ref.send_many(["a", "b"], message_ids=["ok-id", mid])):
        with pytest.raises(InvalidMessage) as info:
            call()
        assert "message_id" in str(info.value)
    assert redis_image(redis_client) == before


@SETTINGS
@given(name=st.text(max_size=40).filter(lambda n: not n.startswith(("bank.", "tree.", "shop."))))
def test_unknown_actor_types_are_refused(bank: ModuleType, redis_client: redis.Redis,
                                         name: str) -> None:
    from celery_supervise.registry import all_types

    if name in all_types():
        return
    before = redis_image(redis_client)
    with pytest.raises(ActorNotRegistered) as info:
        bank.supervision.ref(name, "k")
    assert repr(name) in str(info.value)
    assert redis_image(redis_client) == before


# -- valid JSON round-trips --------------------------------------------------------------


@SETTINGS
@given(values=st.lists(json_values.filter(lambda v: v != "poison"), min_size=1, max_size=3),
       key=good_keys)
def test_valid_json_round_trips_exactly(bank: ModuleType, supervise_runner: Any, values: list[Any],
                                       key: str) -> None:
    runner = supervise_runner(bank.supervision)
    key = f"{uuid.uuid4().hex[:6]}{key}"[:200]  # any str key, fresh per example
    ref = bank.poison.ref(key)
    ids = ref.send_many(values)
    runner.run()
    assert not runner.failures, runner.failures
    snap = ref.snapshot()
    got = snap.state["applied"]
    assert same(got, values), f"{ref}: sent {values!r}, state holds {got!r}"
    assert snap.version == len(values) and snap.pending == 0
    assert [h.message_id for h in ref.history()][: len(ids)] == ids[::-1]


# -- garbage in Redis ---------------------------------------------------------------------

Corruption = Callable[[redis.Redis, Any], Any]

GARBAGE = [b"garbage", b"\xff\xfe\x00", b"", b"{}", b"[1]", b"null", b'{"version":"x"}',
           b'{"header":{"id":1},"seq":"x"}', b"12 34 {}\nnot json", b"99 1 [1]\n1",
           b"5 x {}\n1", b'1 1 {"id":1}\n{}', b"7 7 notjson\n1", b"-1 0 {}\n1", b"1" * 1000]
META_FIELDS = ["version", "token", "seq", "status", "lease_until", "state", "attempts",
               "attempt_seq", "consumed", "sched", "type", "key", "crash_seq", "last_crash",
               "restart_at", "backoff_level", "crashes_in_row", "sched_at", "rewakes"]
LISTS = ["mailbox", "history", "crashes", "attempts", "dead", "outbox", "undelivered"]
ALL_KEYS = ["meta", *LISTS, "timers", "timer_specs", "isolates"]


def _wrong_type(attr: str, kind: str) -> Corruption:
    def corrupt(client: redis.Redis, keys: Any) -> None:
        name = getattr(keys, attr)
        client.delete(name)
        {"string": lambda: client.set(name, b"x"),
         "zset": lambda: client.zadd(name, {b"x": 1}),
         "hash": lambda: client.hset(name, b"f", b"v"),
         "list": lambda: client.rpush(name, b"x"),
         "set": lambda: client.sadd(name, b"x")}[kind]()
    return corrupt


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[str, Corruption]:
    garbage = draw(st.sampled_from(GARBAGE) | st.binary(max_size=40))
    kind = draw(st.sampled_from(["meta_field", "wrong_type", "list_entry", "list_head",
                                 "timer", "named_timer", "isolate"]))
    if kind == "meta_field":
        field = draw(st.sampled_from(META_FIELDS))
        return (f"meta.{field} = {garbage!r}",
                lambda c, k: c.hset(k.meta, field, garbage))
    if kind == "wrong_type":
        attr = draw(st.sampled_from(ALL_KEYS))
        other = draw(st.sampled_from(["string", "zset", "hash", "list", "set"]))
        return f"{attr} is a {other}", _wrong_type(attr, other)
    if kind in ("list_entry", "list_head"):
        attr = draw(st.sampled_from(LISTS))
        push = "rpush" if kind == "list_entry" else "lpush"
        return (f"{push} {attr} {garbage!r}",
                lambda c, k: getattr(c, push)(getattr(k, attr), garbage))
    if kind == "timer":
        return f"timer {garbage!r}", lambda c, k: c.zadd(k.timers, {garbage: 0})
    if kind == "named_timer":
        return (f"named timer spec {garbage!r}",
                lambda c, k: (c.zadd(k.timers, {b"@n": 0}), c.hset(k.timer_specs, b"n", garbage)))
    return f"isolate {garbage!r}", lambda c, k: c.hset(k.isolates, b"iso-1", garbage)


def _attempt(errors: list[str], label: str, fn: Callable[[], Any]) -> Any:
    """Run one client call: it may succeed or raise a SuperviseError naming the problem."""
    try:
        return fn()
    except SuperviseError as exc:
        if not str(exc).strip():
            errors.append(f"{label}: {type(exc).__name__} with an empty message")
    except Exception as exc:
        errors.append(f"{label}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
    return None


@settings(SETTINGS, max_examples=250)
@given(corruption=corruptions())
def test_garbage_in_redis_is_reported_and_contained(
    bank: ModuleType, redis_client: redis.Redis, supervise_runner: Any,
    corruption: tuple[str, Corruption],
) -> None:
    name, corrupt = corruption
    runner = supervise_runner(bank.supervision)
    tag = uuid.uuid4().hex[:8]
    victim = bank.poison.ref(f"victim-{tag}")
    bystanders = [bank.poison.ref(f"bystander-{tag}-{i}") for i in range(2)]
    for ref in [victim, *bystanders]:
        ref.send_many(["a", "b"])
    runner.run()
    victim.send("queued")  # one message waiting while the garbage appears
    runner.failures.clear()
    mine = [k for k in redis_image(redis_client) if f"bystander-{tag}".encode() in k]
    pipe = redis_client.pipeline(transaction=False)
    for k in mine:
        pipe.dump(k)
    bystanders_before = dict(zip(mine, pipe.execute(), strict=True))

    corrupt(redis_client, victim.keys)
    errors: list[str] = []
    _attempt(errors, "snapshot", victim.snapshot)
    _attempt(errors, "history", victim.history)
    _attempt(errors, "dead_letters", victim.dead_letters)
    _attempt(errors, "undeliverable_effects", victim.undeliverable_effects)
    _attempt(errors, "send", lambda: victim.send("after"))
    _attempt(errors, "requeue_dead_letter", lambda: victim.requeue_dead_letter("none"))
    _attempt(errors, "runner.run", runner.run)
    _attempt(errors, "tick", runner.tick)
    _attempt(errors, "restart", victim.restart)
    _attempt(errors, "runner.run", runner.run)
    _attempt(errors, "tick", runner.tick)
    for _, _, exc in runner.failures:  # a crashed step shows as a failed task: ours
        if not isinstance(exc, SuperviseError):
            errors.append(f"task failed with {type(exc).__name__}: {exc}")
    assert not errors, f"after {name}:\n" + "\n".join(errors)

    pipe = redis_client.pipeline(transaction=False)
    for k in mine:
        pipe.dump(k)
    assert dict(zip(mine, pipe.execute(), strict=True)) == bystanders_before, (
        f"after {name}: a bystander's keys changed")
    for ref in bystanders:  # and they still work
        ref.send("c")
    runner.run()
    for ref in bystanders:
        assert ref.snapshot().state == {"applied": ["a", "b", "c"]}, f"after {name}: {ref}"


# -- specific garbage: the error names the problem ---------------------------------------


def _victim(bank: ModuleType, runner: Any) -> Any:
    ref = bank.poison.ref(f"v-{uuid.uuid4().hex[:8]}")
    ref.send_many(["a", "b"])
    runner.run()
    return ref


@pytest.mark.parametrize(
    ("corrupt", "call", "words"),
    [
        (lambda c, k: c.hset(k.meta, "version", "abc"), "snapshot", ["meta", "abc"]),
        (lambda c, k: c.hset(k.meta, "state", "{not json"), "snapshot", ["state", "JSON"]),
        (lambda c, k: c.hset(k.meta, "state", b"\xff\xfe"), "snapshot", ["state", "UTF-8"]),
        (lambda c, k: c.hset(k.meta, "last_crash", "{bad"), "snapshot", ["meta"]),
        (lambda c, k: (c.delete(k.meta), c.set(k.meta, "x")), "snapshot", ["WRONGTYPE"]),
        (lambda c, k: (c.delete(k.meta), c.set(k.meta, "x")), "send", ["WRONGTYPE"]),
        (lambda c, k: c.hset(k.meta, "type", "other.type"), "send", ["another actor"]),
        (lambda c, k: (c.delete(k.mailbox), c.set(k.mailbox, "x")), "send", ["WRONGTYPE"]),
        (lambda c, k: c.lpush(k.history, b"garbage"), "history", ["history", "JSON"]),
        (lambda c, k: c.lpush(k.history, b'{"version":"x"}'), "history", ["history"]),
        (lambda c, k: (c.delete(k.history), c.set(k.history, "x")), "history", ["WRONGTYPE"]),
        (lambda c, k: c.rpush(k.dead, b"garbage"), "dead_letters", ["dead letter", "JSON"]),
        (lambda c, k: c.rpush(k.dead, b"{}"), "dead_letters", ["dead letter", "header"]),
        (lambda c, k: c.rpush(k.dead, b"[1]"), "requeue", ["dead letter"]),
        (lambda c, k: c.set(k.dead, "x"), "dead_letters", ["WRONGTYPE"]),
        (lambda c, k: c.rpush(k.undelivered, b"{}"), "undeliverable", ["undeliverable"]),
        (lambda c, k: c.set(k.undelivered, "x"), "undeliverable", ["WRONGTYPE"]),
    ],
)
def test_garbage_gets_corrupt_actor_data_naming_it(
    bank: ModuleType, supervise_runner: Any, redis_client: redis.Redis,
    corrupt: Corruption, call: str, words: list[str],
) -> None:
    runner = supervise_runner(bank.supervision)
    ref = _victim(bank, runner)
    corrupt(redis_client, ref.keys)
    calls = {"snapshot": ref.snapshot, "send": lambda: ref.send("x"), "history": ref.history,
             "dead_letters": ref.dead_letters,
             "requeue": lambda: ref.requeue_dead_letter("x"),
             "undeliverable": ref.undeliverable_effects}
    with pytest.raises(CorruptActorData) as info:
        calls[call]()
    for word in words:
        assert word.lower() in str(info.value).lower(), f"{info.value} does not name {word!r}"


@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (lambda c, k: c.hset(k.meta, "state", "{not json"), ["state", "JSON"]),
        (lambda c, k: c.lpush(k.mailbox, b"garbage"), ["mailbox entry"]),
        (lambda c, k: c.lpush(k.mailbox, b"3 1 notjson\n1"), ["mailbox entry"]),
        (lambda c, k: c.lpush(k.mailbox, b'3 1 {"id":"m"}\n{not json'), ["JSON"]),
    ],
)
def test_garbage_met_by_a_step_is_a_crash_record_naming_it(
    bank: ModuleType, supervise_runner: Any, redis_client: redis.Redis,
    corrupt: Corruption, words: list[str],
) -> None:
    runner = supervise_runner(bank.supervision)
    ref = _victim(bank, runner)
    other = bank.poison.ref(f"other-{uuid.uuid4().hex[:8]}")
    corrupt(redis_client, ref.keys)
    ref.send("c")
    other.send("fine")
    runner.run()
    assert redis_client.hget(ref.keys.meta, "status") == b"crashed"
    raw = redis_client.hget(ref.keys.meta, "last_crash")
    assert raw is not None
    crash = json.loads(raw)
    text = f"{crash['type']}: {crash['message']}"
    for word in words:
        assert word.lower() in text.lower(), f"crash record {text!r} does not name {word!r}"
    assert other.snapshot().state == {"applied": ["fine"]}  # the runner went on
    runner.tick()  # and the tick copes with the crashed actor
