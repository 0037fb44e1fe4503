"""Interleavings found by review that broke a SPEC section 6 guarantee before they were
fixed. Each test forces one interleaving in-process (real Redis, ``LocalRunner``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import isolation as isolation_module
from celery_supervise import tree_shell
from celery_supervise.keyspace import actor_member
from celery_supervise.operations import resume_supervisor
from celery_supervise.store import ActorStore
from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def _hint(bank: ModuleType, type_name: str, key: str) -> tuple[str, str]:
    member = actor_member(type_name, key)
    return bank.supervision.keyspace.due_bucket(member), member


def _lost_publish(*_: Any) -> None:
    """A dispatcher standing for a broker that lost the published run."""


# -- 1. a tick working from a stale look drops the hint a concurrent send relies on ----------
def test_send_during_a_tick_visit_keeps_its_repair_hint(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    """tick.py visit(): _look() sees an idle actor with an empty mailbox; a client's send
    lands (its ZADD LT is a no-op: the due hint already has a lower score) and its run is
    lost by the broker; the visit then drops the hint (_next_due -> None, hint_move sees the
    score it read). Nothing will ever look at the actor again: its message is never handled."""
    sup = bank.supervision
    ref = sup.ref("bank.account", "hint")
    ref.send({"add": 1})
    local.run()
    bucket, member = _hint(bank, "bank.account", "hint")
    redis_client.zadd(bucket, {member: 1})  # the leftover hint has come due
    real_look = ActorStore.look
    sent: list[bool] = []

    def look_then_client_sends(s: Any, keys: Any) -> Any:
        look = real_look(s, keys)
        if not sent:
            sent.append(True)
            sup.dispatcher = _lost_publish
            try:
                ref.send({"add": 2})  # durable; its run is lost by the broker
            finally:
                sup.dispatcher = local._enqueue
        return look

    monkeypatch.setattr(ActorStore, "look", look_then_client_sends)
    local.tick()
    monkeypatch.undo()
    assert ref.snapshot().pending == 1
    local.settle(sup.repair_after + 2.0)
    snap = ref.snapshot()
    assert (snap.pending, snap.state["balance"]) == (0, 3), "message stranded: no hint left"


# -- 2. operator resume/restart writes no hint: a lost run is never repaired -----------------
def test_resume_whose_run_is_lost_is_repaired(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """store.restart() runs restart.lua (status active, sched=1) and publishes, with no due
    hint. If that run is lost (broker, or the operator process dies before publishing), no
    tick ever visits the actor: queued messages wait forever (a retried resume is 'skip')."""
    sup = bank.supervision
    ref = sup.ref("bank.account", "resume")
    ref.send({"add": 1})
    local.run()
    ref.stop()
    ref.send({"add": 2})  # queued while stopped
    bucket, member = _hint(bank, "bank.account", "resume")
    redis_client.zadd(bucket, {member: 1})  # time passes: the tick looks at the stopped actor
    local.tick()
    sup.dispatcher = _lost_publish
    try:
        assert ref.resume() == "woke"
    finally:
        sup.dispatcher = local._enqueue
    assert ref.resume() == "skip"  # an operator retrying does not help either
    local.settle(sup.repair_after + 2.0)
    snap = ref.snapshot()
    assert (snap.pending, snap.state["balance"]) == (0, 3), "resumed actor never ran"


# -- 3. isolated subtask: worker dies between 'started' and its first heartbeat --------------
def test_isolated_worker_dying_before_first_heartbeat_still_gets_one_outcome(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    """isolation.py: the wrapper claims 'started' (iso_mark), then writes its first heartbeat
    in a second call. Dying in between leaves 'started' set and no heartbeat: check() never
    declares WorkerLost (it needs a heartbeat) and every re-published copy skips ('another
    run started first'). With no timeout, the actor never gets its one outcome message."""
    sup = bank.supervision
    ref = sup.ref("tree.isolator", "iso")
    ref.send("job")

    def killed(self: Any) -> int:
        raise RuntimeError("worker SIGKILLed right after claiming the run")

    monkeypatch.setattr(isolation_module._Heartbeat, "beat", killed)
    local.run()
    monkeypatch.undo()
    assert redis_client.hexists(ref.keys.isolates, f"{ref.type_name}:iso@1.i0|started")
    local.settle(sup.repair_after + sup.settings.lease_seconds + 2.0)
    outcomes = ref.snapshot().state["outcomes"]
    assert len(outcomes) == 1 and outcomes[0]["ok"] is False, outcomes


# -- 4. dynamic child stopped by its supervisor, worker dies before recording it --------------
def test_dynamic_child_stopped_by_supervisor_comes_back_with_it(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any
) -> None:
    """runner.py run(): a run that finds its supervisor stopped halts the actor *then* adds
    it to the supervisor's members set (two calls). Dying in between leaves the actor
    stopped but unknown to the supervisor: resuming/restarting the supervisor never brings
    it back, and its queued messages are never handled."""
    sup = bank.supervision
    ref = sup.ref("tree.dynamic", "orphan")
    ref.send("hello")  # its run is queued
    tree_shell.stop_subtree(sup.runtime, "dynesc", reason="escalated:test")
    real_halt = ActorStore.halt

    def halt_then_die(*args: Any, **kwargs: Any) -> str:
        real_halt(*args, **kwargs)
        raise RuntimeError("worker died before SADD to the members set")

    monkeypatch.setattr(ActorStore, "halt", halt_then_die)
    local.run()
    monkeypatch.undo()
    assert ref.snapshot().status == "stopped"
    resume_supervisor(sup.runtime, "dynesc")
    local.settle(1.0)
    snap = ref.snapshot()
    assert (snap.status, snap.pending, snap.state) == ("idle", 0, {"n": 1})


# -- 5. recovery="reset" commits initial(key) without validate ------------------------------
def test_reset_never_commits_a_state_that_fails_validate(
    bank: ModuleType, local: LocalRunner
) -> None:
    """restart.lua (reset) writes initial(key) as a new committed version; neither the tick
    (_initial_if_reset) nor operator_restart checks it against validate (rollback does)."""
    sup = bank.supervision
    ref = sup.ref("tree.reset_invalid", "k")
    ref.send("go")
    local.run()  # initial fails validate: a crash not tied to the message
    local.settle(1.5)  # decided, backed off, restarted with recovery=reset
    bad = [h for h in ref.history() if not (h.state or {}).get("n", -1) >= 0]
    assert not bad, f"committed versions failing validate: {[(h.version, h.state) for h in bad]}"


# -- 6. requeue deduplicates in the caller-id namespace: the dead letter can vanish ----------
def test_requeue_cannot_be_swallowed_by_a_caller_message_id(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """store.requeue() sends with dedup id 'requeue:<seq>' in the same key space as
    caller-given message ids, then LREMs the letter. A caller id equal to that string (any
    string is a valid id) makes the requeue a 'duplicate' append of nothing; the letter is
    then deleted: the message is lost (SPEC 4.8, 6.3)."""
    sup = bank.supervision
    ref = sup.ref("bank.poison", "rq")
    ref.send("poison", message_id="p")  # seq 1
    local.run()
    local.settle(3.0)
    assert [d.seq for d in ref.dead_letters()] == [1]
    ref.send("hello", message_id="requeue:1")
    local.run()
    ref.requeue_dead_letter("p")
    queued = redis_client.lrange(ref.keys.mailbox, 0, -1)
    requeued = [e for e in queued if e.endswith(b'\n"poison"')]
    assert ref.dead_letters() or requeued, f"the dead letter vanished; mailbox: {queued}"
