"""Runs the model-based test (``tests/redis/state_machine.py``) against the session's Redis.

Two profiles: ``bounded`` (every ``make test``, well under a minute on two cores) and
``long`` (``make faults``: ``-m faults`` selects it). ``SUPERVISE_MACHINE_PROFILE`` picks one
for the bounded test too (e.g. to run the long profile by hand)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.redis.state_machine import STATS, Model

settings.register_profile(
    "bounded",
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "dev",
    max_examples=8,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "long",
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _run(url: str, profile: str) -> None:
    Model.redis_url = url
    STATS.clear()
    try:
        run_state_machine_as_test(Model, settings=settings.get_profile(profile))
    finally:
        print("state machine:", dict(sorted(STATS.items())))


def test_state_machine(supervise_redis_url: str) -> None:
    _run(supervise_redis_url, os.environ.get("SUPERVISE_MACHINE_PROFILE", "bounded"))


@pytest.mark.faults
@pytest.mark.long_profile
def test_state_machine_long(supervise_redis_url: str) -> None:
    _run(supervise_redis_url, "long")
