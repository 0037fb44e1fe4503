"""A pool process that died mid-step, as its parent reports it (``child_lost.py``): the
lease it held is ended at once by ``forfeit.lua``, fenced by the owner, and the actor is
visited as a tick would, so the ``worker_lost`` crash is the tick's own. Driven in-process:
a claim made here stands for the dead pool process's (it never commits), with a lease far
longer than the test, so nothing here can come from the lease running out."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import redis
from billiard.einfo import ExceptionInfo
from celery import Celery, signals
from celery.exceptions import WorkerLostError
from celery.worker.request import Request
from kombu.message import Message

from celery_supervise import Supervision
from celery_supervise.child_lost import PoolWatch, end_lost_lease
from celery_supervise.keyspace import actor_member
from celery_supervise.store import ActorStore
from celery_supervise.testing import LocalRunner
from tests.redis.test_script_atomicity import image

#: The dead pool process's worker id, as ``runner._Run`` names it (hostname:pid).
DEAD = "w1@host:4242"
#: Longer than any test here: a lease that ran out cannot explain what they see.
LONG_LEASE_MS = 600_000


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def _claimed(bank: ModuleType, local: LocalRunner, key: str, worker: str = DEAD) -> Any:
    """An actor with one message, claimed by ``worker`` (its run taken off the queue: the
    process that runs it dies mid-step)."""
    ref = bank.supervision.ref("bank.account", key)
    ref.send({"add": 3})
    local.queue.clear()
    assert _claim(bank, ref, worker).outcome == "ok"
    return ref


def _claim(bank: ModuleType, ref: Any, worker: str) -> Any:
    return ActorStore(bank.supervision.runtime).claim(
        ref.keys, worker=worker, lease_ms=LONG_LEASE_MS, batch=1, nonce=uuid.uuid4().hex,
        supervisors=[], hint_in=LONG_LEASE_MS / 1000,
    )  # fmt: skip


def _forfeit(bank: ModuleType, ref: Any, worker: str = DEAD) -> tuple[str, float | None]:
    return ActorStore(bank.supervision.runtime).forfeit(ref.keys, worker)


def _lease(redis_client: redis.Redis, ref: Any) -> list[Any]:
    return redis_client.hmget(ref.keys.meta, "lease_until", "lease_owner", "token")


def _keys_of(key: str) -> str:
    """The prefix of every key of actor ``bank.account:key``."""
    return f"t:a:{{bank.account:{key}}}"


def _crashes(redis_client: redis.Redis, ref: Any) -> list[str]:
    return [json.loads(c)["reason"] for c in redis_client.lrange(ref.keys.crashes, 0, -1)]


def _events(redis_client: redis.Redis, name: str) -> list[dict[str, Any]]:
    found = [json.loads(f[b"event"]) for _, f in redis_client.xrange("t:events")]
    return [e for e in found if e["event"] == name]


def test_forfeit_ends_the_dead_owners_lease_as_one_that_ran_out(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = _claimed(bank, local, "ended")
    until, owner, token = _lease(redis_client, ref)
    lease, score = _forfeit(bank, ref)
    assert lease == "ended"
    now = bank.supervision.runtime.now_ms()
    after = _lease(redis_client, ref)
    assert int(after[0]) <= now < int(until)  # ran out now, not at its expiry
    assert after[1:] == [owner, token]  # the owner and token stay for the tick's fence
    assert redis_client.hget(ref.keys.meta, "status") == b"active"  # nothing else changed
    member = actor_member("bank.account", "ended")
    assert score == redis_client.zscore(bank.supervision.keyspace.due_bucket(member), member)
    # The tick comes by at once: the hint is stamped on this process's estimate of Redis'
    # clock (runtime.clock), which may run ahead of TIME by its error bound and a rounding.
    slack = 1000 * bank.supervision.runtime.clock_error + 1
    assert score is not None and score <= now + slack


def test_forfeit_refuses_a_lease_another_process_holds(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = _claimed(bank, local, "other", worker="w1@host:5151")
    before = image(redis_client, _keys_of("other"))
    assert _forfeit(bank, ref)[0] == "not_held"  # a sibling pool process's lease
    assert _forfeit(bank, ref, worker="w2@host:5151")[0] == "not_held"  # another host's
    assert image(redis_client, _keys_of("other")) == before


def test_forfeit_never_ends_the_lease_a_newer_run_took(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """The dead process's lease was revoked meanwhile (here: an operator's stop and resume)
    and a newer run claimed under a new token: a late report of the death touches nothing."""
    ref = _claimed(bank, local, "newer")
    old_token = int(redis_client.hget(ref.keys.meta, "token"))
    ref.stop()
    ref.resume()
    local.queue.clear()
    assert _claim(bank, ref, "w1@host:6262").outcome == "ok"
    lease = _lease(redis_client, ref)
    assert int(lease[2]) > old_token
    assert _forfeit(bank, ref)[0] == "not_held"
    assert _lease(redis_client, ref) == lease


def test_forfeit_is_a_no_op_on_a_repeat(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = _claimed(bank, local, "repeat")
    assert _forfeit(bank, ref)[0] == "ended"
    before = image(redis_client, _keys_of("repeat"))
    assert _forfeit(bank, ref)[0] == "expired"
    assert image(redis_client, _keys_of("repeat")) == before
    local.tick()  # the tick's lost-lease path: the lease is gone
    assert ref.snapshot().last_crash["reason"] == "worker_lost"
    before = image(redis_client, _keys_of("repeat"))
    assert _forfeit(bank, ref)[0] == "not_held"
    assert image(redis_client, _keys_of("repeat")) == before


def test_a_lost_child_is_crashed_at_once_by_the_ticks_path_and_retried(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = _claimed(bank, local, "lost")
    rt = bank.supervision.runtime
    assert end_lost_lease(rt, "bank.account", "lost", DEAD) == "worker_lost"
    snap = ref.snapshot()
    crash = snap.last_crash
    assert crash is not None
    assert (crash["reason"], crash["worker"], crash["attempt"]) == ("worker_lost", DEAD, 1)
    assert snap.status == "backoff" and snap.pending == 1  # decided, the message kept
    assert _crashes(redis_client, ref) == ["worker_lost"]
    (event,) = _events(redis_client, "child_lost")
    assert (event["worker"], event["lease"], event["outcome"]) == (DEAD, "ended", "worker_lost")
    assert [e["reason"] for e in _events(redis_client, "crash")] == ["worker_lost"]
    shard = rt.keyspace.stat_shard("bank.account", "lost")
    census = redis_client.hgetall(rt.keyspace.stats("bank.account", shard))
    assert census[b"crash:worker_lost"] == b"1"  # counted as the tick counts it
    # a repeat of the report finds nothing to do
    assert end_lost_lease(rt, "bank.account", "lost", DEAD) == "not_held"
    local.settle(3.0)  # the supervisor's restart, then the message again
    snap = ref.snapshot()
    assert (snap.state["balance"], snap.version, snap.pending) == (3, 1, 0)
    assert _crashes(redis_client, ref) == ["worker_lost"]


def test_a_lost_child_whose_batch_had_ended_blames_no_message(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """Its last commit said no step would follow; it died before releasing: the lease is
    released (and the next run published), as the tick would, with no crash."""
    ref = _claimed(bank, local, "ended-batch")
    redis_client.hset(ref.keys.meta, "stepping", 0)
    outcome = end_lost_lease(bank.supervision.runtime, "bank.account", "ended-batch", DEAD)
    assert outcome == "released_more"
    assert ref.snapshot().last_crash is None
    local.settle(2.0)
    assert ref.snapshot().state["balance"] == 3


def test_a_lost_child_that_held_no_lease_changes_nothing(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = _claimed(bank, local, "busy", worker="w1@host:7373")
    lease = _lease(redis_client, ref)
    assert end_lost_lease(bank.supervision.runtime, "bank.account", "busy", DEAD) == "not_held"
    assert _lease(redis_client, ref) == lease
    assert ref.snapshot().last_crash is None
    (event,) = _events(redis_client, "child_lost")
    assert event["lease"] == "not_held"


# -- the parent's side: Celery's own failure handling of a lost pool process ---------------
@pytest.fixture
def watch_of() -> Iterator[Any]:
    """``watch_of(supervision)``: its PoolWatch, connected as at ``worker_init``."""
    watches: list[PoolWatch] = []

    def connect(supervision: Any) -> PoolWatch:
        watch = PoolWatch(supervision.runtime, supervision.app)
        watch.connect()
        watches.append(watch)
        return watch

    yield connect
    for watch in watches:
        signals.task_received.disconnect(watch.on_received)
        signals.task_failure.disconnect(watch.on_failure)


def _lost_in_pool(app: Celery, watch: PoolWatch, type_name: str, key: str, pid: int) -> None:
    """A real Celery request of the actor's task, received and accepted by pool process
    ``pid``, then failed as Celery fails it when billiard reports that process gone."""
    message = app.amqp.as_task_v2(uuid.uuid4().hex, type_name, args=(key,))
    request = Request(
        Message(body=json.dumps(message.body), headers=message.headers,
                content_type="application/json", content_encoding="utf-8",
                properties=message.properties, delivery_info={}),
        app=app, hostname="w1@host", task=app.tasks[type_name],
    )  # fmt: skip
    signals.task_received.send(sender=None, request=request)
    request.on_accepted(pid=pid, time_accepted=0.0)
    try:
        raise WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 0.")
    except WorkerLostError:
        request.on_failure(ExceptionInfo())


def test_celerys_report_of_a_lost_pool_process_ends_its_lease(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, watch_of: Any
) -> None:
    ref = _claimed(bank, local, "reported")
    watch = watch_of(bank.supervision)
    _lost_in_pool(bank.app, watch, "bank.account", "reported", 4242)
    crash = ref.snapshot().last_crash
    assert crash is not None and (crash["reason"], crash["worker"]) == ("worker_lost", DEAD)
    assert not watch.requests  # the request is not kept past its report


def test_a_report_about_another_pool_process_changes_nothing(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis, watch_of: Any
) -> None:
    ref = _claimed(bank, local, "sibling")
    before = image(redis_client, _keys_of("sibling"))
    _lost_in_pool(bank.app, watch_of(bank.supervision), "bank.account", "sibling", 5151)
    assert image(redis_client, _keys_of("sibling")) == before
    assert ref.snapshot().last_crash is None


def test_a_report_redis_does_not_answer_is_left_to_the_lease(
    bank: ModuleType, watch_of: Any, caplog: Any
) -> None:
    """Never raised into Celery's failure handling: logged, and the lease runs out."""
    app = Celery("unreachable", broker="memory://", set_as_current=False)
    app.conf.supervise_redis_url = "redis://127.0.0.1:1/0"  # nothing listens there
    watch = watch_of(Supervision(app))
    with caplog.at_level(logging.WARNING, logger="celery_supervise"):
        _lost_in_pool(app, watch, "bank.account", "k", 4242)
    (record,) = [r for r in caplog.records if "child_lost_unhandled" in r.getMessage()]
    assert "w1@host:4242" in record.getMessage() and "left to the lease" in record.getMessage()
