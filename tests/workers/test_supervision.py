"""SPEC 4 with real worker processes and a real beat running the supervisor tick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import redis

from tests.harness import PROJECT_ROOT, start_beat, start_worker, wait_until


def _events(redis_client: redis.Redis, event: str) -> list[dict[str, Any]]:
    rows = redis_client.xrange("t:events")
    found = [json.loads(fields[b"event"]) for _, fields in rows]
    return [e for e in found if e["event"] == event or e.get("action") == event]


def test_slow_crash_loop_is_caught_by_consecutive_crashes(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    """One crashing message every 2 s never exceeds intensity 3 in 5 s, but six crashes
    with no committed step between them quarantine the actor (max_consecutive_crashes=5)."""
    workers("w1")
    ref = bank.supervision.ref("tree.slowloop", "essay")
    ref.send("ok")
    wait_until(lambda: ref.snapshot().version == 1, 20)
    for _ in range(6):
        ref.send("crash")
        time.sleep(2.0)
        if ref.snapshot().status == "quarantined":
            break
    snap = wait_until(
        lambda: (s := ref.snapshot()).status == "quarantined" and s,
        20,
        message="slow crash loop not stopped",
    )
    assert snap.consecutive_crashes == 6
    assert snap.state == {"n": 1} and snap.version == 1  # state kept
    assert len(ref.dead_letters()) == 6  # each crashing message kept, inspectable
    quarantines = _events(redis_client, "quarantine")
    assert quarantines and quarantines[-1]["cause"] == "consecutive_crashes"
    # nothing is dropped while quarantined, and resume brings it back
    ref.send("ok")
    assert ref.snapshot().pending == 1
    ref.resume()
    wait_until(lambda: ref.snapshot().state == {"n": 2}, 20)


def test_one_crash_looping_sibling_is_quarantined_the_others_go_on(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    workers("w1")
    workers("w2")
    # "crowded": intensity 3 in 60 s, so the fourth restart is over the limit however slowly
    # a loaded machine runs the loop (in 5 s, six consecutive crashes could come first).
    siblings = [bank.supervision.ref("tree.sibling", f"sib-{i}") for i in range(10)]
    siblings[3].send("crash")
    for round_ in range(20):
        for ref in siblings:
            if ref is not siblings[3]:
                ref.send({"round": round_})
        time.sleep(0.1)
    wait_until(
        lambda: siblings[3].snapshot().status == "quarantined",
        30,
        message="crash loop not quarantined",
    )
    for ref in siblings:
        if ref is not siblings[3]:
            wait_until(
                lambda ref=ref: ref.snapshot().state == {"n": 20},
                30,
                message=f"{ref} stopped processing",
            )
            assert ref.snapshot().status == "idle"
            assert ref.snapshot().last_crash is None
    crasher = siblings[3].snapshot()
    assert crasher.pending == 1 and crasher.last_crash is not None
    assert crasher.halt_reason == "limit:intensity"


def test_escalation_restarts_the_group_then_gives_up_as_otp_would(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    """escalating: one_for_all, on_limit=escalate, intensity 3 / 60 s, under holder
    (intensity 1). m0 crash-loops: each crash restarts m0, m1, m2 together; the 4th restart
    fails escalating to holder, which restarts it (clearing its history); the next failure
    exceeds holder's intensity and holder quarantines the whole group."""
    workers("w1")
    members = [bank.supervision.ref("tree.member", f"m{i}") for i in range(3)]
    for ref in members:
        ref.send("hello")
    wait_until(lambda: all(r.snapshot().version == 1 for r in members), 20)
    members[0].send("crash")
    wait_until(
        lambda: redis_client.hget("t:sup:{escalating}", "status") == b"quarantined",
        60,
        message="group never escalated to quarantine",
    )
    decisions = [e for e in _events(redis_client, "decision")]
    assert [e["supervisor"] for e in decisions if e["action"] == "stop_supervisor"] == [
        "escalating",
        "escalating",
    ]
    assert any(e["action"] == "notify_parent" and e["notice"] == "escalated" for e in decisions)
    assert any(
        e["action"] == "restart" and e["supervisor"] == "holder" and e["child"] == "escalating"
        for e in decisions
    )
    assert any(
        e["action"] == "quarantine" and e["supervisor"] == "holder" and e["child"] == "escalating"
        for e in decisions
    )
    for ref in members:
        snap = ref.snapshot()
        assert snap.status == "stopped", (ref, snap)
        assert snap.state == {"n": 1}  # state kept
    restarts = [e for e in decisions if e["action"] == "restart" and e.get("collateral")]
    assert {e["child"] for e in restarts} >= {"tree.member:m1", "tree.member:m2"}
    # members keep accepting messages while stopped, and an operator brings the group back
    members[1].send("after")
    from celery_supervise.operations import resume_supervisor

    resume_supervisor(bank.supervision.runtime, "escalating")
    wait_until(lambda: members[1].snapshot().state == {"n": 2}, 30)


