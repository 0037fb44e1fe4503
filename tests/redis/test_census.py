"""The census (docs/metrics.md) against a real Redis, driven by ``LocalRunner``: the counts
the scripts keep equal what a full scan of the actors finds, after sends, steps, crashes,
dead letters, requeues, quarantines and deletions; a scrape never touches an actor's own
keys; ``actors_by_status`` pages through one status without a scan; actors written before
the census are counted lazily or by ``reindex_type``."""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from celery_supervise.census import read_census, read_tick_histogram, reindex_type
from celery_supervise.errors import InvalidArgument
from celery_supervise.keyspace import STAT_SHARDS
from celery_supervise.metrics import METRIC_NAMES, exposition
from celery_supervise.ref import public_status
from celery_supervise.status import PUBLIC_STATUSES, actors_by_status
from celery_supervise.testing import LocalRunner
from tests.redis.test_replay import quarantine

TYPES = ("bank.account", "bank.poison", "replay.ledger")


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def scanned(client: redis.Redis, types: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The truth, by a full scan of every actor's keys (what the census must never need)."""
    out = {t: {"actors": dict.fromkeys(PUBLIC_STATUSES, 0), "mailbox": 0, "dead": 0}
           for t in types}  # fmt: skip
    for meta in client.scan_iter(match="t:a:*:meta", count=1000):
        fields = {k.decode(): v.decode() for k, v in client.hgetall(meta).items()}
        if fields.get("type") not in out:
            continue
        row = out[fields["type"]]
        row["actors"][public_status(fields.get("status"))] += 1
        base = meta.decode().removesuffix(":meta")
        row["mailbox"] += client.llen(base + ":mbox")
        row["dead"] += client.llen(base + ":dead")
    return out


def counted(bank: ModuleType) -> dict[str, dict[str, Any]]:
    census = read_census(bank.supervision.runtime, TYPES)
    return {
        t: {"actors": c.actors, "mailbox": c.mailbox, "dead": c.dead_letters}
        for t, c in census.items()
    }


def agrees(bank: ModuleType, redis_client: redis.Redis) -> dict[str, dict[str, Any]]:
    truth = scanned(redis_client, TYPES)
    assert counted(bank) == truth
    return truth




def test_counts_follow_sends_steps_crashes_dead_letters_and_deletions(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    rt = bank.supervision.runtime
    for key, n in (("a1", 3), ("a2", 2)):
        bank.account.ref(key).send_many([{"add": 1}] * n)
    truth = agrees(bank, redis_client)
    assert truth["bank.account"]["mailbox"] == 5
    assert truth["bank.account"]["actors"]["active"] == 2

    local.run()
    truth = agrees(bank, redis_client)
    assert truth["bank.account"]["actors"]["idle"] == 2 and truth["bank.account"]["mailbox"] == 0
    census = read_census(rt, ["bank.account"])["bank.account"]
    assert census.steps == 5 and census.step_seconds.count == 5 and census.crashes == {}

    poison = bank.poison.ref("p1")
    poison.send_many(["poison", "fine"])
    deadline = time.monotonic() + 20
    while not poison.dead_letters():
        assert time.monotonic() < deadline, poison.snapshot()
        local.run()
        local.tick()
        agrees(bank, redis_client)  # exact at every point in between too
        time.sleep(0.02)
    while poison.snapshot().version < 1:  # "fine" runs once the backoff is over
        assert time.monotonic() < deadline, poison.snapshot()
        local.run()
        local.tick()
        time.sleep(0.02)
    truth = agrees(bank, redis_client)
    assert truth["bank.poison"]["dead"] == 1
    census = read_census(rt, ["bank.poison"])["bank.poison"]
    assert census.crashes == {"exception": 3}  # max_attempts=3: three crashes, one letter
    assert census.steps == 1  # "fine"

    letter = poison.dead_letters()[0]
    poison.requeue_dead_letter(letter.message_id)
    truth = agrees(bank, redis_client)
    assert truth["bank.poison"]["dead"] == 0 and truth["bank.poison"]["mailbox"] == 1

    bank.account.ref("a2").delete()
    truth = agrees(bank, redis_client)
    assert sum(truth["bank.account"]["actors"].values()) == 1


def test_quarantine_shows_in_counts_listing_and_supervisor_counter(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    rt = bank.supervision.runtime
    for key in ("q1", "q2"):
        quarantine(local, bank.supervision.ref("replay.ledger", key), {"kind": "fee", "amount": 0})
    truth = agrees(bank, redis_client)
    assert truth["replay.ledger"]["actors"]["quarantined"] == 2
    keys, cursor = actors_by_status(rt, "replay.ledger", "quarantined")
    assert sorted(keys) == ["q1", "q2"] and cursor == 0
    scrape = exposition(rt).decode()
    assert 'celery_supervise_quarantines_total{supervisor="quarantining"} 2.0' in scrape, scrape
    assert 'celery_supervise_actors{status="quarantined",type="replay.ledger"} 2.0' in scrape

    bank.supervision.ref("replay.ledger", "q1").resume()
    agrees(bank, redis_client)
    keys, _ = actors_by_status(rt, "replay.ledger", "quarantined")
    assert keys == ["q2"]


def test_restarts_and_ticks_are_counted(bank: ModuleType, local: LocalRunner) -> None:
    rt = bank.supervision.runtime
    ref = bank.poison.ref("r1")
    ref.send("poison")
    deadline = time.monotonic() + 20
    while not ref.dead_letters():
        assert time.monotonic() < deadline
        local.run()
        local.tick()
        time.sleep(0.02)
    families = {f.name: f for f in text_string_to_metric_families(exposition(rt).decode())}
    restarts = {s.labels["supervisor"]: s.value
                for s in families["celery_supervise_restarts"].samples}  # fmt: skip
    assert restarts[bank.poison.supervisor] >= 2  # two crashes restarted before the letter
    tick = read_tick_histogram(rt)
    assert tick.count >= 3 and tick.total >= 0
    counts = {s.name: s.value for s in families["celery_supervise_tick_seconds"].samples
              if s.name.endswith("_count")}  # fmt: skip
    assert counts == {"celery_supervise_tick_seconds_count": tick.count}


def test_exposition_names_exactly_the_spec_metrics(bank: ModuleType, local: LocalRunner) -> None:
    bank.account.ref("e1").send({"add": 2})
    local.run()
    families = list(text_string_to_metric_families(exposition(bank.supervision.runtime).decode()))
    exposed = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    assert exposed == set(METRIC_NAMES)
    step = next(f for f in families if f.name == "celery_supervise_step_seconds")
    count = [s for s in step.samples
             if s.name.endswith("_count") and s.labels["type"] == "bank.account"]  # fmt: skip
    assert count[0].value == 1.0
    inf = [s for s in step.samples if s.labels.get("le") == "+Inf"
           and s.labels["type"] == "bank.account"]  # fmt: skip
    assert inf[0].value == 1.0


def test_a_scrape_reads_no_actor_key_whatever_the_number_of_actors(
    bank: ModuleType, redis_client: redis.Redis
) -> None:
    rt = bank.supervision.runtime

    def scrape_commands() -> list[str]:
        """Every command Redis saw during one scrape (MONITOR), up to a marker read."""
        with redis_client.monitor() as m:  # MONITOR is on once this returns
            exposition(rt)
            rt.client.get("t:census-test:done")
            seen: list[str] = []
            while "census-test:done" not in (command := m.next_command()["command"]):
                seen.append(command)
        return seen

    runs = {}
    for n in (10, 400):
        for i in range(n):
            bank.account.ref(f"m{n}-{i}").send({"add": 1})
        seen = scrape_commands()
        assert len(seen) > 0
        assert not [c for c in seen if ":a:{" in c]  # no key of any actor
        runs[n] = sorted(c.split()[0].upper() for c in seen)
    assert runs[10] == runs[400]  # 41 times the actors: the very same commands
    supervisors = len(rt.tree.names())
    # One HGETALL and one ZCARD per status per shard of each type, one HMGET per
    # supervisor, one HGETALL for the tick histogram: nothing grows with the actors.
    types = len(runs[10]) - supervisors - 1
    assert types == len(bank_types()) * STAT_SHARDS * 7, runs[10][:5]


def bank_types() -> list[str]:
    from celery_supervise.registry import all_types

    return list(all_types())


def test_actors_by_status_pages_without_duplicates(bank: ModuleType, local: LocalRunner) -> None:
    rt = bank.supervision.runtime
    keys = {f"p{i}" for i in range(130)}
    for key in keys:
        bank.account.ref(key).send({"add": 1})
    local.run()
    seen: list[str] = []
    cursor, pages = 0, 0
    while True:
        page, cursor = actors_by_status(rt, "bank.account", "idle", cursor=cursor, limit=50)
        seen += page
        pages += 1
        assert len(page) <= 50
        if cursor == 0:
            break
    assert sorted(seen) == sorted(keys) and pages == 3
    assert actors_by_status(rt, "bank.account", "stopped") == ([], 0)
    with pytest.raises(InvalidArgument, match="unknown status 'crashed'"):
        actors_by_status(rt, "bank.account", "crashed")
    with pytest.raises(InvalidArgument, match="limit must be"):
        actors_by_status(rt, "bank.account", "idle", limit=0)
    with pytest.raises(InvalidArgument, match="not one this listing returned"):
        actors_by_status(rt, "bank.account", "idle", cursor=2**40 * 1000)


def test_actors_written_before_the_census_are_counted_lazily_or_by_reindex(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    rt = bank.supervision.runtime
    for key in ("o1", "o2", "o3"):
        bank.account.ref(key).send({"add": 1})
    local.run()
    bank.account.ref("o3").send({"add": 1})  # o3 has a message queued
    # As an older version left them: no census fields, no census keys.
    for meta in redis_client.scan_iter(match="t:a:*:meta"):
        redis_client.hdel(meta, "n_status", "n_mbox", "n_dead")
    for key in redis_client.scan_iter(match="t:stats:*"):
        redis_client.delete(key)
    assert read_census(rt, ["bank.account"])["bank.account"].actors["idle"] == 0

    bank.account.ref("o1").send({"add": 1})  # touched: counted from now on
    census = read_census(rt, ["bank.account"])["bank.account"]
    assert census.actors["active"] == 1 and census.mailbox == 1

    assert reindex_type(rt, "bank.account") == 3
    agrees(bank, redis_client)
    assert reindex_type(rt, "bank.account") == 3  # idempotent
    truth = agrees(bank, redis_client)
    assert truth["bank.account"]["mailbox"] == 2
