"""The example Flask app (``example_project.flask_app``) through Flask's test client, against
real ``celery -A example_project.flask_app.make_celery worker`` processes.

The app is configured only by its ``CELERY`` config dict, read from the environment set here:
the session's Redis server (also the broker), key prefix ``exfl``, and a gateway that always
fails unless told otherwise (``WALLETS_GATEWAY_FAILURE_RATE=1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, current_app
from flask import Flask
from flask.testing import FlaskClient

from tests.harness import CeleryProcess, start_worker, wait_until

CELERY_APP = "example_project.flask_app.make_celery"


@pytest.fixture(scope="module")
def app_env(supervise_redis_url: str) -> dict[str, str]:
    return {
        "EXAMPLE_REDIS_URL": supervise_redis_url,
        "EXAMPLE_KEY_PREFIX": "exfl",
        "WALLETS_GATEWAY_FAILURE_RATE": "1",
    }


@pytest.fixture(scope="module")
def flask_app(app_env: dict[str, str]) -> Flask:
    from example_project.flask_app import create_app

    with pytest.MonkeyPatch.context() as env:
        for name, value in app_env.items():
            env.setenv(name, value)
        return create_app({"TESTING": True})


@pytest.fixture(scope="module")
def worker(
    flask_app: Flask, app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryProcess]:
    proc = start_worker(CELERY_APP, concurrency=2, hostname="flask@%h", env=app_env,
                        log_dir=tmp_path_factory.mktemp("flask-worker"))
    yield proc
    proc.kill()


@pytest.fixture
def client(
    flask_app: Flask, worker: CeleryProcess, supervise_redis_url: str
) -> Iterator[FlaskClient]:
    redis.Redis.from_url(supervise_redis_url).flushdb()
    # Other tests' Celery apps live in this process too: ``wallet.ref()`` (like a
    # ``@shared_task``) uses the current app, so make it this app's for this test.
    previous = current_app._get_current_object()
    flask_app.extensions["celery"].set_current()
    yield flask_app.test_client()
    previous.set_current()


def last_payment(client: FlaskClient, key: str, status: str) -> dict[str, Any]:
    """The wallet's latest settled payment, once it has ``status``."""

    def settled() -> dict[str, Any] | None:
        recent = (client.get(f"/wallets/{key}").json["state"] or {}).get("recent")
        return recent[-1] if recent and recent[-1]["status"] == status else None

    return wait_until(settled, 20, message=f"no {status} payment for {key}")


def wait_for_ledger_totals(client: FlaskClient, totals: dict[str, int]) -> None:
    """Wallets write to the ledger with ``ctx.send``: it catches up a moment later."""

    def current() -> Any:
        return (client.get("/ledger").json["state"] or {}).get("totals")

    wait_until(lambda: current() == totals, 20, message=f"ledger totals are not {totals}")


def test_supervision_composes_with_the_app_context_task_class(flask_app: Flask) -> None:
    celery_app: Celery = flask_app.extensions["celery"]
    for name in ("wallets.wallet", "wallets.gateway", "celery_supervise.tick"):
        bases = [cls.__name__ for cls in type(celery_app.tasks[name]).__mro__]
        assert "FlaskTask" in bases, (name, bases)
    assert celery_app.conf.supervise_key_prefix == "exfl"


def test_deposit_is_sent_once_and_shows_in_the_snapshot(client: FlaskClient) -> None:
    headers = {"Idempotency-Key": "dep-1"}
    first = client.post("/wallets/alice/deposits", json={"amount": 500}, headers=headers)
    retry = client.post("/wallets/alice/deposits", json={"amount": 500}, headers=headers)
    assert first.status_code == retry.status_code == 202
    assert first.json == retry.json == {"message_id": "dep-1"}

    def applied() -> dict[str, Any] | None:
        snap: dict[str, Any] = client.get("/wallets/alice").json
        return snap if snap["version"] and snap["status"] == "idle" else None

    snap = wait_until(applied, 20)
    assert snap["type"] == "wallets.wallet" and snap["key"] == "alice"
    assert snap["state"] == {"balance": 500, "held": {}, "recent": []}
    assert (snap["version"], snap["status"], snap["last_crash"]) == (1, "idle", None)

    ledger = wait_until(lambda: (s := client.get("/ledger").json)["version"] and s, 20)
    assert ledger["state"]["totals"] == {"deposit": 500}


def test_balance_is_asked_after_earlier_messages(client: FlaskClient) -> None:
    assert client.post("/wallets/bob/deposits", json={"amount": 250}).status_code == 202
    # No waiting: the ask is queued behind the deposit and answered by the wallet itself.
    answer = client.get("/wallets/bob/balance")
    assert answer.status_code == 200
    assert answer.json == {"balance": 250, "held": 0, "available": 250}


def test_gateway_failure_leaves_the_balance_intact(client: FlaskClient) -> None:
    client.post("/wallets/carol/deposits", json={"amount": 500})
    sent = client.post("/wallets/carol/payments", json={"amount": 200, "to": "acme"})
    assert sent.status_code == 202
    payment = last_payment(client, "carol", "failed")
    assert payment["id"] == sent.json["payment_id"]
    assert payment["error"]["type"] == "GatewayUnavailable"
    assert client.get("/wallets/carol/balance").json == {
        "balance": 500, "held": 0, "available": 500,
    }
    snap = client.get("/wallets/carol").json
    assert snap["last_crash"] is None and snap["status"] != "quarantined"  # never crashed
    wait_for_ledger_totals(client, {"deposit": 500, "payment_failed": 200})


def test_approved_payment_takes_the_money(client: FlaskClient) -> None:
    client.post("/wallets/dave/deposits", json={"amount": 500})
    sent = client.post("/wallets/dave/payments",
                       json={"amount": 200, "to": "acme", "simulate": "approve"})
    assert sent.status_code == 202
    payment = last_payment(client, "dave", "paid")
    assert payment["charge_id"].startswith("ch_")
    assert client.get("/wallets/dave/balance").json["balance"] == 300
    wait_for_ledger_totals(client, {"deposit": 500, "payment": 200})


def test_bad_requests_are_refused(client: FlaskClient) -> None:
    assert client.post("/wallets/eve/deposits", json={"amount": "5"}).status_code == 400
    assert client.post("/wallets/eve/deposits", data="{not json",
                       content_type="application/json").status_code == 400
    assert client.post("/wallets/eve/payments", json={"amount": 5}).status_code == 400
    assert client.get("/wallets/" + "k" * 201).status_code == 400  # keys are at most 200 chars
    assert client.get("/wallets/eve/deposits").status_code == 405
    assert client.get("/wallets/eve").json["version"] == 0  # nothing was sent
