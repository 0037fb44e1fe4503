"""The actors of the example suite (your project's ``actors.py``)."""

from typing import Any

from celery_supervise import actor


# --8<-- [start:actor]
@actor(name="tally.counter", initial={"count": 0}, max_attempts=1)
def counter(ctx: Any, state: dict[str, int], message: dict[str, Any]) -> dict[str, int]:
    if message.get("boom"):
        raise RuntimeError("boom")
    state["count"] += message.get("add", 0)
    if message.get("ask"):
        ctx.reply(state["count"])
    return state
# --8<-- [end:actor]
