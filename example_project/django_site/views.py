"""JSON views over ``example_project.wallets.api``: send, ask and snapshot."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from example_project.wallets import api

View = Callable[..., JsonResponse]


def json_api(view: Callable[..., dict[str, Any]]) -> View:
    """Answer the view's dict as JSON (202 for a POST: the message is queued, not yet
    applied), and an ``ApiError`` as ``{"error": ...}`` with its status."""

    # A JSON API for programs, authenticated by nothing a browser sends by itself (no session
    # cookie): Django's CSRF check, there for the admin's forms, does not apply to it.
    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            body = view(request, *args, **kwargs)
        except api.ApiError as exc:
            return JsonResponse({"error": exc.message}, status=exc.status)
        return JsonResponse(body, status=202 if request.method == "POST" else 200)

    return wrapper


def _body(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"{}")
    except ValueError:
        raise api.ApiError(400, "the body must be JSON") from None


@require_POST
@json_api
def deposit(request: HttpRequest, key: str) -> dict[str, Any]:
    return api.deposit(key, _body(request), request.headers.get("Idempotency-Key"))


@require_POST
@json_api
def pay(request: HttpRequest, key: str) -> dict[str, Any]:
    return api.pay(key, _body(request), request.headers.get("Idempotency-Key"))


@require_GET
@json_api
def balance(request: HttpRequest, key: str) -> dict[str, Any]:
    return api.balance(key)


@require_GET
@json_api
def wallet_snapshot(request: HttpRequest, key: str) -> dict[str, Any]:
    return api.wallet_snapshot(key)


@require_GET
@json_api
def ledger_snapshot(request: HttpRequest) -> dict[str, Any]:
    return api.ledger_snapshot()
