"""One Celery run serves many woken actors (runner.serve_ready, scripts/ready.lua).

A send that wakes an idle actor publishes a run only when no run of its type is live; the
others wait in the type's ready set for the live run to take them. The tests break it from
outside: a burst, a run lost with actors in hand, a pool process lost mid-step in an actor
it took, garbage in the bookkeeping."""

from __future__ import annotations

import json
import re
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import runner
from celery_supervise.child_lost import end_lost_run
from celery_supervise.store import ActorStore
from celery_supervise.testing import LocalRunner

DEAD = "w1@host:4242"


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    got: LocalRunner = supervise_runner(bank.supervision)
    return got


def _balances(bank: ModuleType, keys: list[str]) -> list[int]:
    return [bank.account.ref(k).snapshot().state["balance"] for k in keys]


def test_a_burst_of_wakes_costs_a_few_runs_which_serve_them_all(
    bank: ModuleType, local: LocalRunner
) -> None:
    keys = [f"b{i}" for i in range(30)]
    for n, key in enumerate(keys):
        bank.account.ref(key).send({"add": n + 1})
    # the first wake's run, and one more each time 8 more wait than the live runs take
    assert len(local.queue) == 4  # 26 wait in the ready set
    queued = local.queue.popleft()
    (name, args, _), task_id = queued, queued.task_id
    assert (name, args) == ("bank.account", ("b0",)) and task_id
    summary = bank.supervision.app.tasks[name].apply(args=args, task_id=task_id).get()
    assert (summary["key"], summary["committed"]) == ("b0", 1)
    served = dict(summary["served"])
    assert local.queue and all(item.task_id for item in local.queue)
    local.run()
    assert _balances(bank, keys) == [n + 1 for n in range(30)]
    assert set(served) <= set(keys[1:]) and served  # the first run served some itself
    rt = bank.supervision.runtime
    ks = rt.keyspace
    assert rt.client.zcard(ks.ready("bank.account")) == 0
    assert rt.client.zcard(ks.ready_runs("bank.account")) == 0  # no run counts as live
    assert rt.client.hlen(ks.ready_taken("bank.account")) == 0


def test_a_crash_in_a_served_actor_does_not_stop_the_run(
    bank: ModuleType, local: LocalRunner
) -> None:
    """The run goes on with the next actor and raises the crash at the end."""
    first = bank.supervision.ref("bank.poison", "first")
    first.send("fine")
    bad = bank.supervision.ref("bank.poison", "bad")
    bad.send("poison")
    after = bank.supervision.ref("bank.poison", "after")
    after.send("fine too")
    assert len(local.queue) == 1
    local.run()
    assert first.snapshot().state == {"applied": ["fine"]}
    assert after.snapshot().state == {"applied": ["fine too"]}
    assert bad.snapshot().last_crash is not None and bad.snapshot().pending == 1
    ((name, args, exc),) = local.failures
    assert (name, args) == ("bank.poison", ("first",))
    assert isinstance(exc, runner.StepCrashed) and "bank.poison:bad" in str(exc)


