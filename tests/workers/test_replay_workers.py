"""Replay before release with real processes: a bug in a worker quarantines actors; a worker
restarted with the fix takes over; ``celery -A ... supervise replay`` (its own process,
running the fixed code) reports, writes nothing, and with ``--release`` lets exactly the
proven actors run on the worker."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from tests.conftest import BANK
from tests.harness import CeleryProcess, start_worker, wait_until
from tests.redis.test_replay import image
from tests.workers.test_cli import _env, fails, run

LEDGER = "replay.ledger"


@pytest.fixture
def deploy(bank: ModuleType, tmp_path: Path) -> Iterator[Callable[..., CeleryProcess]]:
    """``deploy(name, env)``: a real worker running the code ``env["TEST_FIX"]`` selects."""
    started: list[CeleryProcess] = []

    def start(name: str, env: dict[str, str]) -> CeleryProcess:
        proc = start_worker(BANK, concurrency=2, hostname=f"{name}@%h", env=env,
                            log_dir=tmp_path)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def _quarantine_three(
    bank: ModuleType, deploy: Callable[..., CeleryProcess], beat: CeleryProcess,
    fixed_env: dict[str, str], failing: dict[str, str],
) -> CeleryProcess:  # fmt: skip
    """The bug (TEST_FIX empty) quarantines one ledger per ``failing`` kind; returns the
    worker started after it with the fix ``fixed_env["TEST_FIX"]`` names."""
    buggy = deploy("buggy", {**fixed_env, "TEST_FIX": ""})
    for key, kind in failing.items():
        bank.replaying.ledger.ref(key).send_many([
            {"kind": "deposit", "amount": 10}, {"kind": kind, "amount": 3},
            {"kind": "deposit", "amount": 5},
        ])  # fmt: skip
    refs = [bank.replaying.ledger.ref(key) for key in failing]
    wait_until(lambda: all(r.snapshot().status == "quarantined" for r in refs), timeout=60)
    buggy.kill()
    beat.kill()  # the tick writes its lock: stop it, so Redis stays still for the compare
    return deploy("fixed", fixed_env)


def test_replay_proves_the_fix_then_release_drains_the_mailboxes(
    bank: ModuleType, deploy: Callable[..., CeleryProcess], beat: CeleryProcess,
    bank_env: dict[str, str], redis_client: redis.Redis,
) -> None:  # fmt: skip
    fixed_env = {**bank_env, "TEST_FIX": "refund,fee"}
    failing = {"w0": "refund", "w1": "fee", "w2": "refund"}
    _quarantine_three(bank, deploy, beat, fixed_env, failing)
    env = _env(fixed_env)
    before = image(redis_client)
    proc = run(env, "replay", LEDGER, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert image(redis_client) == before  # byte-identical: nothing written, nothing run
    assert (report["replayed"], report["succeeded"]) == (3, 3)
    by_actor = {r["actor"]: r for r in report["results"]}
    assert by_actor[f"{LEDGER}:w0"]["new_state"] == {"balance": 7, "kinds": ["deposit", "refund"]}
    assert by_actor[f"{LEDGER}:w0"]["effects"]["sends"][0]["to"] == f"{LEDGER}:audit"
    assert by_actor[f"{LEDGER}:w1"]["new_state"]["balance"] == 7
    text = run(env, "replay", LEDGER)
    assert text.returncode == 0 and "3 of 3 replay(s) succeeded" in text.stdout, text.stdout

    released = run(env, "replay", LEDGER, "--release", "--json")
    assert released.returncode == 0, released.stderr
    assert {r["released"] for r in json.loads(released.stdout)["results"]} == {"resumed"}

    def drained() -> bool:
        snaps = [bank.replaying.ledger.ref(k).snapshot() for k in failing]
        return all((s.status, s.pending) == ("idle", 0) for s in snaps)

    wait_until(drained, timeout=30)
    for key, kind in failing.items():
        state = bank.replaying.ledger.ref(key).snapshot().state
        assert state == {"balance": 12, "kinds": ["deposit", kind, "deposit"]}


def test_a_partial_fix_releases_only_what_it_handles(
    bank: ModuleType, deploy: Callable[..., CeleryProcess], beat: CeleryProcess,
    bank_env: dict[str, str], redis_client: redis.Redis,
) -> None:  # fmt: skip
    fixed_env = {**bank_env, "TEST_FIX": "refund"}  # fees still crash
    failing = {"p0": "refund", "p1": "fee", "p2": "refund"}
    _quarantine_three(bank, deploy, beat, fixed_env, failing)
    env = _env(fixed_env)
    untouched = bank.replaying.ledger.ref("p1")
    p1_keys = [k for k in image(redis_client) if b"p1}" in k]
    p1_before = {k: v for k, v in image(redis_client).items() if k in p1_keys}
    proc = run(env, "replay", LEDGER, "--release", "--json")
    assert proc.returncode == 1, proc.stderr  # not every replay succeeded
    results = {r["actor"]: r for r in json.loads(proc.stdout)["results"]}
    assert {a: (r["ok"], r["released"]) for a, r in results.items()} == {
        f"{LEDGER}:p0": (True, "resumed"),
        f"{LEDGER}:p1": (False, "failed"),
        f"{LEDGER}:p2": (True, "resumed"),
    }
    error: dict[str, Any] = results[f"{LEDGER}:p1"]["error"]
    assert error["type"] == "KeyError" and "'fee'" in error["traceback"]

    def drained() -> bool:
        snaps = [bank.replaying.ledger.ref(k).snapshot() for k in ("p0", "p2")]
        return all((s.status, s.pending) == ("idle", 0) for s in snaps)

    wait_until(drained, timeout=30)
    assert bank.replaying.ledger.ref("p0").snapshot().state["balance"] == 12
    snap = untouched.snapshot()
    assert (snap.status, snap.pending, snap.version) == ("quarantined", 2, 1)
    assert {k: v for k, v in image(redis_client).items() if k in p1_keys} == p1_before


def test_bad_input_is_one_clear_line(bank: ModuleType, bank_env: dict[str, str]) -> None:
    env = _env(bank_env)
    fails(run(env, "replay", "replay.nope"), 1, "no actor type named 'replay.nope'")
    fails(run(env, "replay", LEDGER, "ghost"), 1, "replay.ledger:ghost does not exist")
    fails(run(env, "replay", LEDGER, "--message", "m1"), 1, "--message ID", "TYPE KEY")
    bank.replaying.ledger.ref("busy").send({"kind": "deposit", "amount": 1})  # no worker
    fails(run(env, "replay", LEDGER, "busy"), 1, "replay.ledger:busy is active, not quarantined")
    fails(run(env, "replay", LEDGER, "busy", "--message", "m1"), 1, "has no dead letter 'm1'")
    empty = run(env, "replay", LEDGER)
    assert empty.returncode == 0 and "No quarantined actor of replay.ledger" in empty.stdout
