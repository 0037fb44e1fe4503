"""A quarantined wallet for the tests of the operator's pages (tests/redis/test_pages_*.py):
the example's wallets, driven in-process by ``LocalRunner`` under a fast ``payments``
supervisor, so a crash loop takes milliseconds instead of the example's seconds of backoff."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery_supervise import ActorRef, Supervision
from celery_supervise.testing import LocalRunner

WALLET = "wallets.wallet"
#: The actor page's hidden CSRF input (Django's or the Flask blueprint's), its value caught.
CSRF_INPUT = re.compile(r'name="(?:csrfmiddlewaretoken|csrf_token)" value="([^"]+)"')


@contextmanager
def fast_payments(sup: Supervision) -> Iterator[None]:
    """The ``payments`` supervisor with a 10 ms backoff, quarantining after 4 crashes in a
    row; the tree of the Supervision is restored afterwards."""
    before = sup.runtime.tree
    sup.supervisor(
        "payments", strategy="one_for_one", intensity=100, period=10,
        max_consecutive_crashes=4, on_limit="quarantine",
        backoff={"initial": 0.01, "factor": 1.0, "max": 0.01},
    )  # fmt: skip
    try:
        yield
    finally:
        sup.runtime.tree = before


def until(runner: LocalRunner, ref: ActorRef, *, status: str, pending: int | None = None,
          seconds: float = 10.0) -> Any:  # fmt: skip
    """Run steps and ticks until the actor is in ``status`` (with ``pending`` queued)."""
    deadline = time.monotonic() + seconds
    while True:
        runner.run()
        snap = ref.snapshot()
        if snap.status == status and (pending is None or snap.pending == pending):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"{ref} is {snap.status} with {snap.pending} queued, "
                                 f"not {status}")  # fmt: skip
        runner.tick()
        time.sleep(0.01)


def quarantined_wallet(sup: Supervision, runner: LocalRunner, key: str) -> ActorRef:
    """A wallet that took a deposit of 500, dead-lettered an overdraft after 3 crashes, then
    crashed once on a malformed payment and was quarantined for it, with a deposit of 7
    queued behind it."""
    ref = sup.ref(WALLET, key)
    ref.send({"deposit": 500}, message_id="open")
    ref.send({"withdraw": 10**9}, message_id="overdraft")  # fails validate: 3 crashes, dead
    ref.send({"pay": 100, "to": ""}, message_id="malformed")  # the 4th crash in a row
    ref.send({"deposit": 7}, message_id="after")
    until(runner, ref, status="quarantined")
    return ref


def csrf_token(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "the actor's page has no CSRF field"
    return found.group(1)
