"""Tests of a Django project written with the recipe's ``conftest.py``: nothing here
imports the project at the top of the module (its settings would be read too early)."""

# --8<-- [start:test]
from django.test import Client


def test_deposit_shows_in_the_balance(runner):
    client = Client()
    sent = client.post("/wallets/alice/deposits", {"amount": 500},
                       content_type="application/json")
    assert sent.status_code == 202
    runner.run()  # the wallet's step, here and now
    assert client.get("/wallets/alice").json()["state"]["balance"] == 500


def test_every_test_starts_empty(runner):
    assert Client().get("/wallets/alice").json()["version"] == 0
# --8<-- [end:test]
