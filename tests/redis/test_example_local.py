"""The wallets domain of ``example_project`` tested in-process: no worker and no beat.

``LocalRunner`` (the ``supervise_runner`` fixture) runs actor steps, isolated gateway calls
and supervisor ticks in the test process, against the session's real Redis server. This is
how a project tests its own actors: a few lines each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, current_app

from celery_supervise import Supervision
from celery_supervise.testing import LocalRunner
from example_project.wallets.actors import LEDGER_KEY, ledger, wallet


@pytest.fixture
def runner(supervise_redis_url: str, supervise_runner: Any) -> Iterator[LocalRunner]:
    redis.Redis.from_url(supervise_redis_url).flushdb()
    previous = current_app._get_current_object()
    app = Celery("wallets-tests", broker=supervise_redis_url)  # the current app: wallet.ref()
    app.conf.supervise_key_prefix = "exlocal"
    app.conf.supervise_supervisors = {
        "payments": {"backoff": {"initial": 0.05, "factor": 1.0}},
        "audit": {"children": [f"wallets.ledger:{LEDGER_KEY}"]},
    }
    yield supervise_runner(Supervision(app))
    previous.set_current()  # leave other tests the app they had


def test_deposit_is_applied_and_audited(runner: LocalRunner) -> None:
    wallet.ref("alice").send({"deposit": 500})
    runner.run()
    assert wallet.ref("alice").snapshot().state["balance"] == 500
    assert ledger.ref(LEDGER_KEY).snapshot().state["totals"] == {"deposit": 500}


def test_declined_payment_leaves_the_balance(runner: LocalRunner) -> None:
    alice = wallet.ref("alice")
    alice.send({"deposit": 500})
    payment_id = alice.send({"pay": 200, "to": "acme", "simulate": "decline"})
    runner.run()  # the step, then the gateway subtask, then its outcome message
    state = alice.snapshot().state
    assert state["balance"] == 500 and state["held"] == {}
    assert state["recent"][-1]["id"] == payment_id
    assert state["recent"][-1]["status"] == "failed"
    assert state["recent"][-1]["error"]["type"] == "PaymentDeclined"
    assert ledger.ref(LEDGER_KEY).snapshot().state["totals"] == {
        "deposit": 500, "payment_failed": 200,
    }


def test_approved_payment_takes_the_money(runner: LocalRunner) -> None:
    alice = wallet.ref("alice")
    alice.send({"deposit": 500})
    alice.send({"pay": 200, "to": "acme", "simulate": "approve"})
    runner.run()
    state = alice.snapshot().state
    assert state["balance"] == 300
    assert state["recent"][-1]["status"] == "paid"
    assert state["recent"][-1]["charge_id"].startswith("ch_")


def test_payment_held_until_the_gateway_answers(runner: LocalRunner) -> None:
    alice = wallet.ref("alice")
    alice.send_many([{"deposit": 500}, {"pay": 400, "to": "acme", "simulate": "approve"},
                     {"pay": 200, "to": "acme", "simulate": "approve"}])
    runner.run()
    recent = alice.snapshot().state["recent"]
    # The second payment came while 400 were on hold: only 100 were available.
    assert [p["status"] for p in recent] == ["rejected", "paid"]
    assert alice.snapshot().state["balance"] == 100


def test_overdraft_crashes_and_is_dead_lettered(runner: LocalRunner) -> None:
    """``withdraw`` does not check funds: the ``validate`` invariant does."""
    bob = wallet.ref("bob")
    bob.send_many([{"deposit": 100}, {"withdraw": 150}, {"deposit": 1}])
    # Ticks restart the wallet after each crash until the message is dead: in real time, so
    # on a busy machine give it what it takes (a few backoffs), up to 10 s.
    for _ in range(50):
        runner.settle(0.2)
        if bob.snapshot().status == "idle" and not bob.snapshot().pending:
            break
    snap = bob.snapshot()
    assert snap.state["balance"] == 101 and snap.status == "idle"
    [dead] = bob.dead_letters()
    assert dead.message == {"withdraw": 150} and len(dead.crashes) == 3
