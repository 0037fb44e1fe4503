"""SPEC 4 with real worker processes and a real beat running the supervisor tick."""

from __future__ import annotations

import json
import time
from types import ModuleType
from typing import Any

import redis

from tests.harness import wait_until


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
    siblings = [bank.supervision.ref("tree.worker", f"sib-{i}") for i in range(10)]
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