def test_restart_types_with_real_workers(bank: ModuleType, workers: Any, beat: Any) -> None:
    workers("w1")
    temporary = bank.supervision.ref("tree.temporary", "t")
    temporary.send("crash")
    transient_stop = bank.supervision.ref("tree.transient", "s")
    transient_stop.send("stop")
    transient_crash = bank.supervision.ref("tree.transient", "c")
    transient_crash.send_many(["ok", "crash", "ok"])
    wait_until(lambda: temporary.snapshot().status == "stopped", 20)
    wait_until(lambda: transient_stop.snapshot().status == "stopped", 20)
    # the transient actor that crashed is restarted and keeps retrying its message
    wait_until(lambda: transient_crash.snapshot().consecutive_crashes >= 2, 20)
    time.sleep(1.5)
    assert temporary.snapshot().status == "stopped"
    assert transient_stop.snapshot().status == "stopped"
    assert transient_crash.snapshot().status != "stopped"


def test_rest_for_one_restarts_the_crashed_child_and_those_after_it(
    bank: ModuleType, workers: Any, beat: Any, redis_client: redis.Redis
) -> None:
    """ordered: rest_for_one over r0, r1, r2. r1 crashes once: r1 and r2 (collateral) are
    restarted, r0 is untouched; all three go on handling messages."""
    workers("w1")
    refs = [bank.supervision.ref("tree.member", f"r{i}") for i in range(3)]
    for ref in refs:
        ref.send("hello")
    wait_until(lambda: all(r.snapshot().version == 1 for r in refs), 20)
    refs[1].send({"crash_once": "r1"})
    wait_until(lambda: refs[1].snapshot().version == 2, 30, message="r1 never came back")
    wait_until(lambda: refs[2].snapshot().status == "idle", 30, message="r2 not back")
    restarts = [e for e in _events(redis_client, "decision") if e["action"] == "restart"]
    assert [(e["supervisor"], e["child"], bool(e.get("collateral"))) for e in restarts] == [
        ("ordered", "tree.member:r1", False),
        ("ordered", "tree.member:r2", True),
    ]
    decided = {e.get("child") for e in _events(redis_client, "decision")}
    assert "tree.member:r0" not in decided
    r0 = refs[0].snapshot()
    assert (r0.status, r0.version, r0.last_crash) == ("idle", 1, None)
    assert refs[2].snapshot().last_crash is None  # restarted, never crashed itself
    for ref in refs:
        ref.send("again")
    wait_until(lambda: [r.snapshot().version for r in refs] == [2, 3, 2], 30,
               message="a child did not go on after the restart")


def _giveup_events(redis_client: redis.Redis, event: str) -> list[dict[str, Any]]:
    rows = redis_client.xrange("g:events")
    found = [json.loads(fields[b"event"]) for _, fields in rows]
    return [e for e in found if e["event"] == event or e.get("action") == event]


def test_root_gives_up_and_resume_root_brings_everything_back(
    bank: ModuleType, bank_env: dict[str, str], redis_client: redis.Redis, tmp_path: Any
) -> None:
    """tests/apps/giveup.py: group fails to root at each restart, root restarts it once and
    gives up at the second failure. Everything under root stops (mailboxes kept, new
    messages queue); ``supervise resume root`` brings it back and the queue drains."""
    from tests.apps import giveup  # a second app: imported by the one test that uses it

    app = "tests.apps.giveup"
    procs = [start_worker(app, concurrency=2, hostname="g1@%h", env=bank_env,
                          log_dir=tmp_path),
             start_beat(app, env=bank_env, schedule_dir=tmp_path / "beat")]
    try:
        counter = giveup.supervision.ref("giveup.counter", "c")
        flaky = giveup.supervision.ref("giveup.flaky", "f")
        counter.send("before")
        wait_until(lambda: counter.snapshot().version == 1, 20)
        redis_client.set(giveup.BROKEN, 1)
        flaky.send("work")
        wait_until(lambda: _giveup_events(redis_client, "root_gave_up"), 60,
                   message="root never gave up")
        decisions = _giveup_events(redis_client, "decision")
        assert [e["supervisor"] for e in decisions if e["action"] == "stop_supervisor"] == [
            "group", "group", "root"]
        counter.send("while stopped")
        wait_until(lambda: counter.snapshot().status == "stopped", 20,
                   message="an actor under root still runs after root gave up")
        time.sleep(1.5)  # a few ticks: nothing restarts by itself
        assert flaky.snapshot().status == "stopped" and flaky.snapshot().pending == 1
        c = counter.snapshot()
        assert (c.status, c.version, c.pending) == ("stopped", 1, 1)
        assert redis_client.hget("g:sup:{root}", "status") == b"stopped"

        redis_client.delete(giveup.BROKEN)  # the operator fixes the cause, then resumes
        env = {**os.environ, **bank_env, "PYTHONPATH": str(PROJECT_ROOT)}
        done = subprocess.run([sys.executable, "-m", "celery", "-A", app, "supervise",
                               "resume", "root"], env=env, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: counter.snapshot().version == 2 and flaky.snapshot().version == 1,
                   30, message="pending messages did not drain after resume root")
        assert counter.snapshot().pending == 0 and flaky.snapshot().pending == 0
        assert flaky.snapshot().state == {"n": 1}
    finally:
        for proc in procs:
            proc.kill()
