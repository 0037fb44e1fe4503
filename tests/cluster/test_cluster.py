"""celery_supervise against a real Redis Cluster of three primaries (``redis-cluster://``):
every script runs on one slot (the cluster refuses anything else with CROSSSLOT), effects
cross slots and nodes, the census lives in each actor's own slot, and a node that lost its
scripts gets them again. Driven in this process by ``LocalRunner``; real workers are in
``test_cluster_workers.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from types import ModuleType
from typing import Any

import pytest

from celery_supervise import ConfigurationError, Supervision
from celery_supervise.census import actors_by_status, read_census
from celery_supervise.keyspace import cluster_slot
from celery_supervise.testing import LocalRunner
from celery_supervise.testing.topologies import LocalCluster
from tests.redis.test_replay import REFUND, quarantine


def _nodes_holding(cluster: LocalCluster, keys: list[str]) -> set[int]:
    return {cluster.owner(cluster_slot(_tag(k))).port for k in keys}


def _tag(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]


def test_the_actors_of_a_run_spread_over_every_primary(cbank: ModuleType, cluster: LocalCluster,
                                                       local: LocalRunner) -> None:  # fmt: skip
    refs = [cbank.account.ref(f"a{i}") for i in range(30)]
    assert len(_nodes_holding(cluster, [r.keys.meta for r in refs])) == 3
    for i, ref in enumerate(refs):
        ref.send({"add": i + 1})
    local.run()
    assert [r.snapshot().state["balance"] for r in refs] == list(range(1, 31))
    assert not local.failures


def test_effects_timers_and_asks_cross_slots(cbank: ModuleType, cluster: LocalCluster,
                                             local: LocalRunner) -> None:  # fmt: skip
    shop = cbank.tests.apps.shop if hasattr(cbank, "tests") else sys.modules["tests.apps.shop"]
    to = [f"r{i}" for i in range(20)]
    receivers = [shop.receiver.ref(k) for k in to]
    assert len(_nodes_holding(cluster, [r.keys.meta for r in receivers])) == 3
    shop.fanout.ref("f").send({"to": to})
    shop.timer.ref("t").send({"after": 0.3, "tag": "x"})
    local.settle(1.5)
    assert [r.snapshot().state["got"] for r in receivers] == [
        [["f", 10 + i, False]] for i in range(20)
    ]
    assert [tag for tag, _ in shop.timer.ref("t").snapshot().state["fired"]] == ["x"]
    stop = threading.Event()
    driver = threading.Thread(target=lambda: [local.run() or time.sleep(0.01)
                                              for _ in iter(stop.is_set, True)])  # fmt: skip
    driver.start()
    try:
        assert shop.fanout.ref("f").ask({"to": []}, timeout=10) == {"steps": 2}
    finally:
        stop.set()
        driver.join()
    assert not local.failures


def test_a_crash_loop_is_quarantined_by_the_tick(cbank: ModuleType, local: LocalRunner) -> None:
    ref = cbank.replaying.ledger.ref("loop")
    quarantine(local, ref, *REFUND)
    assert ref.snapshot().status == "quarantined"
    assert "loop" in actors_by_status(cbank.supervision.runtime, "replay.ledger",
                                      "quarantined")[0]  # fmt: skip


def test_the_census_counts_on_the_cluster_as_on_one_server(cbank: ModuleType,
                                                           local: LocalRunner) -> None:  # fmt: skip
    rt = cbank.supervision.runtime
    stats = {rt.keyspace.metric_keys(cbank.account.ref(f"c{i}").keys)[2] for i in range(40)}
    for key in stats:  # each census shard shares its actor's slot
        assert any(cluster_slot(_tag(key)) == cluster_slot(_tag(m.keys.meta))
                   for m in [cbank.account.ref(f"c{i}") for i in range(40)])  # fmt: skip
    for i in range(40):
        cbank.account.ref(f"c{i}").send_many([{"add": 1}, {"add": 2}])
    census = read_census(rt, ["bank.account"])["bank.account"]
    assert census.mailbox == 80 and census.actors["active"] == 40
    local.run()
    census = read_census(rt, ["bank.account"])["bank.account"]
    assert (census.mailbox, census.steps, census.actors["idle"]) == (0, 80, 40)
    first, cursor = actors_by_status(rt, "bank.account", "idle", limit=25)
    rest, end = actors_by_status(rt, "bank.account", "idle", cursor=cursor, limit=25)
    assert end == 0 and sorted(first + rest) == sorted(f"c{i}" for i in range(40))


def test_a_node_that_lost_its_scripts_loads_them_again(cbank: ModuleType, cluster: LocalCluster,
                                                       local: LocalRunner) -> None:  # fmt: skip
    refs = [cbank.account.ref(f"s{i}") for i in range(12)]
    for ref in refs:
        ref.send({"add": 1})
    local.run()
    for node in cluster.primaries():  # as after a restart or a failover of each node
        node.client().script_flush()
    for ref in refs:
        ref.send({"add": 1})
    local.run()
    assert [r.snapshot().state["balance"] for r in refs] == [2] * 12 and not local.failures


def test_a_cluster_url_is_checked_naming_the_bad_node() -> None:
    from celery import Celery

    app = Celery("cl", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.supervise_redis_url = "redis-cluster://127.0.0.1:7000,nohost"
    with pytest.raises(ConfigurationError, match="'nohost' that is not host:port"):
        Supervision(app)
    app.conf.supervise_redis_url = "redis-cluster://127.0.0.1:7000"
    app.conf.supervise_redis_options = {"reinitialize_steps": 3, "bogus": 1}
    with pytest.raises(ConfigurationError, match="'bogus' is not an option"):
        Supervision(app)


def test_the_cli_reads_status_metrics_and_actors_from_the_cluster(
    cbank: ModuleType, cluster_env: dict[str, str], local: LocalRunner
) -> None:
    for i in range(6):
        cbank.account.ref(f"cli{i}").send({"add": 1})
    local.run()
    quarantine(local, cbank.replaying.ledger.ref("q"), *REFUND)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", *args],
            env={**__import__("os").environ, **cluster_env}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    status: dict[str, Any] = json.loads(cli("status", "--json"))
    assert status, status
    scrape = cli("metrics", "--once")
    assert 'celery_supervise_actors{status="idle",type="bank.account"} 6.0' in scrape, scrape
    assert 'celery_supervise_actors{status="quarantined",type="replay.ledger"} 1.0' in scrape
    assert cli("actors", "replay.ledger", "--status", "quarantined").split() == ["q"]


def test_the_documented_cluster_settings_work(cluster: LocalCluster,
                                              supervise_redis_url: str) -> None:  # fmt: skip
    """docs/scaling.md's settings (docs/examples/cluster.py): a send and a step."""
    from celery import Celery

    from celery_supervise import actor
    from docs.examples.cluster import cluster_settings

    nodes = cluster.url.removeprefix("redis-cluster://")
    app = Celery("documented", set_as_current=False)
    app.conf.update(cluster_settings(nodes, supervise_redis_url), supervise_key_prefix="doc")
    supervision = Supervision(app)

    @actor(name="doc.counter", initial={"n": 0})
    def counter(ctx: Any, state: dict[str, int], message: int) -> dict[str, int]:
        return {"n": state["n"] + message}

    local = LocalRunner(supervision)
    try:
        supervision.ref("doc.counter", "a").send(2)
        local.run()
        assert supervision.ref("doc.counter", "a").snapshot().state == {"n": 2}
    finally:
        local.close()


