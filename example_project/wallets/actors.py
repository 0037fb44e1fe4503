"""The wallet and ledger actors.

A wallet's state is committed to Redis after every message, so a crash never loses or
half-applies a deposit or a payment. Paying goes through the flaky gateway as an isolated
subtask: the wallet puts the amount on hold, the gateway runs in another task, and its outcome
comes back as a message that settles the hold. A gateway failure therefore never crashes the
wallet and never touches its balance.

Amounts are integer cents. Both actors belong to supervisors the project declares in its
settings (``supervise_supervisors``): ``payments`` for wallets, ``audit`` for the ledger.
"""

from __future__ import annotations

from typing import Any

from celery_supervise import Context, actor

from .gateway import gateway

__all__ = ["LEDGER_KEY", "PAYMENT_TIMEOUT", "ledger", "valid_wallet", "wallet", "wallet_view"]

#: Key of the one ledger every wallet writes to.
LEDGER_KEY = "main"
#: Seconds a wallet waits for the gateway before the payment fails with ``Timeout``.
PAYMENT_TIMEOUT = 10.0
#: Settled payments a wallet keeps in its state (older ones are in the ledger).
RECENT_PAYMENTS = 20
#: Entries the ledger keeps in its state besides its running totals.
RECENT_ENTRIES = 50


def new_wallet(key: str) -> dict[str, Any]:
    return {"balance": 0, "held": {}, "recent": []}


def valid_wallet(state: dict[str, Any]) -> bool:
    """The invariant every committed state passes: no overdraft, holds covered."""
    held = sum(hold["amount"] for hold in state["held"].values())
    return bool(state["balance"] >= 0 and held <= state["balance"])


def wallet_view(state: dict[str, Any]) -> dict[str, int]:
    held = sum(hold["amount"] for hold in state["held"].values())
    return {"balance": state["balance"], "held": held, "available": state["balance"] - held}


def _cents(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive number of cents, got {value!r}")
    return value


@actor(
    name="wallets.wallet",
    initial=new_wallet,
    validate=valid_wallet,
    supervisor="payments",
    max_attempts=3,
    history=20,
)
def wallet(ctx: Context, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Messages: ``{"deposit": cents}``, ``{"pay": cents, "to": payee}`` (optional
    ``"simulate"``, see the gateway), ``{"withdraw": cents}``, ``{"get": "balance"}``. Every
    step replies with the balance (``ref.ask``)."""
    if not isinstance(message, dict):
        raise ValueError(f"a wallet message is a JSON object, got {message!r}")
    if "isolated" in message:
        _settle_payment(ctx, state, message)
    elif "deposit" in message:
        amount = _cents(message["deposit"], "deposit")
        state["balance"] += amount
        _audit(ctx, "deposit", amount, ctx.message_id)
    elif "pay" in message:
        _start_payment(ctx, state, message)
    elif "withdraw" in message:
        # No funds check on purpose: an overdraft fails ``valid_wallet``, which crashes the
        # step, so the message is retried and then dead-lettered with the balance unchanged.
        amount = _cents(message["withdraw"], "withdraw")
        state["balance"] -= amount
        _audit(ctx, "withdrawal", amount, ctx.message_id)
    elif message.get("get") != "balance":
        raise ValueError(f"a wallet does not understand {message!r}")
    ctx.reply(wallet_view(state))
    return state


def _start_payment(ctx: Context, state: dict[str, Any], message: dict[str, Any]) -> None:
    amount = _cents(message["pay"], "pay")
    payee = message.get("to")
    if not isinstance(payee, str) or not payee:
        raise ValueError(f"pay needs a payee in 'to', got {payee!r}")
    payment_id = ctx.message_id
    if amount > wallet_view(state)["available"]:
        _remember(state, {"id": payment_id, "amount": amount, "to": payee,
                          "status": "rejected", "reason": "insufficient funds"})
        return
    state["held"][payment_id] = {"amount": amount, "to": payee}
    ctx.isolate(
        # The same idempotency key on every run: the subtask runs at least once.
        gateway.s(payee, amount, f"{ctx.key}/{payment_id}", message.get("simulate")),
        tag=f"pay:{payment_id}",
        timeout=PAYMENT_TIMEOUT,
    )


def _settle_payment(ctx: Context, state: dict[str, Any], outcome: dict[str, Any]) -> None:
    """The gateway's one outcome message for a payment: take the money or release the hold."""
    payment_id = outcome["isolated"].removeprefix("pay:")
    hold = state["held"].pop(payment_id, None)
    if hold is None:  # not a payment of ours; nothing to settle
        return
    payment = {"id": payment_id, **hold}
    if outcome["ok"]:
        state["balance"] -= hold["amount"]
        payment.update(status="paid", charge_id=outcome["result"]["charge_id"])
        _audit(ctx, "payment", hold["amount"], payment_id, to=hold["to"])
    else:
        # A real integration would retry a Timeout or WorkerLost under the same idempotency
        # key (see docs/examples/payments.py); here the payment simply fails.
        payment.update(status="failed", error=outcome["error"])
        _audit(ctx, "payment_failed", hold["amount"], payment_id, to=hold["to"],
               error=outcome["error"]["type"])
    _remember(state, payment)


def _remember(state: dict[str, Any], payment: dict[str, Any]) -> None:
    state["recent"] = [*state["recent"], payment][-RECENT_PAYMENTS:]


def _audit(ctx: Context, entry: str, amount: int, ref: str, **details: Any) -> None:
    ctx.send(ledger.ref(LEDGER_KEY),
             {"entry": entry, "wallet": ctx.key, "amount": amount, "ref": ref, **details})


@actor(
    name="wallets.ledger",
    initial={"entries": 0, "totals": {}, "recent": []},
    supervisor="audit",
    max_attempts=3,
)
def ledger(ctx: Context, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """The audit trail: ``{"entry": kind, "wallet": key, "amount": cents, "ref": id, ...}``
    from wallets. Keeps a count and total per kind and the latest entries."""
    if "entry" in message:
        kind = message["entry"]
        state["entries"] += 1
        state["totals"][kind] = state["totals"].get(kind, 0) + message["amount"]
        state["recent"] = [*state["recent"], message][-RECENT_ENTRIES:]
    ctx.reply({"entries": state["entries"], "totals": state["totals"]})
    return state
