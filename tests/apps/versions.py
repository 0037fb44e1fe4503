"""An actor type whose state changes shape between two deploys: which code this process
runs is read from ``TEST_STATE_VERSION`` at import ("1": the old code, "2": the new one, with
its upgrade), so an old and a new worker run side by side on one Redis."""

from __future__ import annotations

import os
from typing import Any

from celery_supervise import actor

#: The deploy this process runs.
DEPLOYED = int(os.environ.get("TEST_STATE_VERSION", "1"))


def to_cents(state: dict[str, Any]) -> dict[str, Any]:
    """migrate[1]: ``{"balance": units}`` becomes ``{"cents": units * 100}``."""
    return {"cents": state["balance"] * 100, "log": state["log"]}


def _v1(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    state["balance"] += message["amount"]
    state["log"].append(f"v1:{message['n']}")
    return state


def _v2(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    state["cents"] += message["amount"] * 100
    state["log"].append(f"v2:{message['n']}")
    return state


if DEPLOYED == 1:

    @actor(name="versions.wallet", initial={"balance": 0, "log": []},
           validate=lambda s: s["balance"] >= 0, max_attempts=100)  # fmt: skip
    def wallet(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
        return _v1(ctx, state, message)

else:

    @actor(name="versions.wallet", initial={"cents": 0, "log": []},
           validate=lambda s: s["cents"] >= 0, max_attempts=100,
           state_version=2, migrate={1: to_cents})  # fmt: skip
    def wallet(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
        return _v2(ctx, state, message)


def deploy(version: int) -> None:
    """In this process: switch the registered type to the code of ``version`` (what a
    restart with the other ``TEST_STATE_VERSION`` would load)."""
    if version == 1:
        wallet.handler, wallet.state_version, wallet.migrate = _v1, 1, {}
        wallet.initial, wallet.validate = {"balance": 0, "log": []}, lambda s: s["balance"] >= 0
    else:
        wallet.handler, wallet.state_version, wallet.migrate = _v2, 2, {1: to_cents}
        wallet.initial, wallet.validate = {"cents": 0, "log": []}, lambda s: s["cents"] >= 0
