"""Client side of the examples: what a Django view or a Flask route would call."""

from __future__ import annotations

from typing import Any

from billing import account


# --8<-- [start:client]
def deposit(key: str, amount: int, request_id: str) -> str:
    """Durable when it returns. A client retrying with the same request id within
    ``supervise_dedup_window`` gets the deposit applied once."""
    return account.ref(key).send({"deposit": amount}, message_id=request_id)


def balance(key: str) -> dict[str, Any]:
    """Waits for the actor's ``ctx.reply``; raises ``AskTimeout`` after 5 s."""
    return {"key": key, "balance": account.ref(key).ask("balance", timeout=5.0)}
# --8<-- [end:client]
