"""SPEC 5: ``celery -A proj supervise ...``, run as the real command in a subprocess against
the bank test app, its Redis, and (where steps must run) a real worker. Ticks are driven by
``supervise tick`` itself; no beat runs, so each tick's effect is the command's own."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import redis

from tests.harness import PROJECT_ROOT, wait_until

BANK = "tests.apps.bank"


def _env(bank_env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    env = {**os.environ, **bank_env, **overrides}
    env["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys([str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(":"))])
    )
    return env


def run(env: Mapping[str, str], *args: str, app: str = BANK) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", app, "supervise", *args],
        env=dict(env),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(env: Mapping[str, str], *args: str) -> str:
    proc = run(env, *args)
    assert proc.returncode == 0, f"supervise {args} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def ok_json(env: Mapping[str, str], *args: str) -> Any:
    return json.loads(ok(env, *args, "--json"))


def fails(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """A clear one-line ``Error: ...`` on stderr, no traceback, the given exit code."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- without Redis state -------------------------------------------------------------------------
def test_plugin_is_listed_and_importing_it_does_nothing(bank_env: dict[str, str]) -> None:
    env = _env(bank_env)
    help_text = ok(env, "--help")
    for command in ("status", "actor", "dead-letters", "resume", "restart", "tick"):
        assert re.search(rf"^\s+{command}\s", help_text, re.M), help_text
    # Every `celery` command imports every plugin: the import must connect nothing, register
    # no signal handler and leave the runtime (tick, tree shell) unimported.
    probe = """
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("connection opened at import time")
socket.socket.connect = socket.socket.connect_ex = refuse
from celery import signals
from celery.utils.dispatch import Signal
def receivers():
    return {n: len(s.receivers) for n, s in vars(signals).items() if isinstance(s, Signal)}
before = receivers()
import celery_supervise.cli
assert receivers() == before, (before, receivers())
loaded = {"celery_supervise.tick", "celery_supervise.tree_shell", "celery_supervise.runner"}
assert not loaded & set(sys.modules), loaded & set(sys.modules)
"""
    subprocess.run([sys.executable, "-c", probe], env=env, cwd=PROJECT_ROOT, check=True, timeout=60)
    # Another app's commands keep working, and supervise says what is missing there.
    plain = "tests.apps.plain_app"
    report = subprocess.run(
        [sys.executable, "-m", "celery", "-A", plain, "report"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    fails(run(env, "status", app=plain), 1, "not installed", "plain_app")


def test_status_shows_the_tree(bank: ModuleType, bank_env: dict[str, str]) -> None:
    env = _env(bank_env)
    tree = bank.supervision.tree
    report = ok_json(env, "status")
    nodes = {n["name"]: n for n in report["supervisors"]}
    assert [n["name"] for n in report["supervisors"]] == list(tree.names())
    assert report["recent_events"] == [] and report["key_prefix"] == "t"
    # The actor types the CLI's process knows: the bank app's (this test process has
    # imported others, e.g. the docs examples).
    known = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, tests.apps.bank; from celery_supervise.registry "
         "import all_types; print(json.dumps({t: a.supervisor for t, a in all_types().items()}))"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout)  # fmt: skip

    for name, node in nodes.items():
        spec = tree.spec(name)
        assert node["status"] == "running" and node["reason"] is None
        assert (node["strategy"], node["intensity"], node["period"], node["on_limit"]) == (
            spec.strategy, spec.intensity, spec.period, spec.on_limit,
        )  # fmt: skip
        assert [c["child"] for c in node["children"]] == list(tree.static_children(name))
        for child in node["children"]:
            assert child.get("status", "absent") == "absent"  # no actor has a message yet
        assert node["restarts"] == {"in_period": 0, "kept": 0, "recent": []}
        assert node["flagged"] == {"count": 0, "shown": [], "quarantined": 0}
        assert set(node["actors"]) == {"idle", "active", "backoff", "stopped", "quarantined"}
        assert sum(node["actors"].values()) == 0
        if spec.parent is not None:
            assert node["depth"] == nodes[spec.parent]["depth"] + 1
        expected = sorted(t for t, supervisor in known.items() if supervisor == name)
        assert node["actor_types"] == expected
    assert "bank.account" in nodes["root"]["actor_types"]

    text = ok(env, "status")
    assert text.startswith("Supervision tree (key prefix 't'")
    assert "No decisions yet." in text
    indent = {}
    for name in tree.names():
        match = re.search(rf"^( *){re.escape(name)}  running$", text, re.M)
        assert match, (name, text)
        indent[name] = len(match.group(1))
        parent = tree.parent(name)
        if parent is not None:
            assert indent[name] > indent[parent], text  # drawn under its parent
    assert re.search(r"^  actor types: .*bank\.account", text, re.M), text

    # An actor with no message yet: shown as absent, not an error.
    assert ok_json(env, "actor", "bank.account", "nobody")["exists"] is False
    assert "no such actor yet" in ok(env, "actor", "bank.account", "nobody")


def test_resume_supervisor(
    bank: ModuleType, bank_env: dict[str, str], redis_client: redis.Redis
) -> None:
    env = _env(bank_env)
    tree = bank.supervision.tree
    target = next((n for n in tree.names() if tree.parent(n) == "root"), "root")
    redis_client.hset(
        bank.supervision.keyspace.supervisor(target),
        mapping={"status": "stopped", "reason": "escalated:test"},
    )
    assert re.search(rf"^ *{target}  stopped \(escalated:test\)$", ok(env, "status"), re.M)
    said = ok(env, "resume", target)
    assert f"resumed supervisor {target}" in said, said
    node = next(n for n in ok_json(env, "status")["supervisors"] if n["name"] == target)
    assert node["status"] == "running"
    result = ok_json(env, "resume", "root")
    assert result["kind"] == "supervisor" and result["outcome"] == "resumed"
    assert result["subtree"] == list(tree.subtree("root"))
    events = [e["event"] for e in ok_json(env, "status")["recent_events"]]
    assert events.count("resume_supervisor") == 2


def test_errors_are_one_line_and_nonzero(bank: ModuleType, bank_env: dict[str, str]) -> None:
    env = _env(bank_env)
    bank.poison.ref("q").send("queued, never run")  # exists, has no dead letters
    down = _env(bank_env, TEST_BROKER_URL=f"redis://127.0.0.1:{_free_port()}/0")
    cases: list[tuple[Mapping[str, str], tuple[str, ...], int, tuple[str, ...]]] = [
        (env, ("actor", "bank.nope", "k"), 1, ("no actor type named 'bank.nope'",)),
        (env, ("actor", "bank.nope", "k", "--json"), 1, ("no actor type named",)),
        (env, ("actor", "bank.account", ""), 1, ("actor key must not be empty",)),
        (env, ("restart", "bank.account", "x" * 201), 1, ("201 characters",)),
        (env, ("resume", "nosuch"), 1, ("unknown supervisor 'nosuch'",)),
        (env, ("resume", "bank.account:ghost"), 1, ("bank.account:ghost does not exist",)),
        (env, ("restart", "bank.account", "ghost", "--reset", "--json"), 1, ("does not exist",)),
        (env, ("dead-letters", "bank.poison", "q", "--requeue", "nope"), 1,
         ("bank.poison:q has no dead letter 'nope'",)),
        (down, ("status",), 69, ("cannot reach Redis at redis://127.0.0.1:",)),
        (down, ("tick", "--json"), 69, ("cannot reach Redis",)),
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=5) as pool:
        procs = list(pool.map(lambda case: run(case[0], *case[1]), cases))
    for (_, args, code, needles), proc in zip(cases, procs, strict=True):
        try:
            fails(proc, code, *needles)
        except AssertionError as exc:
            raise AssertionError(f"supervise {' '.join(args)}: {exc}") from None
    usage = run(env, "restart", "bank.account")  # click's own usage error
    assert usage.returncode == 2 and "Missing argument 'KEY'" in usage.stderr
    assert bank.poison.ref("q").snapshot().pending == 1  # nothing changed


# -- with a worker -------------------------------------------------------------------------------
def test_actor_restart_resume(bank: ModuleType, bank_env: dict[str, str], workers: Any) -> None:
    env = _env(bank_env)
    workers("cli", concurrency=1)
    ref = bank.account.ref("a1")
    ref.send({"add": 5})
    ref.send({"add": 7})
    wait_until(lambda: ref.snapshot().version == 2, 30, message="two steps not committed")

    text = ok(env, "actor", "bank.account", "a1")
    assert re.search(r"status\s+idle", text) and re.search(r"version\s+2$", text, re.M), text
    assert re.search(r"dead letters\s+0", text) and '"balance": 12' in text
    assert re.search(r"^    v2 .* message \w+", text, re.M) and "    v1 " in text, text
    report = ok_json(env, "actor", "bank.account", "a1", "-n", "1")
    assert report["exists"] and report["state"] == {"balance": 12, "seen": []}
    assert (report["version"], report["status"], report["pending"]) == (2, "idle", 0)
    assert report["supervisor"] == bank.account.supervisor and report["last_crash"] is None
    assert [h["version"] for h in report["history"]] == [2]

    # Without --reset a running actor is left alone (recovery last_good needs a halt): a
    # refused operator action, exit code 1 with one line saying why.
    fails(run(env, "restart", "bank.account", "a1"), 1, "is idle", "--reset restarts any")
    assert ref.snapshot().version == 2
    refused = run(env, "restart", "bank.account", "a1", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["outcome"] == "skipped"
    said = ok(env, "restart", "bank.account", "a1", "--reset")
    assert "restarted bank.account:a1 (reset) at version 3: now idle" in said, said
    snap = ref.snapshot()
    assert snap.state == {"balance": 0, "seen": []} and snap.version == 3
    assert ref.history()[0].reset and ref.history()[1].state["balance"] == 12  # old kept
    result = ok_json(env, "restart", "bank.account", "a1", "--reset")
    assert result == {"actor": "bank.account:a1", "recovery": "reset",
                      "outcome": "restarted", "status": "idle", "version": 4}  # fmt: skip

    ref.stop()
    assert "status               stopped (operator)" in ok(env, "actor", "bank.account", "a1")
    ref.send({"add": 1})  # queued while stopped
    said = ok(env, "resume", "bank.account:a1")
    assert said.startswith("resumed bank.account:a1 from its last good state"), said
    wait_until(lambda: ref.snapshot().version == 5, 30, message="resumed actor did not run")
    assert ref.snapshot().state["balance"] == 1
    result = ok_json(env, "resume", "bank.account:a1")
    assert (result["kind"], result["outcome"], result["status"]) == ("actor", "skipped", "idle")
    assert "nothing to resume" in ok(env, "resume", "bank.account:a1")


def test_dead_letters_ticks_and_status(
    bank: ModuleType, bank_env: dict[str, str], workers: Any
) -> None:
    env = _env(bank_env)
    workers("cli", concurrency=2)
    refs = [bank.poison.ref("p1"), bank.poison.ref("p2")]
    for ref in refs:
        ref.send("poison")
        ref.send("fine")
    first = ok(env, "tick")
    assert re.fullmatch(
        r"tick: \d+ due actor\(s\) visited( \(.*\))? in \d+ ms\n(  \{.*\}\n)*", first
    ), first
    summaries = []

    def settled() -> bool:
        summaries.append(ok_json(env, "tick"))
        return all(r.dead_letters() and r.snapshot().state == {"applied": ["fine"]} for r in refs)

    wait_until(settled, 40, interval=0.1, message="poison was not dead-lettered")
    assert all(isinstance(s, dict) and "ms" in s for s in summaries), summaries
    assert any("restarted" in s for s in summaries), summaries

    text = ok(env, "dead-letters", "bank.poison", "p1")
    letter = refs[0].dead_letters()[0]
    assert text.startswith("bank.poison:p1: 1 dead letter(s)"), text
    assert f"- message {letter.message_id}" in text and "message: poison" in text
    for attempt in (1, 2, 3):
        assert re.search(
            rf"crash {attempt}: ValueError: poison message \(attempt {attempt}, worker cli@", text
        ), text
    assert "Traceback" not in text  # only in --json
    data = ok_json(env, "dead-letters", "bank.poison", "p1")
    (dead,) = data["dead_letters"]
    assert dead["message_id"] == letter.message_id and dead["message"] == "poison"
    assert [c["attempt"] for c in dead["crashes"]] == [1, 2, 3]
    for crash in dead["crashes"]:
        assert crash["type"] == "ValueError" and crash["worker"].startswith("cli@")
        assert "ValueError: poison message" in crash["traceback"]

    report = ok_json(env, "actor", "bank.poison", "p1")
    assert report["dead_letters"] == 1 and report["last_crash"]["type"] == "ValueError"
    assert "dead letters         1" in ok(env, "actor", "bank.poison", "p1")

    status = ok_json(env, "status")
    owner = bank.supervision.tree.supervisor_of_actor("bank.poison:p1", bank.poison.supervisor)
    node = next(n for n in status["supervisors"] if n["name"] == owner)
    children = {r["child"] for r in node["restarts"]["recent"]}
    assert {"bank.poison:p1", "bank.poison:p2"} <= children and node["restarts"]["kept"] >= 4
    events = status["recent_events"]
    assert 0 < len(events) <= 20 and events == sorted(events, key=lambda e: e["id"])
    kinds = {e["event"] for e in events}
    assert {"crash", "decision", "restarted"} <= kinds, kinds
    text = ok(env, "status")
    assert re.search(r"restarts: \d+ in the last [\d.]+ s \(\d+ kept\)", text), text
    assert re.search(r"^ +\S.* bank\.poison:p[12]  \(exit bank\.poison:p[12]#\d+\)$", text, re.M)
    assert re.search(r"crash  actor=bank\.poison key=p[12] .*dead_lettered=true", text), text
    assert re.search(r"decision  exit_id=bank\.poison:p[12]#\d+ reason=crash", text), text

    said = ok(env, "dead-letters", "bank.poison", "p1", "--requeue", letter.message_id)
    assert f"requeued {letter.message_id!r}" in said and "(0 dead letter(s) left)" in said
    other = refs[1].dead_letters()[0].message_id
    result = ok_json(env, "dead-letters", "bank.poison", "p2", "--requeue", other)
    assert result == {"actor": "bank.poison:p2", "requeued": other, "dead_letters": 0}

    def retried() -> bool:  # back in the mailbox: the worker tries it again (a fresh attempt)
        return all((r.snapshot().last_crash or {}).get("attempt") == 1 for r in refs)

    wait_until(retried, 30, message="requeued messages were not retried")
    assert ok_json(env, "dead-letters", "bank.poison", "p1")["dead_letters"] == []


def test_dead_letters_without_an_actor_lists_the_actors_holding_them(
    bank: ModuleType, bank_env: dict[str, str], supervise_runner: Any
) -> None:
    local = supervise_runner(bank.supervision)
    for key in ("x1", "x2"):
        bank.poison.ref(key).send("poison")
    bank.poison.ref("clean").send("fine")
    local.settle(3.0)
    listing = json.loads(ok(bank_env, "dead-letters", "--json"))
    assert sorted((a["key"], a["dead_letters"]) for a in listing["actors"]) == [
        ("x1", 1),
        ("x2", 1),
    ]
    text = ok(bank_env, "dead-letters")
    assert "2 actor(s) hold dead letters (at most 10000 each" in text
    assert "bank.poison x1: 1\n" in text and "(full" not in text
    assert listing["max_dead_letters"] == 10000


def test_dead_letters_shows_the_cap_and_the_actors_quarantined_for_it(
    bank: ModuleType, bank_env: dict[str, str], supervise_runner: Any
) -> None:
    from celery_supervise.store import ActorStore

    local = supervise_runner(bank.supervision)
    for key in ("full", "one"):
        bank.poison.ref(key).send("poison")
    local.settle(3.0)
    # As record_crash leaves an actor whose dead letters are full (the path itself is
    # tests/redis/test_dead_letter_cap.py): quarantined for it, the message kept.
    keys = bank.poison.ref("full").keys
    ActorStore(bank.supervision.runtime).halt(keys, "quarantined", reason="dead_letters_full")
    env = _env(bank_env, TEST_MAX_DEAD_LETTERS="1")
    text = ok(env, "dead-letters")
    assert "(at most 1 each: supervise_max_dead_letters)" in text
    assert "bank.poison full: 1 (full: quarantined, dead_letters_full)" in text
    assert "bank.poison one: 1 (full)\n" in text
    assert "1 actor(s) quarantined: dead_letters_full" in text
    listing = ok_json(env, "dead-letters")
    assert listing["max_dead_letters"] == 1
    flags = {a["key"]: (a["full"], a["quarantined"]) for a in listing["actors"]}
    assert flags == {"full": (True, True), "one": (True, False)}


# -- the census: metrics, actors by status, quarantined actors in status -----------------------
def test_metrics_once_http_actors_by_status_and_quarantined_in_status(
    bank: ModuleType, bank_env: dict[str, str], supervise_runner: Any
) -> None:
    """No worker: the actors are stepped in this process (LocalRunner) and the commands,
    real subprocesses, read what the census holds."""
    from tests.redis.test_census import quarantine

    env = _env(bank_env)
    local = supervise_runner(bank.supervision)
    for key in ("c1", "c2", "c3"):
        bank.account.ref(key).send({"add": 1})
    local.run()
    ledger = bank.supervision.ref("replay.ledger", "q1")
    quarantine(local, ledger, {"kind": "fee", "amount": 0})
    bank.account.ref("c1").send({"add": 1})  # one queued, not run

    scrape = ok(env, "metrics", "--once")
    assert 'celery_supervise_actors{status="idle",type="bank.account"} 2.0' in scrape, scrape
    assert 'celery_supervise_actors{status="active",type="bank.account"} 1.0' in scrape
    assert 'celery_supervise_mailbox_messages{type="bank.account"} 1.0' in scrape
    assert 'celery_supervise_steps_total{type="bank.account"} 3.0' in scrape
    assert 'celery_supervise_actors{status="quarantined",type="replay.ledger"} 1.0' in scrape

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", BANK, "supervise", "metrics",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.strip() == f"serving metrics on http://127.0.0.1:{port}/metrics", line
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
            body = reply.read().decode()
            assert reply.status == 200
        assert 'celery_supervise_steps_total{type="bank.account"} 3.0' in body, body
        assert "celery_supervise_tick_seconds_count" in body
    finally:
        server.terminate()
        server.wait(timeout=30)

    listed = ok_json(env, "actors", "replay.ledger", "--status", "quarantined")
    assert listed == {"type": "replay.ledger", "status": "quarantined", "keys": ["q1"],
                      "cursor": 0}  # fmt: skip
    page = ok_json(env, "actors", "bank.account", "--status", "idle", "--limit", "1")
    assert len(page["keys"]) == 1 and page["cursor"] != 0
    rest = ok_json(env, "actors", "bank.account", "--status", "idle",
                   "--cursor", str(page["cursor"]))  # fmt: skip
    assert sorted(page["keys"] + rest["keys"]) == ["c2", "c3"] and rest["cursor"] == 0
    assert ok(env, "actors", "replay.ledger", "--status", "quarantined") == "q1\n"
    fails(run(env, "actors", "nosuch.type", "--status", "idle"), 1, "nosuch.type")

    report = ok_json(env, "status")
    node = next(n for n in report["supervisors"] if n["name"] == "quarantining")
    assert node["flagged"]["quarantined"] == 1 and node["flagged"]["count"] >= 1
    assert "replay.ledger:q1" in node["flagged"]["shown"]
    assert node["actors"]["quarantined"] == 1
    text = ok(env, "status")
    assert re.search(r"stopped/crashed/quarantined actors: \d+, 1 quarantined", text), text

    assert ok_json(env, "reindex", "bank.account") == {"type": "bank.account", "actors": 3}