def test_a_lost_run_gives_its_actors_back_within_a_lease_and_a_tick(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """The run's task is lost (its worker died with it prefetched): the actors that waited
    for it are served by a run the tick starts once the lost one stops counting as live."""
    keys = [f"l{i}" for i in range(5)]
    for key in keys:
        bank.account.ref(key).send({"add": 2})
    local.queue.clear()  # the one run, lost
    rt = bank.supervision.runtime
    assert redis_client.zcard(rt.keyspace.ready("bank.account")) == 4
    lease = rt.settings.lease_seconds
    assert local.settle(lease + 4 * rt.settings.tick_interval + 2,
                        until=lambda: _balances(bank, keys[1:]) == [2] * 4)  # fmt: skip
    # "l0" was the lost run's own actor: it is back with the tick's repair of lost runs
    assert local.settle(rt.repair_after * 3, until=lambda: _balances(bank, keys) == [2] * 5)


def test_a_pool_process_lost_in_an_actor_it_took_ends_that_lease_at_once(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """A run published for "own" took "other" from the ready set and died stepping it: the
    parent's report of the lost process ends "other"'s lease (fenced by owner) and gives
    back what the run held."""
    rt = bank.supervision.runtime
    ks = rt.keyspace
    own, other = bank.account.ref("own"), bank.account.ref("other")
    own.send({"add": 1})
    other.send({"add": 5})  # waits for own's run
    queued = local.queue.popleft()
    run_id = queued.task_id
    reply = rt.ready("bank.account", "take", run_id, spawn_id="spawn", take=8, max_runs=8)
    assert [x.decode() for x in reply] == ["", "other"]
    claim = ActorStore(rt).claim(other.keys, worker=DEAD, lease_ms=600_000, batch=1,
                                 nonce="n", supervisors=[], hint_in=600.0)  # fmt: skip
    assert claim.outcome == "ok"
    assert end_lost_run(rt, "bank.account", "own", run_id, DEAD) == "not_held"
    assert other.snapshot().last_crash["reason"] == "worker_lost"  # at once, not at expiry
    assert json.loads(redis_client.hget(ks.ready_taken("bank.account"), run_id) or "null") is None
    assert local.settle(10.0, until=lambda: other.snapshot().state["balance"] == 5)
    bank.supervision.publish("bank.account", "own")
    local.run()
    assert own.snapshot().state["balance"] == 1


@pytest.mark.parametrize("garbage", ["not json", "[true]", '[["x"]]', '"x"'])
def test_garbage_in_what_a_run_took_is_refused_and_no_wake_is_lost(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, garbage: str
) -> None:
    rt = bank.supervision.runtime
    ks = rt.keyspace
    redis_client.zadd(ks.ready_runs("bank.account"), {"dead": 1})
    redis_client.hset(ks.ready_taken("bank.account"), "dead", garbage)
    with pytest.raises(redis.ResponseError, match=r"CORRUPT .*taken.* dead holds "):
        rt.ready("bank.account", "push", "r1", keys=("x",))
    assert redis_client.hget(ks.ready_taken("bank.account"), "dead") == garbage.encode()
    ref = bank.account.ref("x")
    ref.send({"add": 4})  # the ready set refuses: the run is published directly
    local.run()
    assert ref.snapshot().state["balance"] == 4


def test_one_server_send_checks_the_due_bucket_before_any_write(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """On one server the send script writes the due hint itself: a due bucket of the wrong
    type refuses the send before any write, naming the key."""
    from celery_supervise import CorruptActorData
    from celery_supervise.keyspace import actor_member
    from tests.redis.test_script_atomicity import image

    rt = bank.supervision.runtime
    assert not rt.keyspace.cluster
    ref = bank.account.ref("hinted")
    bucket = rt.keyspace.due_bucket(actor_member("bank.account", "hinted"))
    redis_client.set(bucket, "garbage")
    prefix = rt.settings.key_prefix
    before = image(redis_client, prefix)
    with pytest.raises(CorruptActorData, match=re.escape(bucket) + ".*WRONGTYPE"):
        ref.send({"add": 1})
    assert image(redis_client, prefix) == before
    assert not local.queue


@pytest.mark.parametrize("which", ["ready", "ready_runs", "ready_taken"])
def test_a_ready_set_key_of_the_wrong_type_does_not_stop_a_send(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, which: str
) -> None:
    rt = bank.supervision.runtime
    wrong = getattr(rt.keyspace, which)("bank.account")
    redis_client.set(wrong, "garbage")
    ref = bank.account.ref("w")
    ref.send({"add": 6})  # the ready set is not touched; the run is published directly
    assert redis_client.get(wrong) == b"garbage"  # kept, for an operator to look at
    assert len(local.queue) == 1 and local.queue[0].task_id is None
    local.run()
    assert ref.snapshot().state["balance"] == 6


def test_a_send_that_skips_the_ready_set_still_clears_a_deleted_actors_tombstone(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """send.lua's ready-set locals once shadowed the tombstone it had read: a fresh actor
    made where the ready set was not used (a cluster, or garbage there) kept the tombstone."""
    ref = bank.account.ref("again")
    ref.send({"add": 5})
    local.run()
    assert ref.delete() == "deleted" and redis_client.exists(ref.keys.tombstone)
    redis_client.set(bank.supervision.runtime.keyspace.ready("bank.account"), "garbage")
    ref.send({"add": 1})
    local.run()
    assert ref.snapshot().state["balance"] == 1
    assert not redis_client.exists(ref.keys.tombstone)


def test_more_runs_are_published_when_more_wait_than_the_live_ones_take(
    bank: ModuleType, local: LocalRunner
) -> None:
    """A run whose own actor takes its whole time (a slow step) never takes from the set:
    a backlog of more than a take per live run publishes another run, up to READY_RUNS."""
    from celery_supervise.runtime import READY_RUNS, READY_TAKE

    for i in range(READY_TAKE * 2 + 3):
        bank.account.ref(f"s{i}").send({"add": 1})
    assert len(local.queue) == 3  # at 0 waiting, at 8 (one run live), at 16 (two live)
    for i in range(READY_TAKE * READY_RUNS * 2):
        bank.account.ref(f"t{i}").send({"add": 1})
    assert len(local.queue) == READY_RUNS  # never more than READY_RUNS live
    local.run()
    assert all(b == 1 for b in _balances(bank, [f"t{i}" for i in range(READY_TAKE * 4)]))


def test_the_renewal_thread_survives_an_unexpected_error(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    """One thread renews every lease of the process: an error it does not expect (a cluster
    client's own exception type) must not end it, or every later step would lose its lease."""
    import time

    rt = bank.supervision.runtime
    ref = bank.account.ref("renewed")
    ref.send({"add": 1})
    local.queue.clear()
    claim = ActorStore(rt).claim(ref.keys, worker=DEAD, lease_ms=int(rt.settings.lease_seconds
                                 * 1000), batch=1, nonce="n", supervisors=[],
                                 hint_in=60.0)  # fmt: skip
    real = ActorStore.renew
    calls: list[int] = []

    def flaky(self: Any, keys: Any, token: int, lease_ms: int) -> bool:
        calls.append(token)
        if len(calls) == 1:
            raise RuntimeError("not a RedisError")
        return real(self, keys, token, lease_ms)

    monkeypatch.setattr(ActorStore, "renew", flaky)
    lease = runner._Lease(rt, ref.keys, claim.token, None)
    lease.start()
    try:
        first = int(redis_client.hget(ref.keys.meta, "lease_until") or 0)
        deadline = time.monotonic() + rt.settings.lease_seconds * 2
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) >= 3, calls  # it went on after the error
        assert int(redis_client.hget(ref.keys.meta, "lease_until") or 0) > first
    finally:
        lease.stop()
