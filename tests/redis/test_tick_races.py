"""SPEC 4: overlapping ticks must not double-act, and a tick killed half-way leaves nothing
inconsistent. Driven in-process (real Redis) so the interleavings are forced, not hoped for."""

from __future__ import annotations

import json
import threading
import time
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import tick as tick_module
from celery_supervise import tree_shell
from celery_supervise.decisions import describe
from celery_supervise.keyspace import actor_member
from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def _group(bank: ModuleType, local: LocalRunner) -> list[Any]:
    members = [bank.supervision.ref("tree.member", f"m{i}") for i in range(3)]
    for ref in members:
        ref.send("hello")
    local.run()
    members[0].send({"crash_once": "race"})
    local.run()
    assert members[0].snapshot().status == "backoff"  # crashed, awaiting its supervisor
    return members


def _events(redis_client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(f[b"event"]) for _, f in redis_client.xrange("t:events")]


def _due(bank: ModuleType, member: str) -> tuple[str, float]:
    sup = bank.supervision
    bucket = sup.keyspace.due_bucket(member)
    score = sup.client.zscore(bucket, member)
    assert score is not None
    return bucket, float(score)


def test_concurrent_ticks_decide_and_restart_once(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    members = _group(bank, local)
    member = actor_member("tree.member", "m0")
    bucket, score = _due(bank, member)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def tick_now() -> None:
        barrier.wait()
        try:
            # no lock: a 2nd beat
            tick_module.visit(bank.supervision.runtime, bucket, member, score)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=tick_now) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    history = redis_client.zrange("t:sup:{escalating}:restarts", 0, -1)
    assert len(history) == 1  # one crash, counted once
    halts = [m.keys.meta for m in members[1:]]
    for meta in halts:
        assert redis_client.hget(meta, "halt_cause") == b"tree.member:m0#1"
    decisions = [e for e in _events(redis_client) if e["event"] == "decision"]
    # every concurrent tick may log the stored plan, but only one plan was made
    assert {e["exit_id"] for e in decisions} == {"tree.member:m0#1"}
    local.settle(0.5)
    restarted = [e for e in _events(redis_client) if e["event"] == "restarted"]
    assert sorted(e["key"] for e in restarted) == ["m0", "m1", "m2"]
    assert [m.snapshot().state for m in members] == [{"n": 2}, {"n": 1}, {"n": 1}]


