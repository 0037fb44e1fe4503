"""A flaky payment gateway, run by wallets as an isolated subtask.

It stands in for a payment provider's API, so it behaves like one: usually it pays, about one
call in five it fails (``GatewayUnavailable``), and, like a provider's sandbox, a request can
ask for a given outcome with ``simulate``:

- ``"approve"``: always pays; ``"decline"``: always raises ``PaymentDeclined``;
- ``"timeout"``: hangs for ``SLOW_SECONDS``, longer than a wallet waits (its isolate timeout),
  so the wallet gets a ``Timeout`` outcome from the supervisor tick (needs beat running).

The random failure rate is ``$WALLETS_GATEWAY_FAILURE_RATE`` (0 to 1, default 0.2), and each
call takes up to ``$WALLETS_GATEWAY_LATENCY`` seconds (default 0), like a network round trip;
both are read on every call so a worker's environment sets them.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from typing import Any

from celery import shared_task

__all__ = [
    "FAILURE_RATE_ENV",
    "SIMULATIONS",
    "SLOW_SECONDS",
    "GatewayUnavailable",
    "PaymentDeclined",
    "gateway",
]

#: Environment variable with the share of calls that fail at random.
FAILURE_RATE_ENV = "WALLETS_GATEWAY_FAILURE_RATE"
#: Environment variable with the longest a call takes, in seconds.
LATENCY_ENV = "WALLETS_GATEWAY_LATENCY"
#: Failure rate when the variable is not set.
DEFAULT_FAILURE_RATE = 0.2
#: Outcomes a request can ask for.
SIMULATIONS = ("approve", "decline", "timeout")
#: How long a ``"timeout"`` call hangs.
SLOW_SECONDS = 15.0


class PaymentDeclined(Exception):
    """The provider refused the payment (for good: retrying will not help)."""


class GatewayUnavailable(Exception):
    """The provider failed to answer properly (transient)."""


def failure_rate() -> float:
    raw = os.environ.get(FAILURE_RATE_ENV)
    if raw is None:
        return DEFAULT_FAILURE_RATE
    rate = float(raw)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"${FAILURE_RATE_ENV} must be between 0 and 1, got {raw!r}")
    return rate


@shared_task(name="wallets.gateway")
def gateway(
    payee: str, amount: int, idempotency_key: str, simulate: str | None = None
) -> dict[str, Any]:
    """Pay ``amount`` cents to ``payee``. A real provider charges at most once per
    ``idempotency_key``; the charge id is derived from it the same way."""
    if simulate is not None and simulate not in SIMULATIONS:
        raise ValueError(f"simulate must be one of {SIMULATIONS}, got {simulate!r}")
    if simulate == "decline":
        raise PaymentDeclined(f"payment of {amount} to {payee} declined")
    time.sleep(random.uniform(0, float(os.environ.get(LATENCY_ENV) or 0)))
    if simulate == "timeout":
        time.sleep(SLOW_SECONDS)
    elif simulate is None and random.random() < failure_rate():
        raise GatewayUnavailable("payment provider answered 503 Service Unavailable")
    charge = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    return {"charge_id": f"ch_{charge}", "payee": payee, "amount": amount}
