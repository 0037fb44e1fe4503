"""State versions (SPEC 7) against a real Redis, driven in this process: a stored state
below the type's ``state_version`` is upgraded when loaded; a failing upgrade is a
``migration_failed`` crash that keeps the state; ``migrate_type`` (``supervise migrate``)
upgrades in place, fenced and resumably, and writes nothing on a dry run; old code refuses
a state newer code wrote. Real workers of both deploys side by side:
tests/workers/test_state_versions_workers.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise.migration import migrate_actor, migrate_type, stored_keys
from celery_supervise.store import ActorStore
from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


@pytest.fixture
def versions(bank: ModuleType) -> Iterator[ModuleType]:
    """The wallet app, deployed at state version 1; back to 1 afterwards."""
    module = bank.versions
    module.deploy(1)
    yield module
    module.deploy(1)


def image(client: redis.Redis) -> dict[bytes, Any]:
    """Every key of the test prefix with its serialized value."""
    keys = sorted(client.scan_iter(match="t:*", count=1000))
    return {k: client.dump(k) for k in keys}


def meta(client: redis.Redis, ref: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(ref.keys.meta).items()}


def deposit(local: LocalRunner, ref: Any, n: int, amount: int = 1) -> None:
    ref.send({"n": n, "amount": amount})
    local.run()


def test_a_stored_state_is_upgraded_when_loaded_and_history_keeps_versions(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = versions.wallet.ref("w1")
    deposit(local, ref, 1, amount=3)
    assert meta(redis_client, ref)["state_version"] == "1"
    versions.deploy(2)
    deposit(local, ref, 2, amount=2)
    snap = ref.snapshot()
    assert snap.state == {"cents": 500, "log": ["v1:1", "v2:2"]} and snap.last_crash is None
    assert meta(redis_client, ref)["state_version"] == "2"
    assert [(h.version, h.state_version) for h in ref.history()] == [(2, 2), (1, 1)]
    assert ref.history()[1].state == {"balance": 3, "log": ["v1:1"]}


def test_a_failing_upgrade_is_a_migration_failed_crash_that_keeps_the_state(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = versions.wallet.ref("w2")
    deposit(local, ref, 1, amount=3)
    before = meta(redis_client, ref)
    versions.deploy(2)

    def broken(state: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("cents")

    versions.wallet.migrate = {1: broken}
    deposit(local, ref, 2)
    snap = ref.snapshot()
    assert snap.last_crash is not None and snap.last_crash["reason"] == "migration_failed"
    assert snap.last_crash["message_id"] is None  # against no message: nothing counted
    after = meta(redis_client, ref)
    assert (after["state"], after["state_version"]) == (before["state"], "1")
    assert snap.pending == 1 and ref.dead_letters() == []


def test_an_upgrade_whose_result_fails_validate_is_migration_failed(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = versions.wallet.ref("w3")
    deposit(local, ref, 1)
    versions.deploy(2)
    versions.wallet.migrate = {1: lambda s: {"cents": -1, "log": []}}
    deposit(local, ref, 2)
    crash = ref.snapshot().last_crash
    assert crash is not None and crash["reason"] == "migration_failed"
    assert "fails validate" in crash["message"]
    assert json.loads(meta(redis_client, ref)["state"]) == {"balance": 1, "log": ["v1:1"]}


def test_migrate_dry_run_lists_failures_and_writes_nothing(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    for i in range(3):
        deposit(local, versions.wallet.ref(f"d{i}"), 1, amount=10 + i)
    versions.deploy(2)

    def fussy(state: dict[str, Any]) -> dict[str, Any]:
        if state["balance"] == 11:
            raise ValueError("cannot convert 11")
        return versions.to_cents(state)

    versions.wallet.migrate = {1: fussy}
    before = image(redis_client)
    results = migrate_type(local.supervision.runtime, "versions.wallet", dry_run=True)
    assert image(redis_client) == before and not local.queue
    outcomes = {r.key: r.outcome for r in results}
    assert outcomes == {"d0": "would_upgrade", "d1": "failed", "d2": "would_upgrade"}
    failed = next(r for r in results if r.outcome == "failed")
    assert "cannot convert 11" in (failed.error or "") and failed.from_version == 1


def test_migrate_in_place_writes_new_versions_resumably(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    rt = local.supervision.runtime
    for i in range(2):
        deposit(local, versions.wallet.ref(f"m{i}"), 1, amount=4)
    versions.deploy(2)
    first = migrate_type(rt, "versions.wallet", dry_run=False)
    assert [(r.key, r.outcome, r.version) for r in first] == [
        ("m0", "upgraded", 2), ("m1", "upgraded", 2)]  # fmt: skip
    ref = versions.wallet.ref("m0")
    assert ref.snapshot().state == {"cents": 400, "log": ["v1:1"]}
    assert [h.state_version for h in ref.history()] == [2, 1]
    again = migrate_type(rt, "versions.wallet", dry_run=False)
    assert {r.outcome for r in again} == {"current"}  # resumable: nothing written twice
    assert ref.snapshot().version == 2
    deposit(local, ref, 2)  # a worker of the new code loads it as it is
    assert ref.snapshot().state == {"cents": 500, "log": ["v1:1", "v2:2"]}


def test_migrate_in_place_is_fenced_against_a_step_in_flight(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    rt = local.supervision.runtime
    ref = versions.wallet.ref("f1")
    deposit(local, ref, 1, amount=2)
    versions.deploy(2)
    ref.send({"n": 2, "amount": 1})
    local.queue.clear()  # the run is not taken yet: claim by hand, as a worker mid-step
    claim = ActorStore(rt).claim(ref.keys, worker="w:1", lease_ms=60_000, batch=1, nonce="n",
                                 supervisors=[], hint_in=60, state_version=2)  # fmt: skip
    assert claim.outcome == "ok"
    before = image(redis_client)
    result = migrate_actor(rt, versions.wallet, "f1", dry_run=False)
    assert result.outcome == "busy" and not result.ok
    assert image(redis_client) == before
    fence = "|".join(meta(redis_client, ref).get(f, "") for f in ("token", "version"))
    stale = ActorStore(rt).upgrade(ref.keys, fence=fence + "|", state=b'{"cents":0,"log":[]}',
                                   state_version=2, history=10)  # fmt: skip
    assert stale == ("busy", 0)
    redis_client.hdel(ref.keys.meta, "lease_until")  # the worker is gone; its token stays
    changed = ActorStore(rt).upgrade(ref.keys, fence="0|0|", state=b'{"cents":0,"log":[]}',
                                     state_version=2, history=10)  # fmt: skip
    assert changed == ("changed", 0)
    assert json.loads(meta(redis_client, ref)["state"]) == {"balance": 2, "log": ["v1:1"]}


def test_old_code_refuses_a_state_new_code_wrote_and_leaves_it_scheduled(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = versions.wallet.ref("r1")
    deposit(local, ref, 1, amount=2)
    versions.deploy(2)
    deposit(local, ref, 2)
    versions.deploy(1)  # an old worker still running
    ref.send({"n": 3, "amount": 1})
    before = meta(redis_client, ref)
    assert local.run(max_runs=1) == 1
    after = meta(redis_client, ref)
    assert after["state"] == before["state"] and after["version"] == before["version"]
    assert (after["status"], after["sched"]) == ("active", "1")  # still someone's to run
    assert "lease_until" not in after and ref.snapshot().last_crash is None
    assert ref.snapshot().pending == 1 and not local.failures
    assert not local.queue and [args for _, _, args, _ in local.later] == [("r1",)]  # later
    versions.deploy(2)  # a new worker takes that run, once it is due
    local.settle(1.0)
    assert ref.snapshot().state == {"cents": 400, "log": ["v1:1", "v2:2", "v2:3"]}


def test_the_type_index_lists_created_actors_and_prunes_gone_ones(
    versions: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    rt = local.supervision.runtime
    for key in ("a", "b", "c"):
        versions.wallet.ref(key).send({"n": 1, "amount": 1})
        versions.wallet.ref(key).send({"n": 2, "amount": 1})  # a second send adds nothing
    index = rt.keyspace.type_index("versions.wallet")
    assert redis_client.zcard(index) == 3
    redis_client.delete(versions.wallet.ref("b").keys.meta)  # deleted behind our back
    assert stored_keys(rt, "versions.wallet") == ["a", "c"]
    assert redis_client.zcard(index) == 2


def test_replay_upgrades_an_older_state_as_a_worker_would(
    versions: ModuleType, local: LocalRunner
) -> None:
    """A replay runs the current code on the actor's state: under a deploy with a newer
    state version it must see the upgraded shape, as the worker's step would."""
    from celery_supervise.store import ActorStore

    sup = versions.wallet.ref("r1").runtime
    ref = versions.wallet.ref("r1")
    deposit(local, ref, 1, amount=3)  # stored at state version 1
    ref.send({"n": 2, "amount": 1})
    local.queue.clear()  # its run never happens: the actor is quarantined instead
    ActorStore(sup).halt(ref.keys, "quarantined", reason="test")
    versions.deploy(2)
    result = versions.wallet.ref("r1").replay()
    assert result.ok, result
    assert result.new_state == {"cents": 400, "log": ["v1:1", "v2:2"]}
