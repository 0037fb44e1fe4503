"""Example for docs/long-lived.md: a state whose shape changed in a deploy (balance in units,
then in cents). tests/pure/test_docs_versions_example.py imports and runs this file."""

from __future__ import annotations

from typing import Any

from celery_supervise import actor


# --8<-- [start:versions]
def to_cents(state):          # a version-1 state becomes a version-2 state
    return {"cents": state["balance"] * 100, "log": state["log"]}

@actor(name="example.versioned_wallet", initial={"cents": 0, "log": []},
       validate=lambda s: s["cents"] >= 0, state_version=2, migrate={1: to_cents})
def wallet(ctx, state, message):
    ...
# --8<-- [end:versions]


