"""The README's "What it looks like" example: the README shows the ``readme`` region.

``tests/docs/test_readme.py`` imports it against a throwaway Redis and runs the account
through deposits and payments, an overdraw included, so the README stays correct.
"""

# --8<-- [start:readme]
import os

from celery import Celery
from celery_supervise import Supervision, actor

app = Celery("proj", broker=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
supervision = Supervision(app)          # validates settings, adds the supervisor tick to beat

@app.task
def charge_card(amount, idempotency_key):    # a payment provider's API: slow, may fail
    return {"amount": amount, "charge_id": f"ch_{idempotency_key}"}

@actor(initial=lambda key: {"balance": 0, "held": {}},
       validate=lambda s: 0 <= sum(s["held"].values()) <= s["balance"], max_attempts=3)
def account(ctx, state, message):
    if "deposit" in message:
        state["balance"] += message["deposit"]
    elif "pay" in message:              # hold the money first: never charge what is not there
        if message["pay"] > state["balance"] - sum(state["held"].values()):
            ctx.reply({"rejected": "insufficient funds"})
            return state
        state["held"][ctx.message_id] = message["pay"]
        # risky work goes to an isolated subtask; its outcome comes back as a message
        ctx.isolate(charge_card.s(message["pay"], ctx.message_id), tag=ctx.message_id)
    elif "isolated" in message:         # the charge's one outcome: settle its hold
        amount = state["held"].pop(message["isolated"])
        if message["ok"]:
            state["balance"] -= amount  # held, so validate cannot fail here
    return state                        # committed atomically with the step's effects
# --8<-- [end:readme]


def tour():
    # --8<-- [start:use]
    ref = account.ref("acct-42")
    ref.send({"deposit": 10})                # durable when it returns
    ref.snapshot().state                     # {'balance': 10, 'held': {}} once handled
    # --8<-- [end:use]
    return ref
