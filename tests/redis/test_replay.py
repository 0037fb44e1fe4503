"""Replay before release (SPEC 7) against a real Redis, driven in this process: a replay
reports what the step would do and writes nothing; a release lets only proven work run,
fenced against any change since the replay. The same with real workers and the CLI is in
tests/workers/test_replay_workers.py."""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import (
    ActorNotRegistered,
    CorruptActorData,
    NotQuarantined,
    UnknownDeadLetter,
)
from celery_supervise.replay import quarantined_keys, replay_actor, replay_type
from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


@pytest.fixture
def fix(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``fix("refund,fee")`` deploys that fix in this process (``""``: the bug)."""

    def deploy(kinds: str) -> None:
        monkeypatch.setenv("TEST_FIX", kinds)

    deploy("")
    return deploy


def image(client: redis.Redis) -> dict[bytes, Any]:
    """Every key of the test prefix with its serialized value and TTL."""
    keys = sorted(client.scan_iter(match="t:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    values = pipe.execute()
    return {k: (values[2 * i], values[2 * i + 1] > 0) for i, k in enumerate(keys)}


def quarantine(local: LocalRunner, ref: Any, *messages: dict[str, Any]) -> None:
    """Send ``messages``; run and tick until the bug has quarantined the actor."""
    ref.send_many(messages)
    deadline = time.monotonic() + 20
    while ref.snapshot().status != "quarantined":
        assert time.monotonic() < deadline, ref.snapshot()
        local.run()
        local.tick()
        time.sleep(0.02)


REFUND = ({"kind": "deposit", "amount": 10}, {"kind": "refund", "amount": 3},
          {"kind": "deposit", "amount": 5})  # fmt: skip


def test_replay_reports_the_step_and_writes_nothing(
    bank: ModuleType, local: LocalRunner, fix: Any, redis_client: redis.Redis
) -> None:
    ref = bank.replaying.ledger.ref("l0")
    quarantine(local, ref, *REFUND)
    fix("refund")
    before = image(redis_client)
    result = ref.replay()
    assert image(redis_client) == before and not local.queue  # nothing written or published
    assert result.ok and result.source == "mailbox" and result.valid is True
    assert (result.version, result.state) == (1, {"balance": 10, "kinds": ["deposit"]})
    assert result.new_state == {"balance": 7, "kinds": ["deposit", "refund"]}
    assert result.message == {"kind": "refund", "amount": 3} and result.error is None
    assert "-  \"balance\": 10," in result.diff and "+  \"balance\": 7," in result.diff
    effects = result.effects
    assert effects.sends == ({"to": "replay.ledger:audit",
                              "message": {"kind": "deposit", "amount": 0}},)  # fmt: skip
    assert effects.timers == ({"after": 60.0, "message": {"kind": "deposit", "amount": 0}},)
    assert [(i["task"], i["tag"], i["args"]) for i in effects.isolates] == [
        ("replay.refund_gateway", "gateway", [3])
    ]
    assert effects.replies == (7,) and effects.stop is False
    # Not performed: no audit actor, no timer, no isolate record, no outbox entry.
    assert not redis_client.exists(bank.supervision.ref("replay.ledger", "audit").keys.meta)
    assert not redis_client.exists(ref.keys.timers, ref.keys.isolates, ref.keys.outbox)
    # Released: the actor resumes and drains from the state the replay started from.
    assert ref.release(result) == "resumed"
    local.run()
    snap = ref.snapshot()
    assert (snap.status, snap.pending) == ("idle", 0)
    assert snap.state == {"balance": 12, "kinds": ["deposit", "refund", "deposit"]}


def test_a_failing_replay_reports_the_exception_and_releases_nothing(
    bank: ModuleType, local: LocalRunner, fix: Any, redis_client: redis.Redis
) -> None:
    ref = bank.replaying.ledger.ref("l1")
    quarantine(local, ref, {"kind": "fee", "amount": 1})
    fix("refund")  # a fix that handles refunds, not fees
    before = image(redis_client)
    result = ref.replay()
    assert not result.ok and result.reason == "exception" and result.valid is None
    assert result.error is not None and result.error["type"] == "KeyError"
    assert "no rule for entry kind 'fee'" in result.error["traceback"]
    assert ref.release(result) == "failed"
    assert image(redis_client) == before and ref.snapshot().status == "quarantined"


def test_validate_verdict_is_reported(bank: ModuleType, local: LocalRunner, fix: Any) -> None:
    ref = bank.replaying.ledger.ref("l2")
    quarantine(local, ref, {"kind": "refund", "amount": 30})
    fix("refund")  # the fix runs, but the refund would overdraw: validate says no
    result = ref.replay()
    assert (result.ok, result.valid, result.reason) == (False, False, "invalid_state")
    assert result.error is not None and "fails validate" in result.error["message"]


def test_a_replay_that_runs_too_long_is_stopped_and_reported(
    bank: ModuleType, local: LocalRunner, fix: Any, redis_client: redis.Redis
) -> None:
    ref = bank.replaying.ledger.ref("l3")
    quarantine(local, ref, {"kind": "spin", "amount": 0})
    fix("spin")  # a "fix" that loops forever
    before = image(redis_client)
    result = ref.replay(timeout=0.3)  # the main thread: interrupted by the step's alarm
    assert (result.ok, result.reason) == (False, "time_limit")
    in_thread: list[Any] = []
    worker = threading.Thread(target=lambda: in_thread.append(ref.replay(timeout=0.3)))
    worker.start()
    worker.join(10)
    assert in_thread and (in_thread[0].ok, in_thread[0].reason) == (False, "time_limit")
    assert image(redis_client) == before


def test_release_is_fenced_against_a_change_since_the_replay(
    bank: ModuleType, local: LocalRunner, fix: Any
) -> None:
    ref = bank.replaying.ledger.ref("l4")
    quarantine(local, ref, *REFUND)
    fix("refund")
    result = ref.replay()
    assert result.ok
    fix("")  # meanwhile someone resumes it on the buggy code: it crashes and is quarantined
    ref.resume()
    quarantine(local, ref)
    crash_seq = local.supervision.client.hget(ref.keys.meta, "crash_seq")
    ref.send({"kind": "deposit", "amount": 1})  # a message sent meanwhile does not count
    assert ref.release(result) == "changed"
    snap = ref.snapshot()
    assert snap.status == "quarantined"
    assert local.supervision.client.hget(ref.keys.meta, "crash_seq") == crash_seq
    # Replayed again, on the actor as it is now, it releases.
    fix("refund")
    again = ref.replay()
    ref.send({"kind": "deposit", "amount": 1})
    assert again.ok and ref.release(again) == "resumed"
    local.run()
    assert ref.snapshot().state["balance"] == 14


def test_a_dead_letter_is_replayed_and_requeued_once(
    bank: ModuleType, local: LocalRunner, fix: Any, redis_client: redis.Redis
) -> None:
    ref = bank.replaying.journal.ref("j0")
    ids = ref.send_many([{"kind": "deposit", "amount": 4}, {"kind": "fee", "amount": 1},
                         {"kind": "deposit", "amount": 2}])  # fmt: skip
    local.settle(3.0)
    assert [d.message_id for d in ref.dead_letters()] == [ids[1]]
    assert ref.snapshot().state["balance"] == 6
    fix("fee")
    before = image(redis_client)
    result = ref.replay(message_id=ids[1])
    assert image(redis_client) == before
    assert result.ok and result.source == "dead_letter" and result.new_state["balance"] == 5
    assert ref.release(result) == "requeued"
    assert ref.release(result) == "gone"  # once: the letter is no longer dead
    local.run()
    assert ref.dead_letters() == [] and ref.snapshot().state["balance"] == 5


def test_every_quarantined_actor_of_a_type_is_listed_without_a_scan(
    bank: ModuleType, local: LocalRunner, fix: Any, redis_client: redis.Redis
) -> None:
    refs = [bank.replaying.ledger.ref(f"q{i}") for i in range(3)]
    for ref in refs:
        quarantine(local, ref, {"kind": "fee", "amount": 0})
    rt = bank.supervision.runtime
    assert quarantined_keys(rt, "replay.ledger") == ["q0", "q1", "q2"]
    fix("fee")
    refs[1].resume()
    local.run()
    results = replay_type(rt, "replay.ledger")
    assert [(key, r.ok) for key, r in results] == [("q0", True), ("q2", True)]
    index = rt.keyspace.quarantined_index("replay.ledger")
    assert redis_client.zcard(index) == 3  # replaying writes nothing, not even a prune
    assert quarantined_keys(rt, "replay.ledger", prune=True) == ["q0", "q2"]
    assert redis_client.zcard(index) == 2


def test_bad_input_is_named(bank: ModuleType, local: LocalRunner, fix: Any,
                            redis_client: redis.Redis) -> None:  # fmt: skip
    rt = bank.supervision.runtime
    with pytest.raises(ActorNotRegistered, match=r"no actor type named 'replay.nope'"):
        replay_actor(rt, rt.keyspace.actor("replay.nope", "k"))
    with pytest.raises(NotQuarantined, match=r"replay.ledger:ghost does not exist"):
        bank.replaying.ledger.ref("ghost").replay()
    idle = bank.replaying.ledger.ref("idle")
    idle.send({"kind": "deposit", "amount": 1})
    local.run()
    with pytest.raises(NotQuarantined, match=r"replay.ledger:idle is idle, not quarantined"):
        idle.replay()
    with pytest.raises(UnknownDeadLetter, match=r"replay.ledger:idle has no dead letter 'm-x'"):
        idle.replay(message_id="m-x")
    ref = bank.replaying.ledger.ref("bad")
    quarantine(local, ref, {"kind": "fee", "amount": 0})
    redis_client.hset(ref.keys.meta, "state", b'{"balance": 1')
    with pytest.raises(CorruptActorData, match=r"replay.ledger:bad: stored state does not decode"):
        ref.replay()
    assert [(k, type(r).__name__) for k, r in replay_type(rt, "replay.ledger")] == [
        ("bad", "CorruptActorData")
    ]
