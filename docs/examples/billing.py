"""Actor types and tasks of the documentation's examples (imported through ``proj``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from celery_supervise import actor


# --8<-- [start:account]
def valid_account(state: dict[str, Any]) -> bool:
    """The invariant every committed state passes; a step that breaks it crashes."""
    return isinstance(state["balance"], int) and state["balance"] >= 0


@actor(
    name="billing.account",  # the Celery task name, as Flower shows it
    initial=lambda key: {"balance": 0, "rejected": 0, "pending": {}},
    validate=valid_account,
    supervisor="billing",
    max_attempts=3,  # a message that crashed three times is dead-lettered
    recovery="last_good",
)
def account(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    if message == "balance":
        ctx.reply(state["balance"])  # answers ref.ask("balance")
    elif isinstance(message, dict) and "deposit" in message:
        amount = message["deposit"]
        if isinstance(amount, int) and amount > 0:  # defensive about input
            state["balance"] += amount
        else:
            state["rejected"] += 1  # refused, not a crash
    elif isinstance(message, dict) and "withdraw" in message:
        state["balance"] -= message["withdraw"]  # overdrawn? validate says no
    # --8<-- [start:isolate]
    elif isinstance(message, dict) and "convert" in message:
        # The rate comes from an outside service that may fail or hang: ask for it in an
        # isolated subtask; its outcome comes back as a later message with this tag.
        amount, currency = message["convert"]
        state["pending"][ctx.message_id] = amount
        ctx.isolate(fetch_rate.s(currency), tag=f"rate {ctx.message_id}", timeout=30)
    elif isinstance(message, dict) and str(message.get("isolated")).startswith("rate "):
        amount = state["pending"].pop(message["isolated"].removeprefix("rate "))
        if message["ok"]:
            state["balance"] += round(amount * message["result"])
        else:  # the subtask failed (raised, timed out, lost its worker): this actor did not
            state["rejected"] += 1
    # --8<-- [end:isolate]
    return state
# --8<-- [end:account]


# --8<-- [start:fetch_rate]
RATES = {"EUR": 1.0, "USD": 0.9, "GBP": 1.2}


@shared_task(name="billing.fetch_rate")
def fetch_rate(currency: str) -> float:
    """Stands in for a call to a rates API: raises KeyError for an unknown currency."""
    return RATES[currency]
# --8<-- [end:fetch_rate]


# --8<-- [start:importer]
def import_line(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> None:
    if "set_currency" in message:
        state["currency"] = message["set_currency"]
    else:
        state["total"] += message["amount"] * RATES[state["currency"]]  # KeyError if unknown


# Too weak an invariant: {"set_currency": "XXX"} commits, and every later message crashes.
naive_importer = actor(
    name="billing.naive_importer",
    initial={"currency": "EUR", "total": 0},
    validate=lambda s: s["total"] >= 0,
    supervisor="billing",
    max_attempts=2,
)(import_line)

# The same handler with the real invariant: the bad message itself crashes, is
# dead-lettered, and the committed state stays one that works.
importer = actor(
    name="billing.importer",
    initial={"currency": "EUR", "total": 0},
    validate=lambda s: s["total"] >= 0 and s["currency"] in RATES,
    supervisor="billing",
    max_attempts=2,
)(import_line)
# --8<-- [end:importer]


@actor(name="billing.journal", initial={"entries": 0})
def journal(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """Static children of the ``ledger`` supervisor (see ``proj``)."""
    state["entries"] += 1
    return state
