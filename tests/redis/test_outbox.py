"""The outbox relay (docs/effects.md): one receiver that cannot take an effect never blocks
the sender's effects to anyone else; order per receiver holds; an effect that can never be
delivered is moved, with its error, to the sender's undeliverable effects (API, CLI); the
tick relays a stuck outbox also while its actor is busy (leased).

Everything runs in this process (``LocalRunner``) against the real Redis; a receiver is made
unreachable by planting garbage in its keys (permanent) or by making its send raise
``RedisUnavailable`` (transient)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_supervise import RedisUnavailable
from celery_supervise.cli.queries import actor_report
from celery_supervise.context import Effects
from celery_supervise.delivery import Delivery
from celery_supervise.effects import encode_effects
from celery_supervise.relay import relay_outbox
from celery_supervise.testing import LocalRunner
from tests.harness import PROJECT_ROOT


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def _got(bank: ModuleType, key: str) -> list[int]:
    """The ``n`` of every message shop.receiver:<key> handled, in order."""
    state = bank.supervision.ref("shop.receiver", key).snapshot().state
    return [n for _, n, _ in state["got"]]


def _wait(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _ask_in_thread(
    ref: Any, message: Any, answers: list[Any], local: LocalRunner
) -> threading.Thread:
    def ask() -> None:
        try:
            answers.append(ref.ask(message, timeout=10))
        except Exception as exc:
            answers.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    # stored, and its run published (the asker's thread does both, one after the other)
    _wait(lambda: ref.snapshot().pending == 1 and bool(local.queue))
    return thread


def _fail_sends_to(
    monkeypatch: pytest.MonkeyPatch, receiver_key: str, times: int
) -> list[str]:
    """Make the next ``times`` relays to shop.receiver:<receiver_key> raise RedisUnavailable;
    returns the key of every receiver a send was attempted to, in order."""
    original = Delivery.send
    attempts: list[str] = []
    left = [times]

    def send(self: Delivery, type_name: str, key: str, *args: Any, **kw: Any) -> list[int]:
        if type_name != "shop.receiver":
            return original(self, type_name, key, *args, **kw)
        attempts.append(key)
        if key == receiver_key and left[0] > 0:
            left[0] -= 1
            raise RedisUnavailable(f"actor {type_name}:{key}: Redis did not answer (test)")
        return original(self, type_name, key, *args, **kw)

    monkeypatch.setattr(Delivery, "send", send)
    return attempts


# -- a corrupt receiver ------------------------------------------------------------------------
def test_a_corrupt_receiver_does_not_block_the_senders_other_effects(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """The relay stopped at the first failing entry: a send to a receiver with garbage in its
    keys held back the send to a healthy receiver and the reply to the asker, for good."""
    sup = bank.supervision
    r1 = sup.ref("shop.receiver", "r1")
    redis_client.hset(r1.keys.meta, "type", "someone.else")  # send.lua: CORRUPT
    f = sup.ref("shop.fanout", "f")
    answers: list[Any] = []
    asking = _ask_in_thread(f, {"to": ["r1", "r2"]}, answers, local)
    local.run()
    asking.join(15)

    assert answers == [{"steps": 1}]
    assert _got(bank, "r2") == [11]
    assert redis_client.llen(f.keys.outbox) == 0
    (dead,) = f.undeliverable_effects()
    assert (dead.kind, dead.target) == ("send", "shop.receiver:r1")
    assert "another actor" in dead.error and "CorruptActorData" in dead.error
    assert dead.effect["message"] == {"n": 10, "from": "f"}
    assert abs(dead.at - time.time()) < 60
    assert f.snapshot().undeliverable == 1
    events = [json.loads(e[b"event"]) for _, e in redis_client.xrange(sup.keyspace.events)]
    assert [(e["actor"], e["key"], e["target"]) for e in events
            if e["event"] == "effect_undeliverable"] == [("shop.fanout", "f", "shop.receiver:r1")]

    # Later steps: each effect to the corrupt receiver is dead-lettered in turn (in order),
    # the others are delivered.
    f.send_many([{"to": ["r1", "r2", "r1"]}, {"to": ["r2"]}])
    local.run()
    assert _got(bank, "r2") == [11, 21, 30]
    assert [d.effect["message"]["n"] for d in f.undeliverable_effects()] == [10, 20, 22]
    assert redis_client.llen(f.keys.outbox) == 0

    report = actor_report(sup, f, history=0)
    assert report.undeliverable == 3
    assert [d.target for d in report.undeliverable_effects] == ["shop.receiver:r1"] * 3
    cli = _cli(bank, "actor", "shop.fanout", "f", "--json")
    assert cli["undeliverable"] == 3
    assert cli["undeliverable_effects"][0]["target"] == "shop.receiver:r1"
    assert "another actor" in cli["undeliverable_effects"][0]["error"]
    text = _cli_text(bank, "actor", "shop.fanout", "f")
    assert "undelivered effects  3" in text and "shop.receiver:r1" in text


def test_a_malformed_outbox_entry_is_set_aside(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """An entry that is not ours (garbage in the sender's own outbox) was retried forever and
    held back everything behind it."""
    sup = bank.supervision
    f = sup.ref("shop.fanout", "g")
    redis_client.rpush(f.keys.outbox, b"garbage", b'{"kind":"send"}')
    f.send({"to": ["r3"]})
    local.run()
    assert _got(bank, "r3") == [10]
    assert redis_client.llen(f.keys.outbox) == 0
    dead = f.undeliverable_effects()
    assert [d.kind for d in dead] == [None, "send"]
    assert "JSON" in dead[0].error and dead[0].effect == "garbage"
    assert "missing" in dead[1].error


def test_an_effect_that_cannot_be_set_aside_stays_and_holds_only_its_receiver(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """With the sender's own undeliverable list unwritable (garbage there too), the entry
    to the corrupt receiver stays in the outbox, with the rest of its lane; nothing raises."""
    sup = bank.supervision
    f = sup.ref("shop.fanout", "h")
    redis_client.set(f.keys.undelivered, b"garbage")
    redis_client.hset(sup.ref("shop.receiver", "r5").keys.meta, "type", "someone.else")
    f.send({"to": ["r5", "r6", "r5"]})
    local.run()
    assert local.failures == []
    assert _got(bank, "r6") == [11]
    left = [json.loads(raw) for raw in redis_client.lrange(f.keys.outbox, 0, -1)]
    assert [(e["key"], e["message"]["n"]) for e in left] == [("r5", 10), ("r5", 12)]


# -- a receiver briefly unreachable ------------------------------------------------------------
def test_a_transient_failure_keeps_that_receivers_effects_in_order_and_others_proceed(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sup = bank.supervision
    attempts = _fail_sends_to(monkeypatch, "r1", times=1)
    f = sup.ref("shop.fanout", "f")
    f.send({"to": ["r1", "r2", "r1", "r3"]})
    local.run()
    # r1's first send failed: its second waits behind it (never tried: the receiver's
    # watermark would then drop the first as a duplicate); r2 and r3 got theirs.
    assert attempts == ["r1", "r2", "r3"]
    assert (_got(bank, "r2"), _got(bank, "r3")) == ([11], [13])
    assert _got(bank, "r1") == []
    left = [json.loads(raw) for raw in redis_client.lrange(f.keys.outbox, 0, -1)]
    assert [(e["key"], e["message"]["n"]) for e in left] == [("r1", 10), ("r1", 12)]
    assert f.undeliverable_effects() == []

    relay_outbox(sup.runtime, "shop.fanout", "f")  # the tick's retry, a lease later
    local.run()
    assert _got(bank, "r1") == [10, 12]
    assert redis_client.llen(f.keys.outbox) == 0


# -- order per receiver, whatever fails and whoever relays -------------------------------------
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(
    steps=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=4), min_size=1, max_size=4),
    failing=st.sets(st.integers(0, 30), max_size=8),
    nested_at=st.none() | st.integers(0, 20),
)
def test_order_per_receiver_holds_across_failed_and_concurrent_relays(
    bank: ModuleType, local: LocalRunner, monkeypatch: pytest.MonkeyPatch,
    steps: list[list[int]], failing: set[int], nested_at: int | None,
) -> None:
    """Several committed steps' sends to three receivers wait in the outbox; relay attempts
    number ``failing`` raise RedisUnavailable, and at attempt ``nested_at`` a second relayer
    (the tick, beside the worker) runs a whole relay of its own before that attempt goes on.
    Relaying until the outbox is empty delivers each receiver exactly its sends, in order."""
    rt = bank.supervision.runtime
    tag = uuid.uuid4().hex[:8]
    sender = f"s-{tag}"
    receivers = [f"r{i}-{tag}" for i in range(3)]
    keys = rt.keyspace.actor("shop.fanout", sender)
    expected: dict[str, list[int]] = {r: [] for r in receivers}
    for version, targets in enumerate(steps, start=1):
        effects = Effects()
        for i, t in enumerate(targets):
            n = 10 * version + i
            effects.sends.append(("shop.receiver", receivers[t], json.dumps(
                {"n": n, "from": sender}).encode()))
            expected[receivers[t]].append(n)
        encoded = encode_effects(effects, type_name="shop.fanout", key=sender, version=version,
                                 reply_to=None, now_ms=0)
        rt.client.rpush(keys.outbox, *encoded.outbox)

    original = Delivery.send
    calls = [0]

    def send(self: Delivery, *args: Any, **kw: Any) -> list[int]:
        call = calls[0]
        calls[0] += 1
        if call == nested_at:
            relay_outbox(rt, "shop.fanout", sender)
        if call in failing:
            raise RedisUnavailable("Redis did not answer (test)")
        return original(self, *args, **kw)

    monkeypatch.setattr(Delivery, "send", send)
    for _ in range(40):
        if not rt.client.llen(keys.outbox):
            break
        relay_outbox(rt, "shop.fanout", sender)
    monkeypatch.undo()
    assert rt.client.llen(keys.outbox) == 0
    local.run()
    for r in receivers:
        assert _got(bank, r) == expected[r], f"{r}: steps={steps} failing={failing}"


# -- the tick and a busy actor -----------------------------------------------------------------
def test_the_tick_relays_a_busy_actors_stuck_outbox(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tick relayed an outbox only when it found the actor unleased: an actor kept busy
    (always leased) had the effects its worker failed to relay wait for as long as it was."""
    from celery_supervise import runner
    from celery_supervise.store import ActorStore

    sup, rt = bank.supervision, bank.supervision.runtime
    f = sup.ref("shop.fanout", "busy")
    monkeypatch.setattr(runner, "relay_outbox", lambda *a: 0)  # the worker's relay failed
    f.send({"to": ["r4"]})
    local.run()
    monkeypatch.undo()
    assert redis_client.llen(f.keys.outbox) == 1

    # The actor is busy with its next message: a worker holds its lease, mid-step.
    f.send({"to": []})
    local.queue.clear()
    claim = ActorStore(rt).claim(f.keys, worker="busy@host", lease_ms=60_000, batch=1,
                                 nonce="n1", supervisors=[], hint_in=0)
    assert claim.outcome == "ok"
    member = "shop.fanout:busy"
    redis_client.zadd(rt.keyspace.due_bucket(member), {member: 0})  # its hint comes due
    local.tick()
    assert _got(bank, "r4") == [10]
    assert redis_client.llen(f.keys.outbox) == 0
    assert redis_client.hget(f.keys.meta, "lease_owner") == b"busy@host"  # still busy


# -- the CLI, as a user runs it ----------------------------------------------------------------
def _run_cli(bank: ModuleType, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _cli(bank: ModuleType, *args: str) -> Any:
    return json.loads(_run_cli(bank, *args))


def _cli_text(bank: ModuleType, *args: str) -> str:
    return _run_cli(bank, *args)