def _getkeys_calls(cluster: LocalCluster) -> int:
    """``COMMAND GETKEYS`` calls on the primaries (Redis < 7 counts every ``COMMAND`` as one:
    none is sent once the clients are made)."""
    total = 0
    for node in cluster.primaries():
        with node.client() as client:
            stats = client.info("commandstats")
        counted = stats.get("cmdstat_command|getkeys", stats.get("cmdstat_command", {}))
        total += int(counted.get("calls", 0))
    return total


def test_a_pipelined_script_asks_no_node_for_its_keys(cbank: ModuleType, cluster: LocalCluster,
                                                      local: LocalRunner) -> None:  # fmt: skip
    """redis-py 8's cluster pipeline resolves an EVALSHA's keys with ``COMMAND GETKEYS`` on
    its "default node" unless told how to route it: a round trip more per script, and, once
    that node is dead, every pipeline fails though the script's own node is alive
    (test_cluster_failover.py). The keys are in the call: nothing is asked."""
    refs = [cbank.account.ref(f"g{i}") for i in range(10)]
    refs[0].send({"add": 1})
    local.run()
    before = _getkeys_calls(cluster)
    for ref in refs:
        ref.send({"add": 1})
    local.run()
    assert [r.snapshot().state["balance"] for r in refs] == [2] + [1] * 9
    assert _getkeys_calls(cluster) == before
