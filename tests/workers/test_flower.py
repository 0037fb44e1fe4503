"""SPEC 5 (Flower): a real Flower, fed by a real worker (``-E``) and beat, shows what
celery_supervise does as ordinary tasks -- through its HTTP API, ``/api/tasks``.

- actor steps and ticks are listed by readable names (``bank.account``,
  ``celery_supervise.tick``), an actor step's only argument being the actor's key;
- a crashed step is a FAILURE task whose traceback holds the handler's own exception;
- an isolated subtask is a ``celery_supervise.isolated`` task naming the actor, its tag and
  the user's task, its result the outcome's summary; an escalation's decisions (the
  supervisor failing to its parent) show in a tick result;
- dead letters show in the failed task's exception (``-- dead-lettered after 3 attempts``),
  restarts and quarantines in the tick tasks' results (their ``decisions``), and a run the
  tick sent after a restart has that tick as its parent.

Runs in about 10 s; the waits are generous for a loaded machine.
"""

from __future__ import annotations

import ast
import json
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.harness import PROJECT_ROOT, CeleryProcess, wait_until

BANK = "tests.apps.bank"
TICK = "celery_supervise.tick"

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def flower(bank: ModuleType, bank_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A real ``celery flower`` on a free loopback port, its API open; yields its URL."""
    port = _free_port()
    proc = CeleryProcess(
        BANK,
        "--address=127.0.0.1",
        f"--port={port}",
        name="flower",
        env={**bank_env, "FLOWER_UNAUTHENTICATED_API": "true"},
        cwd=str(PROJECT_ROOT),
        log_dir=tmp_path,
    ).start()
    try:
        proc.wait_ready(60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()


def _tasks(url: str, **params: Any) -> list[dict[str, Any]]:
    """``GET /api/tasks`` (Flower's task list, built from task events), as a list."""
    query = urllib.parse.urlencode({"limit": 5000, **params})
    with urllib.request.urlopen(f"{url}/api/tasks?{query}", timeout=10) as response:
        found: dict[str, dict[str, Any]] = json.load(response)
    return [{"uuid": uuid, **task} for uuid, task in found.items()]


def _args(task: dict[str, Any]) -> list[Any]:
    """A task's positional arguments as Flower shows them (a repr: ``"('k1',)"``)."""
    return list(ast.literal_eval(task["args"]))


def _result(task: dict[str, Any]) -> Any:
    """A task's result as Flower shows it (the event carries its repr): parsed back."""
    try:
        return ast.literal_eval(task.get("result") or "None")
    except (ValueError, SyntaxError):
        return None  # truncated by Celery's result repr limit: not parseable


def _at_least(n: int, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return tasks if len(tasks) >= n else []


def _decisions(url: str) -> list[dict[str, Any]]:
    """Every decision listed in the results of the ticks Flower has seen."""
    found = []
    for task in _tasks(url, taskname=TICK, state="SUCCESS"):
        result = _result(task)
        if isinstance(result, dict):
            found += result.get("decisions", [])
    return found


def test_flower_shows_steps_ticks_crashes_and_supervision_decisions(
    bank: ModuleType, flower: str, workers: Any, beat: Any
) -> None:
    workers("w1", concurrency=2, extra=("-E",))  # -E: task events, which Flower reads
    # Flower subscribes to events as it starts: once it lists a tick, it sees everything.
    wait_until(lambda: _tasks(flower, taskname=TICK), 30, interval=0.3,
               message="Flower lists no tick task")

    account = bank.supervision.ref("bank.account", "k1")
    for n in range(3):
        account.send({"add": n + 1})
    poison = bank.supervision.ref("bank.poison", "p1")
    poison.send("before")
    poison.send("poison", message_id="poison-1")
    poison.send("after")
    loop = bank.supervision.ref("tree.worker", "loop")
    loop.send("crash", message_id="crash-1")
    isolator = bank.supervision.ref("tree.isolator", "iso")
    isolator.send("charge-f")  # an isolated subtask: tree.count_calls("charge-f", 0.5)
    bank.supervision.ref("tree.dynamic", "esc").send("crash")  # dynesc escalates to root

    wait_until(lambda: account.snapshot().state == {"balance": 6, "seen": []}, 30,
               message="bank.account k1 did not commit its 3 messages")
    wait_until(lambda: poison.snapshot().state == {"applied": ["before", "after"]}, 40,
               message="bank.poison p1 did not go past its poison message")
    wait_until(lambda: loop.snapshot().status == "quarantined", 40,
               message="the crash-looping tree.worker was not quarantined")

    # -- actor steps: named after the actor type, the actor's key their only argument --
    def account_steps() -> list[dict[str, Any]]:
        done = [t for t in _tasks(flower, taskname="bank.account") if t["state"] == "SUCCESS"]
        # A task run handles several queued messages: its result counts the committed steps.
        return done if sum(_result(t)["committed"] for t in done) == 3 else []

    steps = wait_until(account_steps, 20, interval=0.3,
                       message="Flower does not list the bank.account runs of 3 steps")
    assert all(t["name"] == "bank.account" for t in steps)
    assert all(_args(t) == ["k1"] for t in steps), [t["args"] for t in steps]
    assert all(t["kwargs"] == "{}" for t in steps), steps  # messages are not task arguments
    assert all("'add'" not in (t["args"] + t["kwargs"]) for t in steps)
    for summary in map(_result, steps):
        assert summary["actor"] == "bank.account" and summary["key"] == "k1", summary

    # -- ticks: listed by name, succeeded, no arguments, a result summarising the tick --
    ticks = _tasks(flower, taskname=TICK)
    assert ticks and all(t["name"] == TICK and _args(t) == [] for t in ticks), ticks[:3]
    assert any(t["state"] == "SUCCESS" and "ms" in (_result(t) or {}) for t in ticks), ticks[:3]

    # -- a crash: a FAILURE task, StepCrashed chained to the handler's own exception --
    def poison_failures() -> list[dict[str, Any]]:
        return [t for t in _tasks(flower, taskname="bank.poison", state="FAILURE")
                if "poison-1" in (t.get("exception") or "")]

    failed = wait_until(lambda: _at_least(3, poison_failures()), 20, interval=0.3,
                        message="Flower does not list the 3 crashed attempts at the poison")
    assert all(_args(t) == ["p1"] for t in failed), [t["args"] for t in failed]
    for task in failed:
        assert task["exception"].startswith("StepCrashed("), task["exception"]
        assert "ValueError: poison message" in task["exception"]
        # The traceback is the chain: the handler's raise, then the StepCrashed it caused.
        tb = task["traceback"]
        assert "ValueError: poison message" in tb, tb
        assert 'raise ValueError("poison message")' in tb, tb
        assert "The above exception was the direct cause" in tb, tb
        assert "celery_supervise.runner.StepCrashed" in tb or "StepCrashed:" in tb, tb
    # A retry after a crash is sent by the tick that restarted the actor: its parent.
    tick_ids = {t["uuid"] for t in _tasks(flower, taskname=TICK)}
    retries = [t for t in failed if "attempt 1 crashed" not in t["exception"]]
    assert retries and all(t["parent_id"] in tick_ids for t in retries), (
        [t["parent_id"] for t in retries])
    # -- a dead letter: the last attempt's failure says so --
    dead = [t for t in failed if "dead-lettered after 3 attempts" in t["exception"]]
    assert len(dead) == 1, [t["exception"] for t in failed]
    assert "attempt 3 crashed" in dead[0]["exception"]

    # The crash loop: its failed steps, with the handler's RuntimeError.
    looped = wait_until(
        lambda: _at_least(4, [t for t in _tasks(flower, taskname="tree.worker", state="FAILURE")
                              if _args(t) == ["loop"]]),
        20, interval=0.3, message="Flower does not list the 4 crashes of the crash loop")
    assert all("RuntimeError: crash requested" in t["traceback"] for t in looped)

    # -- supervision decisions: in the results of the ticks that made them --
    def decided() -> list[dict[str, Any]]:
        found = _decisions(flower)
        actions = {(d.get("action"), d.get("child")) for d in found}
        wanted = {("restart", "tree.worker:loop"), ("quarantine", "tree.worker:loop"),
                  ("restart", "bank.poison:p1")}
        return found if wanted <= actions else []

    decisions = wait_until(decided, 20, interval=0.5,
                           message="tick results in Flower lack the restart/quarantine decisions")
    quarantine = next(d for d in decisions  # the escalating dynesc adds others: root's
                      if d.get("action") == "quarantine" and d.get("child") == "tree.worker:loop")
    assert quarantine["event"] == "decision" and quarantine["supervisor"] == "quarantining", (
        quarantine)
    assert any(d["event"] == "restarted" and (d["actor"], d["key"]) == ("tree.worker", "loop")
               for d in decisions), decisions
    restarts = [d for d in decisions
                if d.get("action") == "restart" and d.get("child") == "tree.worker:loop"]
    assert len(restarts) >= 3, restarts  # intensity 3 in 5 s: the 4th crash quarantines

    # -- an isolated subtask: the wrapper task, readable args (actor, key, id, tag, task) --
    wait_until(lambda: isolator.snapshot().state["outcomes"], 30,
               message="tree.isolator got no outcome")
    (iso,) = wait_until(
        lambda: [t for t in _tasks(flower, taskname="celery_supervise.isolated")
                 if t["state"] == "SUCCESS"], 20, interval=0.3,
        message="Flower does not list the isolated subtask")
    type_name, key, iso_id, tag, task_name = _args(iso)
    assert (type_name, key, tag, task_name) == ("tree.isolator", "iso", "charge-f",
                                                "tree.count_calls"), iso["args"]
    assert iso_id.startswith("tree.isolator:iso@"), iso_id
    assert "'args': ['charge-f', 0.5]" in iso["kwargs"], iso["kwargs"]
    assert _result(iso) == {"tag": "charge-f", "ok": True, "delivered": True}, iso["result"]

    # -- an escalation: dynesc over its limit fails to root, in a tick's decisions --
    def escalated() -> list[dict[str, Any]]:
        return [d for d in _decisions(flower) if d.get("action") == "notify_parent"
                and d.get("notice") == "escalated" and d.get("supervisor") == "dynesc"]

    (notice, *_) = wait_until(escalated, 30, interval=0.5,
                              message="tick results in Flower lack the dynesc escalation")
    assert notice["event"] == "decision", notice
