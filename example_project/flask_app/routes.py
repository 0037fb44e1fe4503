"""JSON routes over ``example_project.wallets.api``: send, ask and snapshot."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from example_project.wallets import api  # also registers the wallets actors and tasks

bp = Blueprint("wallets", __name__)


@bp.errorhandler(api.ApiError)
def api_error(exc: api.ApiError) -> tuple[Response, int]:
    return jsonify(error=exc.message), exc.status


def _body() -> Any:
    body = request.get_json(silent=True)
    if body is None and request.data:
        raise api.ApiError(400, "the body must be JSON")
    return body or {}


# A POST answers 202: the message is durably queued, not yet applied.
@bp.post("/wallets/<key>/deposits")
def deposit(key: str) -> tuple[dict[str, Any], int]:
    return api.deposit(key, _body(), request.headers.get("Idempotency-Key")), 202


@bp.post("/wallets/<key>/payments")
def pay(key: str) -> tuple[dict[str, Any], int]:
    return api.pay(key, _body(), request.headers.get("Idempotency-Key")), 202


@bp.get("/wallets/<key>/balance")
def balance(key: str) -> dict[str, Any]:
    return api.balance(key)


@bp.get("/wallets/<key>")
def wallet_snapshot(key: str) -> dict[str, Any]:
    return api.wallet_snapshot(key)


@bp.get("/ledger")
def ledger_snapshot() -> dict[str, Any]:
    return api.ledger_snapshot()
