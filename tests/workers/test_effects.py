"""SPEC 6.4 with real worker processes: effects (``ctx.send``, ``reply``, ``isolate``,
``send_after``, ``stop``) happen if and only if their step commits, each exactly once.

The actors live in ``tests.apps.shop``; the flaky gateway is deterministic from its
idempotency key (``gateway_plan``), so a test knows which call fails, hangs or succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import AskNotAllowed, AskTimeout, MessageDeadLettered
from celery_supervise.isolation import Isolation
from celery_supervise.registry import registered
from celery_supervise.relay import relay_outbox
from tests.harness import wait_until

GATEWAY = "gateway"


@pytest.fixture
def shop(bank: ModuleType) -> ModuleType:
    from tests.apps import shop as module

    return module


def _gateway_worker(workers: Any, name: str, concurrency: int = 3) -> Any:
    return workers(name, concurrency=concurrency, queues=GATEWAY)


def _pick(shop: ModuleType, prefix: str, want: dict[str, int]) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {plan: [] for plan in want}
    i = 0
    while any(len(chosen[p]) < n for p, n in want.items()):
        key = f"{prefix}-{i}"
        plan = shop.gateway_plan(key)
        if plan in chosen and len(chosen[plan]) < want[plan]:
            chosen[plan].append(key)
        i += 1
    return chosen


def _outcomes(ref: Any) -> list[dict[str, Any]]:
    state = ref.snapshot().state
    return list(state["outcomes"]) if state else []


def _state(ref: Any) -> dict[str, Any]:
    return ref.snapshot().state or {}


def _events(redis_client: redis.Redis, name: str) -> list[dict[str, Any]]:
    rows = redis_client.xrange("t:events")
    records = [json.loads(fields[b"event"]) for _, fields in rows]
    return [r for r in records if r["event"] == name]


# -- 1. isolated subtasks ----------------------------------------------------------------


def test_flaky_gateway_exactly_one_outcome_per_isolate(
    shop: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    workers("actors", concurrency=2)
    gw_a = _gateway_worker(workers, "gwa")
    gw_b = _gateway_worker(workers, "gwb")
    keys = _pick(shop, "pay", {"ok": 3, "fail": 3, "hang": 2})
    (slow,) = _pick(shop, "slow", {"ok": 1})["ok"]
    # '@' and ':' in the key: the isolate id must still name this actor
    ref = shop.checkout.ref("cart@alice:1")
    payments = [[k, 100 + i, 0] for i, k in enumerate(keys["ok"] + keys["fail"] + keys["hang"])]
    ref.send({"pay": payments})

    quick = set(keys["ok"] + keys["fail"])
    wait_until(lambda: quick <= {o["isolated"] for o in _outcomes(ref)}, 60, interval=0.2,
               message="the ok/failing gateway calls did not all report back")

    # The hanging calls: SIGKILL the pool child running one, the whole worker of the other.
    hang_child, hang_worker = keys["hang"]
    pids = {k: int(wait_until(lambda k=k: redis_client.get(shop.probe_key("gw-pid", k)), 30,
                              message=f"gateway {k} never started"))
            for k in keys["hang"]}
    os.kill(pids[hang_child], signal.SIGKILL)
    owner = next(w for w in (gw_a, gw_b) if pids[hang_worker] in w.child_pids())
    owner.kill()
    _gateway_worker(workers, "gwc")

    # One call times out; its late result (after 4 s) must be dropped.
    ref.send({"pay": [[slow, 7, 4.0]], "timeout": 1.0})
    everything = quick | set(keys["hang"]) | {slow}
    wait_until(lambda: everything <= {o["isolated"] for o in _outcomes(ref)}, 60, interval=0.2,
               message="not every isolated call delivered its outcome")
    wait_until(lambda: redis_client.hget(shop.probe_key("gw-done"), slow), 30,
               message="the timed-out gateway call never finished")
    time.sleep(1.5)  # a few ticks: anything still to deliver would arrive now

    outcomes = _outcomes(ref)
    counts = Counter(o["isolated"] for o in outcomes)
    assert counts == Counter(everything), f"not exactly one outcome per call: {counts}"
    by_tag = {o["isolated"]: o for o in outcomes}
    amounts = {k: a for k, a, _ in payments}
    for k in keys["ok"]:
        assert by_tag[k] == {"isolated": k, "ok": True,
                             "result": {"charged": amounts[k], "key": k}}
    for k in keys["fail"]:
        assert by_tag[k]["ok"] is False
        assert by_tag[k]["error"] == {"type": "GatewayDeclined",
                                      "message": f"card declined for {k}"}
    for k in keys["hang"]:
        assert by_tag[k]["ok"] is False and by_tag[k]["error"]["type"] == "WorkerLost", by_tag[k]
    assert by_tag[slow]["ok"] is False and by_tag[slow]["error"]["type"] == "Timeout"
    # the subtask ran (at least once) even though its outcome was the timeout
    assert int(redis_client.hget(shop.probe_key("gw-runs"), slow)) >= 1

    snap = ref.snapshot()
    assert snap.last_crash is None and snap.consecutive_crashes == 0
    assert redis_client.llen(ref.keys.crashes) == 0
    assert not redis_client.exists(ref.keys.isolates), "a settled subtask is still pending"
    assert snap.status == "idle" and snap.pending == 0


def test_isolate_in_a_crashed_step_never_runs(
    shop: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    """Effects iff commit: a step that asked for a subtask and then crashed asks nothing."""
    workers("actors", concurrency=2)
    _gateway_worker(workers, "gw", concurrency=1)
    (key,) = _pick(shop, "nocommit", {"ok": 1})["ok"]
    ref = shop.checkout.ref("c2")
    ref.send({"pay": [[key, 1, 0]], "crash_after": True})  # isolated, then crashed
    wait_until(lambda: len(ref.dead_letters()) == 1, 30, message="bad step not dead-lettered")
    (good,) = _pick(shop, "commit", {"ok": 1})["ok"]
    ref.send({"pay": [[good, 2, 0]]})
    wait_until(lambda: [o["isolated"] for o in _outcomes(ref)] == [good], 30)
    assert redis_client.hget(shop.probe_key("gw-runs"), key) is None


def test_isolate_outcome_is_delivered_once_when_two_runs_race(
    shop: ModuleType, bank: ModuleType, redis_client: redis.Redis
) -> None:
    """A subtask run twice (republished after its first worker vanished) delivers once;
    the pending record keeps its arguments exactly (no float/array mangling in Lua)."""
    sup = bank.supervision
    iso_id = "shop.checkout:k@1:x@1.i0"
    keys = sup.keyspace.actor("shop.checkout", "k@1:x")
    spec = {"tag": "t", "task": "shop.gateway", "args": [12345678901234567, 0.1, []],
            "kwargs": {}, "timeout": None}
    redis_client.hset(keys.meta, mapping={"type": "shop.checkout", "key": "k@1:x",
                                          "status": "idle", "sched": 1})
    record = Isolation.pending_record(spec, sup.runtime.clock_ms())
    redis_client.hset(keys.isolates, iso_id, record)
    sup.isolation.start({"kind": "isolate", "id": iso_id, "spec": spec})  # published
    sup.scripts.iso_mark(keys=[keys.isolates], args=[iso_id, "heartbeat", "now", "0"])
    assert sup.isolation.pending(keys)[iso_id]["args"] == [12345678901234567, 0.1, []]
    first = sup.isolation.deliver("shop.checkout", "k@1:x", iso_id,
                                  {"isolated": "t", "ok": True, "result": 1})
    second = sup.isolation.deliver("shop.checkout", "k@1:x", iso_id,
                                   {"isolated": "t", "ok": True, "result": 2})
    assert first >= 0 and second == -1
    assert redis_client.llen(keys.mailbox) == 1
    assert not redis_client.exists(keys.isolates)


# -- 2. sends from crashing steps ----------------------------------------------------------


def test_sends_happen_iff_the_step_commits(
    shop: ModuleType, bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    workers("w1", concurrency=2)
    a = shop.sender.ref("a")
    b = shop.receiver.ref("b")
    messages = []
    for n in range(12):
        msg: dict[str, Any] = {"n": n, "to": "b"}
        if n % 3 == 0:
            msg["crash_first"] = True
        if n == 4:
            msg["twice"] = True
        if n == 7:
            msg["always_crash"] = True  # dead-lettered: its sends never happen
        messages.append(msg)
    a.send_many(messages)
    expected = [n for n in range(12) if n != 7]
    wait_until(lambda: _state(a).get("sent") == expected and a.snapshot().pending == 0,
               60, interval=0.2, message="sender did not work through its mailbox")
    want = [["a", n, False] for n in expected]
    want.insert(want.index(["a", 4, False]) + 1, ["a", 4, True])
    wait_until(lambda: _state(b).get("got") == want, 30,
               message="receiver did not get exactly the committed sends")
    assert [c["attempt"] for c in a.dead_letters()[0].crashes] == [1, 2, 3]
    crashes = [json.loads(r) for r in redis_client.lrange(a.keys.crashes, 0, -1)]
    assert len(crashes) == 4 + 3  # n = 0, 3, 6, 9 once each, n = 7 three times

    # Relaying an already-relayed effect again (a relay racing the tick's) is a no-op.
    newest = a.history()[0]
    assert newest.state["sent"][-1] == 11
    redis_client.rpush(a.keys.outbox, json.dumps(
        {"kind": "send", "type": "shop.receiver", "key": "b",
         "id": f"shop.sender:a@{newest.version}.s0", "from": "shop.sender:a",
         "ord": newest.version * 1024, "message": {"n": 11, "from": "a"}}))
    relay_outbox(bank.supervision.runtime, "shop.sender", "a")
    time.sleep(0.5)
    assert b.snapshot().state["got"] == want
    assert redis_client.llen(a.keys.outbox) == 0


class _WorkerDied(BaseException):
    """Stands in for SIGKILL right after a commit (not an Exception: nothing catches it)."""


def test_effects_survive_a_worker_dying_right_after_the_commit(
    shop: ModuleType, bank: ModuleType, workers: Any, beat: Any, monkeypatch: Any,
    redis_client: redis.Redis
) -> None:
    """The step committed, then its worker died before relaying or releasing: the tick relays
    the outbox (send once), and the stop still happens."""
    from celery_supervise import runner

    sup = bank.supervision
    original = runner._Run.commit

    def commit_then_die(self: Any, *args: Any, **kwargs: Any) -> bool:
        assert original(self, *args, **kwargs)
        raise _WorkerDied

    monkeypatch.setattr(runner._Run, "commit", commit_then_die)
    monkeypatch.setattr(runner, "relay_outbox", lambda *a: 0)
    shop.sender.ref("a2").send({"n": 1, "to": "b2"})
    shop.stopper.ref("s2").send({"stop": True})
    for type_name, key in (("shop.sender", "a2"), ("shop.stopper", "s2")):
        with pytest.raises(_WorkerDied):
            runner.run_actor(sup.runtime, registered(type_name), key, None)
    monkeypatch.undo()

    workers("w1", concurrency=2)
    b2 = shop.receiver.ref("b2")
    wait_until(lambda: _state(b2).get("got") == [["a2", 1, False]], 30,
               message="the committed send was never relayed")
    s2 = shop.stopper.ref("s2")
    wait_until(lambda: s2.snapshot().status == "stopped", 30, message="stop was lost")
    time.sleep(1.5)
    assert b2.snapshot().state["got"] == [["a2", 1, False]]
    assert s2.snapshot().status == "stopped" and s2.snapshot().state == {"n": 1}
    assert shop.sender.ref("a2").snapshot().state["sent"] == [1]


# -- 3. ask ------------------------------------------------------------------------------


def test_ask_replies_timeouts_dead_letters_and_not_inside_handlers(
    shop: ModuleType, workers: Any, beat: Any
) -> None:
    workers("w1", concurrency=2)
    ref = shop.echo.ref("e1")
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def asker(i: int) -> None:
        try:
            results[i] = ref.ask({"echo": i}, timeout=45)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=asker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert {i: r["echo"] for i, r in results.items()} == {i: i for i in range(8)}
    assert sorted(r["n"] for r in results.values()) == list(range(1, 9))

    started = time.monotonic()
    with pytest.raises(AskTimeout):
        ref.ask({"silent": True}, timeout=1.0)
    assert time.monotonic() - started < 5
    wait_until(lambda: ref.snapshot().state["n"] == 9, 30)  # still handled, once

    with pytest.raises(MessageDeadLettered) as dead:
        ref.ask({"poison": True}, timeout=45)
    assert [c["type"] for c in dead.value.crashes] == ["ValueError", "ValueError"]
    assert all(c["traceback"] for c in dead.value.crashes)

    inside = shop.echo.ref("e2")
    with pytest.raises(MessageDeadLettered) as refused:
        inside.ask({"ask_inside": True}, timeout=45)
    assert {c["type"] for c in refused.value.crashes} == {"AskNotAllowed"}
    assert inside.snapshot().last_crash["type"] == "AskNotAllowed"
    assert inside.snapshot().version == 0  # never committed a step
    assert ref.ask({"echo": "after"}, timeout=30)["n"] == 10


def test_ask_inside_a_handler_raises(shop: ModuleType) -> None:
    from celery_supervise.context import in_handler

    marker = in_handler.set(True)
    try:
        with pytest.raises(AskNotAllowed):
            shop.echo.ref("x").ask({"echo": 1}, timeout=1)
    finally:
        in_handler.reset(marker)


# -- 4. durable timers -------------------------------------------------------------------


def test_timers_fire_on_time_once_and_across_a_worker_restart(
    shop: ModuleType, workers: Any, beat: Any
) -> None:
    first = workers("w1", concurrency=2)
    ref = shop.timer.ref("t1")
    ref.send({"after": 1.0, "tag": "a"})
    ref.send({"after": 0.5, "tag": "c", "crash_first": True})  # crashed step's timer: none
    wait_until(lambda: {f[0] for f in _state(ref).get("fired", [])} == {"a", "c"}, 30,
               message="timers did not fire")
    fired = dict(ref.snapshot().state["fired"])
    for tag, late in fired.items():
        # due time plus about one tick (0.5 s); generous for a loaded machine
        assert -0.1 <= late < 2.0, f"timer {tag} fired {late:.2f} s from its due time"

    ref.send({"after": 3.0, "tag": "b"})
    wait_until(lambda: (s := ref.snapshot()).state["set"][-1:] == ["b"] and s.status == "idle",
               30, message="the timer step did not commit")
    first.kill()  # every worker gone: the timer lives in Redis only
    time.sleep(1.0)
    workers("w2", concurrency=1)
    wait_until(lambda: "b" in {f[0] for f in ref.snapshot().state["fired"]}, 60,
               message="timer lost across the worker restart")
    time.sleep(1.5)
    tags = Counter(f[0] for f in ref.snapshot().state["fired"])
    assert tags == Counter({"a": 1, "b": 1, "c": 1})
    assert ref.snapshot().state["set"] == ["a", "c", "b"]


# -- 5. stop -----------------------------------------------------------------------------


def test_stop_after_the_step_and_reported_to_the_supervisor(
    shop: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    workers("w1", concurrency=2)
    ref = shop.stopper.ref("s1")
    ref.send_many([{"x": 1}, {"stop": True}, {"x": 2}])
    wait_until(lambda: ref.snapshot().status == "stopped", 30, message="not stopped")
    snap = ref.snapshot()
    assert snap.state == {"n": 2} and snap.pending == 1  # the message after stop is kept
    wait_until(lambda: any(e.get("key") == "s1" for e in _events(redis_client, "stopped")), 30,
               message="no stopped event")
    meta = redis_client.hgetall(ref.keys.meta)
    wait_until(lambda: redis_client.hget(ref.keys.meta, "exit_reported")
               == meta[b"stopped_at"], 30, message="the tick never reported the exit")
    time.sleep(1.0)
    assert ref.snapshot().status == "stopped"  # transient + normal exit: not restarted

    crashing = shop.stopper.ref("s3")
    crashing.send({"stop": True, "crash": True})  # stop asked, then the step crashed
    wait_until(lambda: len(crashing.dead_letters()) == 1, 30, message="s3 not dead-lettered")
    wait_until(lambda: crashing.snapshot().status == "idle", 30, message="s3 not restarted")
    crashing.send({"x": 1})
    wait_until(lambda: crashing.snapshot().state == {"n": 1}, 30, message="s3 stuck")
    # 'active' until its worker releases, just after the commit
    wait_until(lambda: crashing.snapshot().status == "idle", 30, message="s3 never released")


# -- the docs example ----------------------------------------------------------------------


def test_docs_example_idempotent_charge(
    shop: ModuleType, bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    from docs.examples import payments

    workers("w1", concurrency=2)
    bank.app.set_current()
    # A previous run of the charge went through, but its worker died before reporting:
    payments.charge_card.apply(args=("o1", 500, "order-o1"))
    o1, o2 = payments.order.ref("o1"), payments.order.ref("o2")
    o1.send({"pay": 500})
    o2.send({"pay": 300})
    wait_until(lambda: _state(o1).get("status") == "paid" and _state(o2).get("status") == "paid",
               30, message="the example orders were not paid")
    assert o1.snapshot().state["charge"] == {"charge_id": "ch_order-o1", "amount": 500,
                                            "replayed": True}
    assert o2.snapshot().state["charge"]["replayed"] is False
    assert redis_client.get("example:psp:calls:order-o1") == b"2"  # ran twice, charged once
    assert redis_client.get("example:psp:charge:order-o1") == b"500"