def test_tick_killed_half_way_is_completed_by_the_next(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    members = _group(bank, local)
    real_apply = tree_shell._PlanShell.apply
    applied: list[str] = []

    def dies_after_two(shell: Any, action: Any) -> Any:
        if len(applied) == 2:
            raise SystemExit("tick process killed")
        applied.append(action.name)
        return real_apply(shell, action)

    monkeypatch.setattr(tree_shell._PlanShell, "apply", dies_after_two)
    with pytest.raises(SystemExit):
        local.tick()
    redis_client.delete("t:tick:lock")  # the killed tick never released it
    assert applied == ["record_restart", "restart"]
    assert members[0].snapshot().status == "backoff"
    monkeypatch.setattr(tree_shell._PlanShell, "apply", real_apply)
    local.tick()
    # the stored plan was re-applied, not re-decided: one history entry, one restart each
    assert redis_client.zcard("t:sup:{escalating}:restarts") == 1
    (plan_key,) = redis_client.keys("t:plan:*")  # kept, but only until it expires
    assert 0 < redis_client.ttl(plan_key) <= 3600
    local.settle(0.5)
    restarted = [e["key"] for e in _events(redis_client) if e["event"] == "restarted"]
    assert sorted(restarted) == ["m0", "m1", "m2"]


def test_lock_makes_an_overlapping_tick_skip(bank: ModuleType, local: LocalRunner) -> None:
    bank.supervision.client.set("t:tick:lock", "someone", px=2000)
    assert local.tick() == {"skipped": "another tick is running"}


def test_escalated_supervisor_restart_brings_back_its_crashed_dynamic_child(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """dynesc escalates on its first restart; root restarts it, which restarts its children:
    also the dynamic child whose crash started it all (not only static children)."""
    ref = bank.supervision.ref("tree.dynamic", "d")
    ref.send({"crash_once": "dyn"})
    ref.send("after")
    local.run()
    local.settle(1.0)
    decisions = [e for e in _events(redis_client) if e["event"] == "decision"]
    assert any(e["action"] == "stop_supervisor" and e["supervisor"] == "dynesc" for e in decisions)
    assert any(e["action"] == "restart" and e["child"] == "dynesc" for e in decisions)
    assert redis_client.hget("t:sup:{dynesc}", "status") == b"running"
    snap = ref.snapshot()
    assert (snap.status, snap.state, snap.pending) == ("idle", {"n": 2}, 0)


def test_a_visit_that_raises_neither_stops_the_tick_nor_loses_the_actor(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    broken = bank.supervision.ref("tree.worker", "broken")
    healthy = bank.supervision.ref("tree.worker", "healthy")
    for ref in (broken, healthy):
        ref.send("crash")
    local.run()
    real_visit = tick_module.visit

    def buggy(sup: Any, bucket: str, member: str, score: float, now: Any = None) -> str:
        if member.endswith(":broken"):
            raise AttributeError("a bug in the tick")
        return real_visit(sup, bucket, member, score, now)

    monkeypatch.setattr(tick_module, "visit", buggy)
    summary = local.tick()
    assert summary.get("failed") == 1
    assert redis_client.hget(healthy.keys.meta, "status") == b"backoff"  # decided
    member = actor_member("tree.worker", "broken")
    assert bank.supervision.client.zscore(bank.supervision.keyspace.due_bucket(member), member)
    monkeypatch.undo()
    redis_client.delete("t:tick:lock")
    for ref in (broken, healthy):
        redis_client.zadd(
            bank.supervision.keyspace.due_bucket(actor_member(ref.type_name, ref.key)),
            {actor_member(ref.type_name, ref.key): 0},
        )
    local.tick()
    assert broken.snapshot().last_crash is not None
    assert redis_client.hget(broken.keys.meta, "status") in (b"backoff", b"idle", b"active")


def _reported(redis_client: redis.Redis, action: dict[str, Any]) -> bool:
    """Is this plan action's decision in the events stream (as ``log_event`` writes it)?"""
    want = {("notice" if k == "event" else k): v for k, v in action.items()}
    return any(
        e["event"] == "decision" and all(e.get(k) == v for k, v in want.items())
        for e in _events(redis_client)
    )


def _crash_loop_until_holder_gives_up(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any,
    kill_after: tuple[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Crash-loop m0 (escalating: one_for_all, escalate at its 4th restart, under holder of
    intensity 1) until holder quarantines escalating, as the worker test does, but with the
    ticks in this process. After every action a tick applies, read the events the way an
    observer would: the action is already in effect, so its decision must already be
    reported. ``kill_after=(action, n)`` kills the tick right after applying the n-th such
    action (the next tick must complete the plan). Returns the actions not yet reported at
    the moment they were in effect."""
    members = [bank.supervision.ref("tree.member", f"m{i}") for i in range(3)]
    for ref in members:
        ref.send("hello")
    local.run()
    real_apply = tree_shell._PlanShell.apply
    unreported: list[dict[str, Any]] = []
    seen: dict[str, int] = {}

    def observed(shell: Any, action: Any) -> Any:
        finish = real_apply(shell, action)
        if finish is None and not _reported(redis_client, describe(action)):
            unreported.append(describe(action))
        seen[action.name] = seen.get(action.name, 0) + 1
        if kill_after == (action.name, seen[action.name]):
            raise SystemExit("tick process killed")
        return finish

    monkeypatch.setattr(tree_shell._PlanShell, "apply", observed)
    members[0].send("crash")
    local.run()
    deadline = time.monotonic() + 20
    while redis_client.hget("t:sup:{escalating}", "status") != b"quarantined":
        assert time.monotonic() < deadline, (
            f"holder never decided about escalating "
            f"(status {redis_client.hget('t:sup:{escalating}', 'status')!r}, applied {seen})"
        )
        try:
            local.tick()
        except SystemExit:
            redis_client.delete("t:tick:lock")  # a killed tick never releases it
        time.sleep(0.02)
    local.tick()  # a tick killed at the very end of the plan is completed by the next one
    assert redis_client.hget("t:sup:{escalating}", "status") == b"quarantined"
    assert all(m.snapshot().status == "stopped" for m in members)
    return unreported


def test_an_applied_decision_is_reported_before_anyone_can_see_its_effect(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    """The flake of test_escalation_restarts_the_group_then_gives_up_as_otp_would: the test
    saw escalating quarantined and read the events before the tick that quarantined it had
    logged the decision (it was logged after being applied)."""
    unreported = _crash_loop_until_holder_gives_up(bank, local, redis_client, monkeypatch)
    assert unreported == []
    decisions = [e for e in _events(redis_client) if e["event"] == "decision"]
    quarantines = [e for e in decisions if e["action"] == "quarantine"]
    assert [(e["supervisor"], e["child"]) for e in quarantines] == [("holder", "escalating")]
    # nothing died: each decision reported exactly once
    keys = [json.dumps(e, sort_keys=True) for e in decisions]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    "kill_after",
    [("stop_supervisor", 1), ("stop_supervisor", 2), ("quarantine", 1)],
    ids=["after-escalating-stops-then-holder-restarts", "after-escalating-stops-again",
         "after-holder-quarantines"],
)
def test_a_tick_killed_mid_escalation_is_completed_and_every_decision_reported(
    bank: ModuleType,
    local: LocalRunner,
    redis_client: redis.Redis,
    monkeypatch: Any,
    kill_after: tuple[str, int],
) -> None:
    """A tick killed right after applying an escalation's stop (or holder's quarantine) left
    the crashed actor already stopped by the escalation, so no tick looked at its exit again:
    the rest of the plan was never applied, and what was applied was never reported."""
    unreported = _crash_loop_until_holder_gives_up(
        bank, local, redis_client, monkeypatch, kill_after
    )
    assert unreported == []
    decisions = [e for e in _events(redis_client) if e["event"] == "decision"]
    assert any(
        e["action"] == "quarantine" and e["supervisor"] == "holder" and e["child"] == "escalating"
        for e in decisions
    )
    assert any(
        e["action"] == "restart" and e["supervisor"] == "holder" and e["child"] == "escalating"
        for e in decisions
    )
