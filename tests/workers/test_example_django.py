"""The example Django site (``example_project.django_site``) through Django's test client,
against real ``celery -A example_project.django_site worker`` processes.

The site is configured only by its settings module, read from the environment the
``django_site_env`` fixture (tests/conftest.py) sets: the session's Redis server (also the
broker), key prefix ``exdj``, and a gateway that never fails at random, so only ``simulate``
decides. The worker knows the actors by autodiscovery alone (``CELERY_SKIP_CHECKS=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, current_app

from tests.harness import PROJECT_ROOT, CeleryProcess, start_worker, wait_until

SITE = "example_project.django_site"
SETTINGS = "example_project.django_site.settings"


@pytest.fixture(scope="module")
def site_env(django_site_env: dict[str, str]) -> dict[str, str]:
    return django_site_env


@pytest.fixture(scope="module")
def celery_app(django_site: Celery) -> Celery:
    """Django set up with the site's settings, and the site's Celery app."""
    return django_site


@pytest.fixture(scope="module")
def worker(
    celery_app: Celery, site_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryProcess]:
    proc = start_worker(SITE, concurrency=2, hostname="django@%h", env=site_env,
                        log_dir=tmp_path_factory.mktemp("django-worker"))
    yield proc
    proc.kill()


@pytest.fixture
def client(celery_app: Celery, worker: CeleryProcess, supervise_redis_url: str) -> Iterator[Any]:
    from django.test import Client

    redis.Redis.from_url(supervise_redis_url).flushdb()
    # Other tests' Celery apps live in this process too: ``wallet.ref()`` (like a
    # ``@shared_task``) uses the current app, so make it the site's for this test.
    previous = current_app._get_current_object()
    celery_app.set_current()
    yield Client()
    previous.set_current()


def post(client: Any, url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return client.post(url, body, content_type="application/json", headers=headers or {})


def last_payment(client: Any, key: str, status: str) -> dict[str, Any]:
    """The wallet's latest settled payment, once it has ``status``."""

    def settled() -> dict[str, Any] | None:
        recent = (client.get(f"/wallets/{key}").json()["state"] or {}).get("recent")
        return recent[-1] if recent and recent[-1]["status"] == status else None

    return wait_until(settled, 20, message=f"no {status} payment for {key}")


def wait_for_ledger_totals(client: Any, totals: dict[str, int]) -> None:
    """Wallets write to the ledger with ``ctx.send``: it catches up a moment later."""

    def current() -> Any:
        return (client.get("/ledger").json()["state"] or {}).get("totals")

    wait_until(lambda: current() == totals, 20, message=f"ledger totals are not {totals}")


def test_deposit_is_sent_once_and_shows_in_the_snapshot(client: Any) -> None:
    headers = {"Idempotency-Key": "dep-1"}
    first = post(client, "/wallets/alice/deposits", {"amount": 500}, headers)
    retry = post(client, "/wallets/alice/deposits", {"amount": 500}, headers)
    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json() == {"message_id": "dep-1"}

    def applied() -> dict[str, Any] | None:
        snap: dict[str, Any] = client.get("/wallets/alice").json()
        return snap if snap["version"] and snap["status"] == "idle" else None

    snap = wait_until(applied, 20)
    assert snap["type"] == "wallets.wallet" and snap["key"] == "alice"
    assert snap["state"] == {"balance": 500, "held": {}, "recent": []}
    assert (snap["version"], snap["status"], snap["last_crash"]) == (1, "idle", None)

    ledger = wait_until(lambda: (s := client.get("/ledger").json())["version"] and s, 20)
    assert ledger["state"]["totals"] == {"deposit": 500}
    assert ledger["state"]["recent"][0]["ref"] == "dep-1"


def test_balance_is_asked_after_earlier_messages(client: Any) -> None:
    assert post(client, "/wallets/bob/deposits", {"amount": 250}).status_code == 202
    # No waiting: the ask is queued behind the deposit and answered by the wallet itself.
    answer = client.get("/wallets/bob/balance")
    assert answer.status_code == 200
    assert answer.json() == {"balance": 250, "held": 0, "available": 250}


def test_declined_payment_leaves_the_balance_intact(client: Any) -> None:
    post(client, "/wallets/carol/deposits", {"amount": 500})
    sent = post(client, "/wallets/carol/payments",
                {"amount": 200, "to": "acme", "simulate": "decline"})
    assert sent.status_code == 202
    payment = last_payment(client, "carol", "failed")
    assert payment["id"] == sent.json()["payment_id"]
    assert payment["error"]["type"] == "PaymentDeclined"
    assert client.get("/wallets/carol/balance").json() == {
        "balance": 500, "held": 0, "available": 500,
    }
    wait_for_ledger_totals(client, {"deposit": 500, "payment_failed": 200})


def test_payment_through_the_gateway(client: Any) -> None:
    post(client, "/wallets/dave/deposits", {"amount": 500})
    assert post(client, "/wallets/dave/payments", {"amount": 200, "to": "acme"}).status_code == 202
    payment = last_payment(client, "dave", "paid")
    assert payment["charge_id"].startswith("ch_") and payment["to"] == "acme"
    assert client.get("/wallets/dave/balance").json()["balance"] == 300
    wait_for_ledger_totals(client, {"deposit": 500, "payment": 200})


def test_bad_requests_are_refused(client: Any) -> None:
    assert post(client, "/wallets/eve/deposits", {"amount": -5}).status_code == 400
    assert post(client, "/wallets/eve/payments", {"amount": 5}).status_code == 400
    bad = post(client, "/wallets/eve/payments", {"amount": 5, "to": "x", "simulate": "maybe"})
    assert bad.status_code == 400 and "simulate" in bad.json()["error"]
    assert client.get("/wallets/eve/deposits").status_code == 405
    assert client.get("/wallets/eve").json()["version"] == 0  # nothing was sent


def test_actors_are_autodiscovered_without_system_checks(
    client: Any, site_env: dict[str, str]
) -> None:
    """``wallets.wallet`` is defined only in ``wallets/actors.py``, which neither the settings
    nor ``tasks.py`` import: the worker and the CLI find it as ``autodiscover_tasks`` finds
    ``tasks.py`` (with ``CELERY_SKIP_CHECKS=1``, nothing else imports it)."""
    assert post(client, "/wallets/frank/deposits", {"amount": 70}).status_code == 202
    wait_until(lambda: client.get("/wallets/frank").json()["version"] == 1, 20,
               message="the worker did not handle the deposit")
    status = subprocess.run(
        [sys.executable, "-m", "celery", "-A", SITE, "supervise", "status", "--json"],
        env={**os.environ, **site_env}, cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    types = {s["name"]: s["actor_types"] for s in json.loads(status.stdout)["supervisors"]}
    assert types["payments"] == ["wallets.wallet"] and types["audit"] == ["wallets.ledger"]
