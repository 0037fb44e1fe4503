"""An actor for the encryption-at-rest tests: every payload it touches holds a marker
("PLAINTEXT-...") that must never appear in Redis under ``FernetCodec``."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from celery_supervise import actor


@shared_task(name="vault.reveal")
def reveal(secret: str) -> str:
    """An isolated subtask whose result (in the outcome message) is a secret too."""
    return secret + "-revealed"


@actor(name="vault.safe", initial=lambda key: {"secrets": []}, max_attempts=2, history=5)
def safe(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Keeps ``message["secret"]``; ``boom`` crashes (dead-lettered after two attempts),
    ``forward`` sends it on, ``later`` sets a timer, ``again`` sends itself a message,
    ``reveal`` runs an isolated subtask whose result it keeps."""
    if "isolated" in message:
        state["secrets"].append(message["result"] if message["ok"] else "failed")
        return state
    if message.get("boom"):
        raise ValueError("boom")
    state["secrets"].append(message["secret"])
    if "forward" in message:
        ctx.send(safe.ref(message["forward"]), {"secret": message["secret"] + "-fwd"})
    if message.get("later"):
        ctx.send_after(3600, {"secret": message["secret"] + "-timer"})
        ctx.send_after(3600, {"secret": message["secret"] + "-named"}, name="named")
    if message.get("reveal"):
        ctx.isolate({"task": "vault.reveal", "args": [message["secret"]], "kwargs": {}},
                    tag="reveal")  # fmt: skip
    if message.get("again"):
        ctx.send(safe.ref(ctx.key), {"secret": message["secret"] + "-self"})
    ctx.reply(len(state["secrets"]))
    return state
