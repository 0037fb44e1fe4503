"""What a web view of wallets needs, independent of the web framework.

Each function takes plain values (the wallet id from the URL, the decoded JSON body, the
``Idempotency-Key`` header) and returns a JSON-able dict, or raises ``ApiError`` with the HTTP
status to answer. The Django views and the Flask routes are thin wrappers around these.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from celery_supervise import (
    ActorRef,
    AskTimeout,
    InvalidKey,
    InvalidMessage,
    MessageDeadLettered,
    MessageTooLarge,
    RedisUnavailable,
)

from .actors import LEDGER_KEY, ledger, wallet
from .gateway import SIMULATIONS

__all__ = ["ApiError", "balance", "deposit", "ledger_snapshot", "pay", "wallet_snapshot"]

#: Seconds a balance request waits for the wallet to answer.
ASK_TIMEOUT = 5.0


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _wallet(key: str) -> ActorRef:
    try:
        return wallet.ref(key)
    except InvalidKey as exc:
        raise ApiError(400, str(exc)) from None


def _cents(body: Any, field: str) -> int:
    value = body.get(field) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ApiError(400, f"{field!r} must be a positive integer number of cents")
    return value


def _send(ref: ActorRef, message: dict[str, Any], idempotency_key: str | None) -> str:
    """Durable when it returns; a retried request with the same key is applied once."""
    try:
        return ref.send(message, message_id=idempotency_key or None)
    except (InvalidMessage, MessageTooLarge) as exc:
        raise ApiError(400, str(exc)) from None
    except RedisUnavailable as exc:
        raise ApiError(503, str(exc)) from None


def deposit(key: str, body: Any, idempotency_key: str | None = None) -> dict[str, Any]:
    """``{"amount": cents}`` -> ``{"message_id": ...}``, applied by the wallet soon after."""
    message = {"deposit": _cents(body, "amount")}
    return {"message_id": _send(_wallet(key), message, idempotency_key)}


def pay(key: str, body: Any, idempotency_key: str | None = None) -> dict[str, Any]:
    """``{"amount": cents, "to": payee, "simulate"?: "approve"|"decline"|"timeout"}`` ->
    ``{"message_id": ..., "payment_id": ...}``; the payment's status shows in the snapshot."""
    amount = _cents(body, "amount")
    payee = body.get("to")
    if not isinstance(payee, str) or not payee:
        raise ApiError(400, "'to' must name the payee")
    message: dict[str, Any] = {"pay": amount, "to": payee}
    simulate = body.get("simulate")
    if simulate is not None:
        if simulate not in SIMULATIONS:
            raise ApiError(400, f"'simulate' must be one of {', '.join(SIMULATIONS)}")
        message["simulate"] = simulate
    message_id = _send(_wallet(key), message, idempotency_key)
    return {"message_id": message_id, "payment_id": message_id}


def balance(key: str) -> dict[str, Any]:
    """Ask the wallet itself: the answer comes after every message sent to it before."""
    try:
        answer: dict[str, Any] = _wallet(key).ask({"get": "balance"}, timeout=ASK_TIMEOUT)
    except AskTimeout as exc:
        raise ApiError(504, str(exc)) from None
    except MessageDeadLettered as exc:
        raise ApiError(500, str(exc)) from None
    except RedisUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    return answer


def _snapshot(ref: ActorRef) -> dict[str, Any]:
    try:
        return dataclasses.asdict(ref.snapshot())
    except RedisUnavailable as exc:
        raise ApiError(503, str(exc)) from None


def wallet_snapshot(key: str) -> dict[str, Any]:
    """The wallet as last committed: state, version, status, pending messages, last crash."""
    return _snapshot(_wallet(key))


def ledger_snapshot() -> dict[str, Any]:
    return _snapshot(ledger.ref(LEDGER_KEY))
