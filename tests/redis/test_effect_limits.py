"""Effects and outcomes that cannot be JSON messages: ``ctx.send`` and ``ctx.reply`` over
``supervise_max_message_bytes`` raise ``MessageTooLarge`` in the handler (uncaught, the step
crashes and nothing is sent), and an isolated subtask whose result is not JSON comes back as
an ``UnserializableResult`` outcome (the actor never crashes for it)."""

from __future__ import annotations

import datetime
from types import ModuleType
from typing import Any

from celery import shared_task

from celery_supervise import Context, MessageTooLarge, actor
from celery_supervise.testing import LocalRunner

#: Over the default ``supervise_max_message_bytes`` (256 KiB) once encoded.
BIG = "x" * 300_000


@actor(name="limits.sink", initial={"got": []})
def sink(ctx: Context, state: dict[str, Any], message: Any) -> dict[str, Any]:
    state["got"].append(message)
    return state


@actor(name="limits.sender", initial={"caught": 0}, max_attempts=1)
def sender(ctx: Context, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """``{"send": size}`` / ``{"reply": size}``; ``"catch": true`` handles the refusal."""
    effect = ctx.send if "send" in message else None
    try:
        if effect is not None:
            effect(sink.ref("s"), "x" * message["send"])
        else:
            ctx.reply("x" * message["reply"])
    except MessageTooLarge:
        if not message.get("catch"):
            raise
        state["caught"] += 1
        ctx.send(sink.ref("s"), "too large, sent a summary instead")
    return state


@shared_task(name="limits.when")
def when() -> datetime.datetime:  # not JSON: Celery's own serializer is not ours
    return datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


@actor(name="limits.isolator", initial={"outcomes": []})
def isolator(ctx: Context, state: dict[str, Any], message: Any) -> dict[str, Any]:
    if message == "go":
        ctx.isolate(when.s(), tag="when")
    else:
        state["outcomes"].append(message)
    return state


def test_oversized_ctx_send_and_reply_raise_message_too_large(
    bank: ModuleType, supervise_runner: Any
) -> None:
    local: LocalRunner = supervise_runner(bank.supervision)
    for effect in ("send", "reply"):
        ref = bank.supervision.ref("limits.sender", effect)
        ref.send({effect: len(BIG)})
        local.run()
        (dead,) = ref.dead_letters()
        assert dead.message == {effect: len(BIG)}
        crash = dead.crashes[-1]
        assert crash["type"] == "MessageTooLarge"
        assert "over supervise_max_message_bytes=262144" in crash["message"]
        assert ref.snapshot().state == {"caught": 0}  # nothing committed
    assert bank.supervision.ref("limits.sink", "s").snapshot().version == 0  # nothing sent


def test_a_handler_can_catch_message_too_large_and_commit(
    bank: ModuleType, supervise_runner: Any
) -> None:
    local: LocalRunner = supervise_runner(bank.supervision)
    ref = bank.supervision.ref("limits.sender", "caught")
    ref.send({"send": len(BIG), "catch": True})
    local.run()
    assert ref.snapshot().state == {"caught": 1} and ref.dead_letters() == []
    assert bank.supervision.ref("limits.sink", "s").snapshot().state == {
        "got": ["too large, sent a summary instead"]
    }


def test_unserializable_subtask_result_is_an_error_outcome(
    bank: ModuleType, supervise_runner: Any
) -> None:
    local: LocalRunner = supervise_runner(bank.supervision)
    ref = bank.supervision.ref("limits.isolator", "i")
    ref.send("go")
    local.run()
    snap = ref.snapshot()
    (outcome,) = snap.state["outcomes"]
    assert outcome["isolated"] == "when" and outcome["ok"] is False
    assert outcome["error"]["type"] == "UnserializableResult"
    assert "datetime" in outcome["error"]["message"]
    assert snap.last_crash is None and snap.status == "idle"
