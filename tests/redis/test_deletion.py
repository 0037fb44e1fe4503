"""Deleting actors: ``ref.delete()``, ``@actor(idle_ttl=...)`` and ``supervise delete``
(issue 14). Real Redis, in-process ``LocalRunner``; interleavings forced in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import ActorBusy, Context, SuperviseError, actor
from celery_supervise.keyspace import actor_member
from celery_supervise.store import ActorStore
from celery_supervise.testing import LocalRunner

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@actor(name="gone.timer", initial={"n": 0})
def with_timer(ctx: Context, state: dict[str, Any], message: Any) -> dict[str, Any]:
    if message == "remind me":
        ctx.send_after(3600, "reminder")
    state["n"] += 1
    return state


@actor(name="gone.ttl", initial={"n": 0}, idle_ttl=60)
def short_lived(ctx: Context, state: dict[str, Any], message: Any) -> dict[str, Any]:
    state["n"] += 1
    return state


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def _actor_keys(client: redis.Redis, bank: ModuleType, type_name: str, key: str) -> list[str]:
    """Every key of one actor, found by pattern (a test's own prefix: KEYS is fine here)."""
    base = bank.supervision.keyspace.actor(type_name, key).meta.rsplit(":", 1)[0]
    pattern = base.replace("{", "[{]").replace("}", "[}]") + ":*"
    return sorted(k.decode() for k in client.keys(pattern))


def _dump(client: redis.Redis, bank: ModuleType) -> dict[bytes, Any]:
    """Every key under the test's prefix with its value and TTL, byte for byte."""
    prefix = bank.supervision.keyspace.prefix
    return {k: (client.dump(k), client.pttl(k) > 0) for k in sorted(client.keys(f"{prefix}:*"))}


def _hint(bank: ModuleType, type_name: str, key: str) -> tuple[str, str]:
    member = actor_member(type_name, key)
    return bank.supervision.keyspace.due_bucket(member), member


def test_delete_of_an_idle_actor_removes_every_key(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = bank.supervision.ref("bank.account", "idle")
    for n in range(3):
        ref.send({"add": n})
    local.run()
    assert ref.snapshot().version == 3
    keys = ref.keys
    assert ref.delete() == "deleted"
    left = _actor_keys(redis_client, bank, "bank.account", "idle")
    # Only the tombstone is left: two numbers, expiring with the dedup window.
    assert left == [keys.tombstone]
    seq, version, _token = (redis_client.get(keys.tombstone) or b"").split()
    assert (seq, version) == (b"3", b"3")
    assert 0 < redis_client.ttl(keys.tombstone) <= bank.supervision.settings.dedup_window
    assert not redis_client.exists(keys.meta)
    assert ref.delete() == "missing"  # a retry after a lost reply: nothing left to do


def test_an_actor_created_after_delete_starts_afresh_and_continues_numbering(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """A fresh actor starts from its initial state; its sequence numbers and versions go on
    from the deleted one's, so no dedup mark, relay watermark or requeue mark the old actor
    left (they expire with the dedup window) can be mistaken for one of the new actor's."""
    ref = bank.supervision.ref("bank.account", "again")
    ref.send({"add": 5})
    ref.send({"add": 6})
    local.run()
    ref.delete()
    ref.send({"add": 1})
    local.run()
    snap = ref.snapshot()
    assert snap.state == {"balance": 1, "seen": []}
    assert snap.version == 3
    assert redis_client.hget(ref.keys.meta, "seq") == b"3"
    assert not redis_client.exists(ref.keys.tombstone)


def test_a_retried_send_with_the_same_id_after_delete_is_still_applied_once(
    bank: ModuleType, local: LocalRunner
) -> None:
    """The caller-id dedup mark outlives the actor (it expires with the dedup window): a
    retry of a send that was applied to the deleted actor is not applied again."""
    ref = bank.supervision.ref("bank.account", "retry")
    ref.send({"add": 5}, message_id="pay-1")
    local.run()
    ref.delete()
    ref.send({"add": 5}, message_id="pay-1")  # the caller's retry: applied already
    local.run()
    snap = ref.snapshot()
    assert (snap.pending, snap.version, snap.state["balance"]) == (0, 1, 0)


def _busy_mailbox(bank: ModuleType, local: LocalRunner) -> Any:
    ref = bank.supervision.ref("bank.account", "busy")
    ref.send({"add": 1})  # not run: the message waits in the mailbox
    return ref


def _busy_timer(bank: ModuleType, local: LocalRunner) -> Any:
    ref = bank.supervision.ref("gone.timer", "busy")
    ref.send("remind me")
    local.run()
    return ref


def _busy_lease(bank: ModuleType, local: LocalRunner) -> Any:
    ref = bank.supervision.ref("bank.account", "busy")
    ref.send({"add": 1})
    local.queue.clear()  # its run has not started: a worker claims it below
    claim = ActorStore(bank.supervision.runtime).claim(
        ref.keys, worker="w", lease_ms=60_000, batch=1, nonce="n", supervisors=[], hint_in=60
    )
    assert claim.outcome == "ok"  # a step in flight
    return ref


@pytest.mark.parametrize(
    ("make_busy", "why"),
    [(_busy_mailbox, "active"), (_busy_timer, "timers"), (_busy_lease, "leased")],
)
def test_delete_of_a_busy_actor_raises_actor_busy_and_changes_nothing(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, make_busy: Any, why: str
) -> None:
    ref = make_busy(bank, local)
    before = _dump(redis_client, bank)
    with pytest.raises(ActorBusy) as caught:
        ref.delete()
    assert caught.value.reason == why
    assert why in str(caught.value) and "busy" in str(caught.value)
    assert isinstance(caught.value, SuperviseError)
    assert _dump(redis_client, bank) == before


def test_a_stopped_actor_with_queued_messages_is_deleted(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = bank.supervision.ref("bank.account", "stopped")
    ref.send({"add": 1})
    local.run()
    ref.stop()
    ref.send({"add": 2})  # kept in the mailbox of a stopped actor
    assert ref.delete() == "deleted"
    assert _actor_keys(redis_client, bank, "bank.account", "stopped") == [ref.keys.tombstone]


# -- a delete racing a send ----------------------------------------------------------------------
def test_a_send_before_the_delete_lands_and_the_delete_raises(
    bank: ModuleType, local: LocalRunner
) -> None:
    ref = bank.supervision.ref("bank.account", "race")
    ref.send({"add": 1})
    local.run()
    ref.send({"add": 2})
    with pytest.raises(ActorBusy):
        ref.delete()
    local.run()
    assert ref.snapshot().state["balance"] == 3


def test_a_send_between_delete_and_its_index_cleanup_lands_in_a_fresh_actor(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    """The send lands after the delete script, before the delete's process removes the due
    hint; the broker loses the send's run. The fresh actor keeps a hint, so the tick wakes it."""
    from celery_supervise import store as store_module

    sup = bank.supervision
    ref = sup.ref("bank.account", "race")
    ref.send({"add": 1})
    local.run()
    real = store_module.ActorStore.forget_in_indexes

    def send_first(self: Any, keys: Any, seen: Any) -> None:
        sup.dispatcher = lambda *_: None  # the broker loses the run
        try:
            ref.send({"add": 7})
        finally:
            sup.dispatcher = local._enqueue
        real(self, keys, seen)

    monkeypatch.setattr(store_module.ActorStore, "forget_in_indexes", send_first)
    assert ref.delete() == "deleted"
    monkeypatch.undo()
    bucket, member = _hint(bank, "bank.account", "race")
    assert redis_client.zscore(bucket, member) is not None
    redis_client.zadd(bucket, {member: 1})  # let it come due now
    redis_client.hset(ref.keys.meta, "sched_at", 1)  # its run is overdue
    local.tick()
    assert ref.snapshot().state == {"balance": 7, "seen": []}


def test_a_send_after_the_delete_lands_in_a_fresh_actor(
    bank: ModuleType, local: LocalRunner
) -> None:
    ref = bank.supervision.ref("bank.account", "race")
    ref.send({"add": 1})
    local.run()
    ref.delete()
    ref.send({"add": 2})
    local.run()
    assert ref.snapshot().state["balance"] == 2


# -- idle_ttl ------------------------------------------------------------------------------------
def _age(bank: ModuleType, redis_client: redis.Redis, ref: Any, ms: int) -> None:
    """Make the actor's last step ``ms`` older and its due hint due now (no waiting)."""
    committed = int(redis_client.hget(ref.keys.meta, "committed_at") or 0)
    redis_client.hset(ref.keys.meta, "committed_at", committed - ms)
    bucket, member = _hint(bank, ref.type_name, ref.key)
    redis_client.zadd(bucket, {member: 1})


def test_idle_ttl_hints_the_tick_and_deletes_an_idle_actor(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = short_lived.ref("t1")
    ref.send("hello")
    local.run()
    committed = int(redis_client.hget(ref.keys.meta, "committed_at") or 0)
    bucket, member = _hint(bank, "gone.ttl", "t1")
    score = redis_client.zscore(bucket, member)
    assert score is not None and score <= committed + 60_000 + 1000
    local.tick()  # not due yet: nothing happens
    assert ref.snapshot().status == "idle"
    _age(bank, redis_client, ref, 61_000)
    local.tick()
    assert _actor_keys(redis_client, bank, "gone.ttl", "t1") == [ref.keys.tombstone]
    assert redis_client.zscore(bucket, member) is None


def test_idle_ttl_keeps_an_actor_that_got_a_message_meanwhile(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    handled, queued = short_lived.ref("handled"), short_lived.ref("queued")
    for ref in (handled, queued):
        ref.send("hello")
    local.run()
    for ref in (handled, queued):
        _age(bank, redis_client, ref, 61_000)
    handled.send("again")
    local.run()  # a fresh step: its idle time starts again
    bank.supervision.dispatcher = lambda *_: None  # this one's run is lost: it stays queued
    queued.send("again")
    bank.supervision.dispatcher = local._enqueue
    local.tick()
    assert handled.snapshot().state == {"n": 2}
    assert queued.snapshot().pending == 1
    bucket, member = _hint(bank, "gone.ttl", "handled")
    score = redis_client.zscore(bucket, member)
    committed = int(redis_client.hget(handled.keys.meta, "committed_at") or 0)
    assert score == committed + 60_000  # looked at again when its new idle time is up


# -- the CLI -------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_delete_deletes_an_idle_actor_and_refuses_a_busy_one(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    idle = bank.supervision.ref("bank.account", "cli-idle")
    idle.send({"add": 1})
    local.run()
    busy = bank.supervision.ref("bank.account", "cli-busy")
    busy.send({"add": 1})
    done = _cli("delete", "bank.account", "cli-idle")
    assert done.returncode == 0, done.stderr
    assert "deleted bank.account:cli-idle" in done.stdout
    assert not redis_client.exists(idle.keys.meta)
    before = _dump(redis_client, bank)
    refused = _cli("delete", "bank.account", "cli-busy")
    assert refused.returncode == 1
    assert "busy" in refused.stderr and "active" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _dump(redis_client, bank) == before
    missing = _cli("delete", "bank.account", "never")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


@actor(name="gone.sender", initial={"sent": 0})
def sender(ctx: Context, state: dict[str, Any], message: Any) -> dict[str, Any]:
    ctx.send(with_timer.ref("receiver"), "hello")
    state["sent"] += 1
    return state


def test_a_busy_actor_is_deleted_once_stopped_but_never_with_effects_owed(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    """``stop()`` first fences off a step in flight, then ``delete()`` succeeds; committed
    effects not relayed yet (the outbox) refuse even a stopped actor until they are relayed."""
    from celery_supervise import runner as runner_module

    leased = _busy_lease(bank, local)
    leased.stop()
    assert leased.delete() == "deleted"
    monkeypatch.setattr(runner_module, "relay_outbox", lambda *_: None)  # the worker dies first
    ref = sender.ref("s")
    ref.send("go")
    local.run()
    monkeypatch.undo()
    ref.stop()
    with pytest.raises(ActorBusy) as caught:
        ref.delete()
    assert caught.value.reason == "outbox"
    outbox = bank.supervision.keyspace.actor("gone.sender", "s").outbox
    assert redis_client.llen(outbox) == 1
    bucket, member = _hint(bank, "gone.sender", "s")
    redis_client.zadd(bucket, {member: 1})
    local.tick()  # relays the orphaned outbox
    assert with_timer.ref("receiver").snapshot().state == {"n": 1}
    assert ref.delete() == "deleted"
