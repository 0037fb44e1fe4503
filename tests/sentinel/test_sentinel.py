"""celery_supervise behind Redis Sentinel (``sentinel://``) with ``supervise_replica_acks``:
a real primary, two replicas and a sentinel (``LocalSentinel``), real workers; the primary
is SIGKILLed under load and a replica promoted. With ``supervise_replica_acks=1`` every
message ``send`` acknowledged is applied exactly once, in order, after the failover."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celery_supervise import ConfigurationError, RedisUnavailable, ReplicaAckTimeout, Supervision
from celery_supervise.testing import LocalRunner
from celery_supervise.testing.sentinel import LocalSentinel
from tests.harness import CeleryProcess, start_beat, start_worker, wait_until

BANK = "tests.apps.bank"
OPTIONS = {"master_name": "mymaster"}


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    with LocalSentinel(replicas=2, sentinels=1) as topology:
        yield topology


def _point(bank: ModuleType, topology: LocalSentinel, acks: int) -> Any:
    rt = bank.supervision.runtime
    before = rt.settings
    rt.use_settings(dataclasses.replace(
        before, redis_url=topology.url, redis_options=OPTIONS, replica_acks=acks))  # fmt: skip
    return before


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        ({"supervise_redis_url": "sentinel://127.0.0.1:26379"}, "needs 'master_name'"),
        ({"supervise_redis_url": "sentinel://127.0.0.1:26379;redis://x:1",
          "supervise_redis_options": OPTIONS}, "'redis://x:1', not a sentinel://host:port"),
        ({"supervise_redis_url": "sentinel://127.0.0.1",
          "supervise_redis_options": OPTIONS}, "a sentinel '127.0.0.1' that is not host:port"),
        ({"supervise_replica_acks": -1}, "supervise_replica_acks"),
        ({"supervise_replica_acks": "1"}, "supervise_replica_acks"),
        ({"supervise_redis_url": "redis-cluster://127.0.0.1:7000", "supervise_replica_acks": 1},
         "not supported on a Redis Cluster yet"),
    ],
)  # fmt: skip
def test_sentinel_and_replica_ack_settings_are_checked(conf: dict[str, Any],
                                                       fragment: str) -> None:  # fmt: skip
    from celery import Celery

    app = Celery("st", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.update(conf)
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        Supervision(app)


def test_through_the_sentinels_a_send_waits_for_its_replicas(
    bank: ModuleType, sentinel: LocalSentinel
) -> None:
    before = _point(bank, sentinel, acks=2)
    local = LocalRunner(bank.supervision)
    try:
        ref = bank.account.ref("a")
        ref.send({"add": 1}, message_id="m1")
        for replica in sentinel.replicas:  # both hold it when send returns (WAIT 2)
            assert replica.client().llen(ref.keys.mailbox) == 1
        local.run()
        assert ref.snapshot().state["balance"] == 1
        sentinel.replicas[0].kill()  # now only one replica can acknowledge
        with pytest.raises(ReplicaAckTimeout, match="1 of 2 replicas acknowledged") as caught:
            ref.send({"add": 10}, message_id="m2")
        assert isinstance(caught.value, RedisUnavailable)
        bank.supervision.runtime.use_settings(dataclasses.replace(
            bank.supervision.runtime.settings, replica_acks=1))  # fmt: skip
        ref.send({"add": 10}, message_id="m2")  # the retry, same id: applied once
        local.run()
        assert ref.snapshot().state["balance"] == 11
    finally:
        local.close()
        bank.supervision.runtime.use_settings(before)


def _sender(bank: ModuleType, who: int, stop: threading.Event, acked: list[list[int]]) -> None:
    for n in itertools.count():
        if stop.is_set() and n >= 30:
            return
        ref = bank.supervision.ref("bank.account", f"f{(who + n) % 6}")  # a thread: no app
        for _ in range(200):  # retried with the same id until acknowledged
            try:
                ref.send({"add": 1, "n": n, "sender": f"s{who}"}, message_id=f"s{who}-{n}")
                acked[who].append(n)
                break
            except RedisUnavailable:
                time.sleep(0.1)
        else:
            raise AssertionError(f"s{who}-{n} never acknowledged")
        time.sleep(0.005)


def test_a_primary_killed_under_load_loses_no_acknowledged_message(
    bank: ModuleType, bank_env: dict[str, str], sentinel: LocalSentinel, tmp_path: Path
) -> None:
    env = {**bank_env, "TEST_STATE_URL": sentinel.url,
           "TEST_STATE_OPTIONS": json.dumps(OPTIONS), "TEST_REPLICA_ACKS": "1"}  # fmt: skip
    before = _point(bank, sentinel, acks=1)
    procs: list[CeleryProcess] = []
    stop, senders = threading.Event(), []
    try:
        procs.append(start_worker(BANK, concurrency=2, hostname="s1@%h", env=env,
                                  log_dir=tmp_path))  # fmt: skip
        procs.append(start_beat(BANK, env=env, schedule_dir=tmp_path / "beat"))
        acked: list[list[int]] = [[], []]
        senders = [threading.Thread(target=_sender, args=(bank, i, stop, acked))
                   for i in range(2)]  # fmt: skip
        for t in senders:
            t.start()
        wait_until(lambda: min(map(len, acked)) > 20, timeout=30, message="senders under way")
        sentinel.kill_primary()
        wait_until(lambda: min(map(len, acked)) > 60, timeout=60,
                   message="sends acknowledged after the failover")  # fmt: skip
        stop.set()
        for t in senders:
            t.join(60)
        total = sum(map(len, acked))

        def applied() -> Any:
            snaps = [bank.account.ref(f"f{i}").snapshot() for i in range(6)]
            done = sum(s.state["balance"] for s in snaps) >= total
            return snaps if done and all(s.status == "idle" for s in snaps) else None

        snaps = wait_until(applied, timeout=90, message="every acknowledged message applied")
        for i, snap in enumerate(snaps):
            for who in range(2):
                seen = [n for s, n in snap.state["seen"] if s == f"s{who}"]
                expected = [n for n in acked[who] if (who + n) % 6 == i]
                assert seen == expected, (i, who, seen[:10], expected[:10])
    finally:
        stop.set()  # a failed test leaves no sender running into the next tests
        for t in senders:
            t.join(60)
        for proc in procs:
            proc.kill()
        bank.supervision.runtime.use_settings(before)
