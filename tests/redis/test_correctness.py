"""Regression tests for defects found by review (each failed at commit 79524fd).

Each test names the defect it pins; the runtime runs against a real Redis in this process
(``LocalRunner``), with processes dying or pausing simulated at the exact point between two
scripts where the defect lived."""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import pytest

from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


# -- 1. sending from a thread of a plain Celery app --------------------------------------------
SEND_FROM_THREADS = """
import sys, threading
from tests.apps import bank  # a plain Celery app: one Supervision, no app.set_default()
errors = []
def sender(thread):
    try:
        for n in range(25):
            for a in range(20):
                bank.account.ref(f"t{a}").send({"add": 1, "sender": f"s{thread}", "n": n})
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=sender, args=(t,)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(errors[:1])
sys.exit(1 if errors else 0)
"""


def test_refs_work_from_threads_of_a_plain_app(
    bank: ModuleType, local: LocalRunner, bank_env: dict[str, str]
) -> None:
    """Celery's current app is thread-local: in a thread that never set one, ``ref()`` found
    Celery's fallback default app and raised NotInstalled. A process of its own (one app, as
    a user's script has), 4 threads x 20 actors x 25 messages; exact and ordered."""
    import os
    import subprocess
    import sys

    from tests.harness import PROJECT_ROOT

    env = {**os.environ, **bank_env, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", SEND_FROM_THREADS], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for a in range(20):  # their runs went to the broker; this test runs them here
        bank.supervision.publish("bank.account", f"t{a}")
    local.run()
    for a in range(20):
        snap = bank.account.ref(f"t{a}").snapshot()
        assert (snap.state["balance"], snap.version, snap.pending) == (100, 100, 0)
        for t in range(4):
            seen = [n for s, n in snap.state["seen"] if s == f"s{t}"]
            assert seen == list(range(25)), f"t{a}: sender s{t} out of order: {seen}"


# -- 2. replies keyed by actor and message id ---------------------------------------------------
def _wait(predicate: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_asks_reusing_one_business_id_with_two_actors_get_their_own_answers(
    bank: ModuleType, local: LocalRunner
) -> None:
    """Reply lists were keyed by the message id alone: the asker of x, blocked first on
    ``reply:{order-42}``, was handed y's answer."""
    sup = bank.supervision
    answers: dict[str, Any] = {}

    def ask(key: str) -> None:
        ref = sup.ref("shop.echo", key)
        answers[key] = ref.ask({"echo": key}, message_id="order-42", timeout=10)

    asking_x = threading.Thread(target=ask, args=("x",))
    asking_x.start()
    _wait(lambda: sup.ref("shop.echo", "x").snapshot().pending == 1 and len(local.queue) == 1)
    time.sleep(0.2)  # x's asker is blocked on its reply now
    asking_y = threading.Thread(target=ask, args=("y",))
    asking_y.start()
    # x's run is live (queued): y waits in the type's ready set for it to serve.
    _wait(lambda: sup.ref("shop.echo", "y").snapshot().pending == 1)
    time.sleep(0.2)
    held = local.queue.popleft()  # x's run waits; y's own run goes first
    sup.publish("shop.echo", "y")
    local.run()  # y's answer lands while x's asker waits
    local.queue.append(held)
    local.run()
    asking_x.join(15)
    asking_y.join(15)
    assert answers["x"]["key"] == "x" and answers["y"]["key"] == "y", answers


# -- 3. a lost worker blamed on a message that never ran ---------------------------------------
class _Killed(BaseException):
    """The worker process died here (nothing after this line ran)."""


def test_worker_dying_between_commit_and_release_blames_no_message(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any
) -> None:
    """The run commits message 1, ends its batch, and dies before releasing, with message 2
    queued: the tick recorded ``worker_lost`` against message 2, which never ran."""
    from celery_supervise import runner

    ref = bank.supervision.ref("bank.poison", "blame")
    ref.send_many(["one", "two"])
    monkeypatch.setattr(runner, "BATCH_SIZE", 1)

    def dies(self: Any) -> str:
        raise _Killed

    monkeypatch.setattr(runner._Run, "release", dies)
    with pytest.raises(_Killed):
        local.run()
    monkeypatch.undo()
    time.sleep(bank.supervision.settings.lease_seconds + 0.2)
    local.settle(3.0)
    snap = ref.snapshot()
    assert snap.last_crash is None, snap.last_crash
    assert (snap.state["applied"], snap.version, snap.pending) == (["one", "two"], 2, 0)


# -- 7. a tick that lacks an actor type ----------------------------------------------------------
def test_a_tick_without_the_actor_type_keeps_the_actor_for_later(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any, redis_client: Any, caplog: Any
) -> None:
    """A tick on a worker that does not import every module (a rolling deploy) dropped the
    actor's hint for good: its pending message was never handled."""
    from celery_supervise import registry
    from celery_supervise.keyspace import actor_member

    sup = bank.supervision
    ref = sup.ref("bank.account", "rolling")
    ref.send({"add": 1})
    local.queue.clear()  # its run is lost: only the tick can bring it back
    member = actor_member("bank.account", "rolling")
    bucket = sup.keyspace.due_bucket(member)
    redis_client.zadd(bucket, {member: 1})  # due now
    monkeypatch.delitem(registry._REGISTRY, "bank.account")
    with caplog.at_level("WARNING", logger="celery_supervise"):
        local.tick()
        redis_client.zadd(bucket, {member: 1})
        local.tick()
    assert redis_client.zscore(bucket, member) is not None, "the hint was dropped"
    assert sum("bank.account" in r.getMessage() for r in caplog.records) == 1, "log it once"
    monkeypatch.undo()
    redis_client.zadd(bucket, {member: 1})
    local.settle(sup.repair_after + 1.0)
    assert ref.snapshot().state["balance"] == 1


# -- 8. hints dropped after a change the seq does not show -------------------------------------
def test_resume_during_a_tick_visit_keeps_the_hint(
    bank: ModuleType, local: LocalRunner, redis_client: Any, monkeypatch: Any
) -> None:
    """The tick looked at a stopped actor (nothing due), an operator resumed it (its hint's
    ZADD LT is a no-op over the older due hint) and its run was lost; the tick then dropped
    the hint because ``seq`` had not changed: the actor stayed active with a message pending
    and nothing would ever look at it again."""
    from celery_supervise.keyspace import actor_member
    from celery_supervise.store import ActorStore

    sup = bank.supervision
    ref = sup.ref("bank.account", "resumed")
    ref.send({"add": 1})
    local.run()
    ref.stop()
    ref.send({"add": 2})  # queued while stopped
    member = actor_member("bank.account", "resumed")
    bucket = sup.keyspace.due_bucket(member)
    redis_client.zadd(bucket, {member: 1})
    real_look = ActorStore.look
    resumed: list[bool] = []

    def look_then_operator_resumes(store: Any, keys: Any) -> Any:
        look = real_look(store, keys)
        if not resumed:
            resumed.append(True)
            sup.dispatcher = lambda *a: None  # the broker loses the run
            try:
                assert ref.resume() == "woke"
            finally:
                sup.dispatcher = local._enqueue
        return look

    monkeypatch.setattr(ActorStore, "look", look_then_operator_resumes)
    local.tick()
    monkeypatch.undo()
    local.settle(sup.repair_after + 2.0)
    snap = ref.snapshot()
    assert (snap.pending, snap.state["balance"]) == (0, 3), "message stranded: no hint left"


# -- 9. a dynamic child left stopped under a running supervisor ---------------------------------
def test_dynamic_child_halting_itself_as_its_supervisor_restarts_comes_back(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any
) -> None:
    """The child's claim read its supervisor as stopped; the supervisor's restart listed and
    cleared its stopped children; then the child added itself to that set and halted: it
    stayed stopped under a running supervisor."""
    from celery_supervise import runner, tree_shell
    from celery_supervise.operations import resume_supervisor

    sup = bank.supervision
    ref = sup.ref("tree.dynamic", "late")
    ref.send("hello")  # its run is queued
    tree_shell.stop_subtree(sup.runtime, "dynesc", reason="escalated:test")
    real_stop = runner._Run.stop_for_supervisor

    def supervisor_restarts_first(self: Any, supervisor: str) -> str:
        resume_supervisor(sup.runtime, "dynesc")  # lands between the claim and the SADD
        return real_stop(self, supervisor)

    monkeypatch.setattr(runner._Run, "stop_for_supervisor", supervisor_restarts_first)
    local.run()
    monkeypatch.undo()
    local.settle(1.5)
    snap = ref.snapshot()
    assert (snap.status, snap.pending, snap.state) == ("idle", 0, {"n": 1}), snap


# -- 13. an undecided sibling crash, and what a supervisor restart brings back ------------------
def test_supervisor_restart_decides_an_undecided_sibling_crash_as_otp(
    bank: ModuleType, local: LocalRunner, redis_client: Any
) -> None:
    """Escalation stopped a static child that had crashed but was not decided yet, and the
    supervisor's restart brought it back as if nothing happened: a temporary child came
    back (OTP never restarts one after it exited), and the crash did not advance its
    backoff level. And an actor an operator stopped must stay stopped."""
    from celery_supervise import tree_shell

    sup, rt = bank.supervision, bank.supervision.runtime
    g0, g1, g2 = (sup.ref(t, k) for t, k in
                  (("tree.member", "g0"), ("tree.temporary", "g1"), ("tree.transient", "g2")))
    for ref in (g0, g1, g2):
        ref.send("hello")
    local.run()
    g0.send({"crash_once": "g0-undecided"})
    g1.send({"crash_once": "g1-undecided"})
    local.run()  # both crashed; no tick has decided either yet
    assert g0.snapshot().last_crash and g1.snapshot().last_crash
    g2.stop()  # an operator stops the transient one
    tree_shell.stop_subtree(rt, "grouped", reason="escalated:test", cause="x:stop")
    tree_shell.restart_subtree(rt, "grouped", 0.0, reason="restart:test", cause="x")
    local.settle(1.5)
    assert g1.snapshot().status == "stopped", "a crashed temporary child came back"
    assert g2.snapshot().status == "stopped", "an operator-stopped child came back"
    assert g0.snapshot().status == "idle"
    assert redis_client.hget(g0.keys.meta, "backoff_level") == b"1", "the crash was not counted"


# -- 15. smaller ones ------------------------------------------------------------------------------
def test_a_collateral_restart_never_shortens_a_pending_backoff(
    bank: ModuleType, local: LocalRunner, redis_client: Any
) -> None:
    from celery_supervise.store import ActorStore

    sup = bank.supervision
    ref = sup.ref("tree.member", "waiting")
    ref.send("hello")
    local.run()
    store = ActorStore(sup.runtime)
    assert store.halt(ref.keys, "backoff", reason="own backoff", delay=30.0) == "ok"
    own = int(redis_client.hget(ref.keys.meta, "restart_at"))
    assert store.halt(ref.keys, "backoff", reason="restart:sibling", delay=0.05,
                      only_from=("idle", "active", "backoff"), cause="sibling#1") == "ok"
    assert int(redis_client.hget(ref.keys.meta, "restart_at")) == own


def test_a_release_retried_after_its_reply_was_lost_gives_the_same_answer(
    bank: ModuleType, local: LocalRunner
) -> None:
    """The retry of a release whose reply was lost answered 'stale': the worker then did not
    publish the next run, and the actor waited for the tick's repair."""
    from celery_supervise.store import ActorStore

    sup = bank.supervision
    ref = sup.ref("bank.account", "release")
    ref.send_many([{"add": 1}, {"add": 2}])
    local.queue.clear()
    store = ActorStore(sup.runtime)
    claim = store.claim(ref.keys, worker="w:1", lease_ms=5000, batch=1, nonce="n",
                        supervisors=(), hint_in=6.0)  # fmt: skip
    assert claim.outcome == "ok"
    assert store.release(ref.keys, claim.token) == "more"
    assert store.release(ref.keys, claim.token) == "more"  # the same call again


def test_an_escalation_plan_applied_twice_stops_and_restarts_the_group_once(
    bank: ModuleType, local: LocalRunner, redis_client: Any
) -> None:
    """Its causes alternate ('X:stop', then 'X'): a second application halted every child
    again and flipped the supervisor back to stopped before restarting it once more."""
    from celery_supervise import tree_shell

    sup, rt = bank.supervision, bank.supervision.runtime
    members = [sup.ref("tree.member", f"m{i}") for i in range(3)]
    for ref in members:
        ref.send("hello")
    local.run()
    for _ in range(2):  # a second tick re-applying the stored plan
        tree_shell.stop_subtree(rt, "escalating", reason="escalated:x", cause="x#1:stop")
        tree_shell.restart_subtree(rt, "escalating", 5.0, reason="restart:x", cause="x#1")
    statuses = {redis_client.hget(r.keys.meta, "halt_reason") for r in members}
    assert statuses == {b"restart:x"}
    restart_at = [int(redis_client.hget(r.keys.meta, "restart_at")) for r in members]
    tree_shell.stop_subtree(rt, "escalating", reason="escalated:x", cause="x#1:stop")
    assert redis_client.hget(sup.keyspace.supervisor("escalating"), "status") == b"running"
    assert [int(redis_client.hget(r.keys.meta, "restart_at")) for r in members] == restart_at
    assert {r.snapshot().status for r in members} == {"backoff"}


def test_a_committed_stop_survives_a_collateral_restart_before_the_release(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any
) -> None:
    """The step called ctx.stop() and committed; a group restart halted the actor (backoff)
    before its worker released: the release was stale, the restart cleared the stop, and a
    transient actor that had stopped normally was started again."""
    from celery_supervise import runner
    from celery_supervise.store import ActorStore

    sup = bank.supervision
    ref = sup.ref("shop.stopper", "collateral")
    real_release = runner._Run.release

    def group_restart_lands_first(self: Any) -> str:
        ActorStore(sup.runtime).halt(self.keys, "backoff", reason="restart:sibling", delay=0.05,
                                     only_from=("idle", "active", "backoff"), cause="s#1")
        return real_release(self)

    monkeypatch.setattr(runner._Run, "release", group_restart_lands_first)
    ref.send({"stop": True})
    local.run()
    monkeypatch.undo()
    local.settle(1.5)
    snap = ref.snapshot()
    assert (snap.status, snap.state["n"]) == ("stopped", 1), snap


def test_time_limit_counts_from_each_step_not_from_the_run(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any
) -> None:
    """The lease renewer stopped at ``time_limit`` after the *run* started: in a thread pool
    (no SIGALRM) a second step well within its own limit lost its lease and was crashed as
    ``worker_lost`` (and, with max_attempts=1, dead-lettered though innocent)."""
    sup = bank.supervision
    assert sup.settings.lease_seconds < 3.5  # each step outlives the lease, not its limit
    from celery_supervise import runner

    monkeypatch.setattr(runner, "BATCH_SECONDS", 10.0)  # one run takes both steps
    ref = sup.ref("tree.patient", "p")
    ref.send_many([{"sleep": 3.0}, {"sleep": 3.0}])
    runner_thread = threading.Thread(target=local.run)  # not the main thread: no SIGALRM
    runner_thread.start()
    runner_thread.join(30)
    local.settle(1.0)
    snap = ref.snapshot()
    assert (snap.state["n"], snap.dead_letters, snap.last_crash) == (2, 0, None), snap


def test_rollback_and_restart_report_the_version_they_made_though_a_step_follows_at_once(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any
) -> None:
    """``rollback`` returned (and ``supervise restart`` printed) the version read back
    *after* the operator action: a worker that took the run it published and committed the
    queued message first made them report that step's version, not their own."""
    from celery_supervise.operations import restart_actor

    sup = bank.supervision
    ref = sup.ref("tree.capped", "v")
    ref.send_many([{"add": 1}, {"add": 2}])
    local.run()
    assert ref.snapshot().version == 2
    real_publish = sup.runtime.publish

    def a_worker_steps_at_once(type_name: str, key: str, **how: Any) -> None:
        real_publish(type_name, key, **how)
        local.run()

    ref.send({"add": 4})  # queued: its run waits in the local queue
    monkeypatch.setattr(sup.runtime, "publish", a_worker_steps_at_once)
    assert ref.rollback(1) == 3  # the rollback made v3; the queued +4 then made v4
    assert ref.snapshot().version == 4 and ref.snapshot().state == {"balance": 5}
    outcome = restart_actor(sup.runtime, ref.keys, recovery="reset")
    assert (outcome.outcome, outcome.version) == ("idle", 5)
