"""Example for docs/effects.md: charge a card from an actor, safely.

The charge runs as an isolated subtask. It *runs* at least once -- after a worker dies
mid-call the actor learns only "WorkerLost" and cannot know whether the card was charged --
so the call carries an idempotency key derived from the order, and a retry reuses it: the
provider charges at most once however many times the subtask runs.

This file is imported and run by tests/workers/test_effects.py, so it stays correct.
"""

from __future__ import annotations

from typing import Any

from celery import current_app, shared_task
from redis import Redis

from celery_supervise import actor

#: How often the order retries a charge whose outcome is unknown (worker lost, timeout).
MAX_TRIES = 3


class PaymentProvider:
    """Stands in for a real provider's API that honours idempotency keys (most do).
    Here: a ledger in Redis where the first charge under a key wins."""

    def charge(self, amount_cents: int, *, idempotency_key: str) -> dict[str, Any]:
        redis = Redis.from_url(current_app.conf.broker_url)
        ledger = f"example:psp:charge:{idempotency_key}"
        first = redis.set(ledger, amount_cents, nx=True, ex=7 * 86400)
        redis.incr(f"example:psp:calls:{idempotency_key}")  # only for the test to count
        answer = {
            "charge_id": f"ch_{idempotency_key}",
            "amount": int(redis.get(ledger) or 0),
            "replayed": not first,
        }
        redis.close()
        return answer


provider = PaymentProvider()


# --8<-- [start:order]
@shared_task(name="example.charge_card")
def charge_card(order_id: str, amount_cents: int, idempotency_key: str) -> dict[str, Any]:
    return provider.charge(amount_cents, idempotency_key=idempotency_key)


@actor(name="example.order", initial={"status": "new", "tries": 0})
def order(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    if "pay" in message:
        state.update(status="paying", amount=message["pay"], tries=0)
        start_charge(ctx, state)
    elif message.get("isolated") == "charge":  # the one outcome message of a charge
        if message["ok"]:
            state.update(status="paid", charge=message["result"])
        elif message["error"]["type"] in ("WorkerLost", "Timeout") and state["tries"] < MAX_TRIES:
            start_charge(ctx, state)  # charged or not? unknown: retry under the same key
        else:
            state.update(status="failed", error=message["error"])
    return state


def start_charge(ctx: Any, state: dict[str, Any]) -> None:
    state["tries"] += 1
    ctx.isolate(
        charge_card.s(ctx.key, state["amount"], f"order-{ctx.key}"),  # same key every try
        tag="charge",
        timeout=30,
    )
# --8<-- [end:order]
