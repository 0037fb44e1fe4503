"""A Redis that refuses writes for a while (out of memory under ``noeviction``, the policy the
docs recommend; ``MISCONF``; ``READONLY``) is not corrupt data: ``send`` raises
``RedisRejected`` having written nothing, and the tick keeps the actor's hint so the actor
recovers once Redis accepts writes again. The test's own Redis server is put out of memory
with ``CONFIG SET maxmemory``, restored afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
import redis

from celery_supervise import CorruptActorData, RedisRejected, SuperviseError


@contextmanager
def out_of_memory(client: redis.Redis) -> Iterator[None]:
    saved = {k: client.config_get(k)[k] for k in ("maxmemory", "maxmemory-policy")}
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # below any real usage: every write is refused
    try:
        yield
    finally:
        for key, value in saved.items():
            client.config_set(key, value)


def image(client: redis.Redis) -> dict[bytes, bytes | None]:
    keys = sorted(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return dict(zip(keys, pipe.execute(), strict=True))


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> Any:
    return supervise_runner(bank.supervision)


def test_send_out_of_memory_is_rejected_not_corrupt(
    bank: ModuleType, local: Any, redis_client: redis.Redis
) -> None:
    ref = bank.poison.ref("oom-send")
    ref.send("a")
    local.run()
    before = image(redis_client)
    with out_of_memory(redis_client):
        with pytest.raises(RedisRejected) as info:
            ref.send("b")
        assert not isinstance(info.value, CorruptActorData)
        assert isinstance(info.value, SuperviseError)
        assert "nothing was written" in str(info.value) and "OOM" in str(info.value)
        assert image(redis_client) == before
    ref.send("b")  # memory is back: the same send works
    local.run()
    assert ref.snapshot().state == {"applied": ["a", "b"]}


def test_tick_out_of_memory_keeps_the_hint_and_the_actor_recovers(
    bank: ModuleType, local: Any, redis_client: redis.Redis
) -> None:
    from celery_supervise.keyspace import actor_member
    from celery_supervise.runtime import waiting_at_most
    from celery_supervise.tick import run_tick, visit_or_retry

    sup = bank.supervision
    ref = bank.poison.ref("oom-tick")
    ref.send("a")
    local.queue.clear()  # the run that would handle it: its worker dies holding the lease
    claim_keys = [ref.keys.meta, ref.keys.mailbox, *sup.keyspace.metric_keys(ref.keys)]
    claim = sup.scripts.claim(keys=claim_keys, args=["dead:1", 1, 10, "n"])
    assert claim[0] == b"ok"
    time.sleep(0.01)  # the lease has expired
    member = actor_member(ref.type_name, ref.key)
    bucket = sup.keyspace.due_bucket(member)
    redis_client.zadd(bucket, {member: int(time.time() * 1000)})  # as a claim's hint: due
    score = redis_client.zscore(bucket, member)
    assert score is not None

    with out_of_memory(redis_client):
        now = int(time.time() * 1000) + 1000
        with waiting_at_most(1.0):  # as a tick visits: a third of its lock at most
            outcome = visit_or_retry(sup.runtime, bucket, member, score, now)
        assert outcome == "failed"  # not "corrupt"
        assert redis_client.zscore(bucket, member) == score  # the hint is kept, still due
        assert run_tick(sup.runtime) == {"skipped": "redis refused writes"}
        assert redis_client.zscore(bucket, member) == score
    assert ref.snapshot().status == "active"  # nothing was decided while out of memory

    local.settle(3.0)  # memory is back: the lost worker is noticed, the message handled
    snap = ref.snapshot()
    assert snap.state == {"applied": ["a"]} and snap.status == "idle", snap
