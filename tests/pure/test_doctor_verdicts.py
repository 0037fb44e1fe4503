"""The thresholds of ``supervise doctor``'s verdicts, without a server (the checks that read
what they judge run against real servers in tests/redis/test_doctor.py)."""

from __future__ import annotations

import pytest

from celery_supervise.doctor import (
    SKEW_WARN,
    clock_verdict,
    eviction_verdict,
    persistence_verdict,
    tick_verdict,
)


@pytest.mark.parametrize(
    ("appendonly", "appendfsync", "verdict"),
    [("yes", "always", "ok"), ("yes", "everysec", "warn"), ("yes", "no", "problem"),
     ("no", "always", "problem"), ("no", "everysec", "problem")],
)  # fmt: skip
def test_persistence(appendonly: str, appendfsync: str, verdict: str) -> None:
    assert persistence_verdict(appendonly, appendfsync)[0] == verdict


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random",
                                    "volatile-lru", "volatile-lfu", "volatile-random",
                                    "volatile-ttl"])  # fmt: skip
def test_every_evicting_policy_is_a_problem(policy: str) -> None:
    assert eviction_verdict(policy)[0] == "problem"
    assert eviction_verdict("noeviction")[0] == "ok"


def test_clock_skew_within_the_measurement_error_is_ok() -> None:
    assert clock_verdict(0.2, 0.001, 10.0)[0] == "ok"
    assert clock_verdict(SKEW_WARN + 0.5, 0.6, 10.0)[0] == "ok"  # may be within a second
    status, message = clock_verdict(-3.0, 0.001, 10.0)
    assert status == "warn" and "3.000 s ahead of Redis'" in message and "NTP" in message
    status, message = clock_verdict(12.0, 0.001, 10.0)
    assert status == "problem" and "12.000 s behind Redis'" in message
    assert "tick's expiry (10 s)" in message


def test_the_tick_is_late_then_stopped() -> None:
    now = 1_000_000
    one = [("gen1@a", now - 500)]
    assert tick_verdict(one, now, 1.0)[0] == "ok"
    late = tick_verdict([("gen1@a", now - 8_000)], now, 1.0)
    assert late[0] == "warn" and "8.0 s ago" in late[1] and "queue of its own" in late[1]
    stopped = tick_verdict([("gen1@a", now - 31_000)], now, 1.0)
    assert stopped[0] == "problem" and "is beat running" in stopped[1]
    assert tick_verdict([], now, 1.0)[0] == "problem"
    # The thresholds follow the interval: a 10 s tick 40 s ago is late, not stopped.
    assert tick_verdict([("gen1@a", now - 40_000)], now, 10.0)[0] == "warn"


def test_two_recent_senders_are_two_beats_and_an_old_one_is_forgotten() -> None:
    now = 1_000_000
    two = [("gen2@b", now - 100), ("gen1@a", now - 900)]
    status, message = tick_verdict(two, now, 1.0)
    assert status == "warn" and "2 processes send the tick (gen1@a, gen2@b)" in message
    restarted = [("gen2@b", now - 100), ("gen1@a", now - 60_000)]  # beat restarted: new pid
    assert tick_verdict(restarted, now, 1.0)[0] == "ok"
