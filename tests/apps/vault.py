"""An actor for the encryption-at-rest tests: every payload it touches holds a marker
("PLAINTEXT-...") that must never appear in Redis under ``FernetCodec``."""

from __future__ import annotations

from typing import Any

from celery_supervise import actor


@actor(name="vault.safe", initial=lambda key: {"secrets": []}, max_attempts=2, history=5)
def safe(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Keeps ``message["secret"]``; ``boom`` crashes (dead-lettered after two attempts),
    ``forward`` sends it on, ``later`` sets a timer, ``again`` sends itself a message."""
    if message.get("boom"):
        raise ValueError("boom")
    state["secrets"].append(message["secret"])
    if "forward" in message:
        ctx.send(safe.ref(message["forward"]), {"secret": message["secret"] + "-fwd"})
    if message.get("later"):
        ctx.send_after(3600, {"secret": message["secret"] + "-timer"})
    if message.get("again"):
        ctx.send(safe.ref(ctx.key), {"secret": message["secret"] + "-self"})
    ctx.reply(len(state["secrets"]))
    return state
