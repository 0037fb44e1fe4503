"""``ctx.send_after(..., name=, every=)`` and ``ctx.cancel_timer``: what a step records
(the last word per name), what it rejects, and how a replay reports it. No Redis."""

from __future__ import annotations

from typing import Any

import pytest

from celery_supervise import InvalidMessage
from celery_supervise.context import Context, NamedTimer
from celery_supervise.effects import encode_effects
from celery_supervise.replay import ReplayEffects


def _ctx(min_period: float = 1.0) -> Context:
    return Context(actor="t", key="k", message_id="m", version=3, attempt=1,
                   reply_wanted=False, max_message_bytes=1000, min_timer_period=min_period)


def test_the_last_word_per_name_wins() -> None:
    ctx = _ctx()
    ctx.send_after(5, "a", name="x")
    ctx.cancel_timer("y")
    ctx.send_after(7, "b", name="x", every=2)
    ctx.send_after(1, "c", name="y")
    ctx.cancel_timer("z")
    assert ctx.effects.named_timers == {
        "x": NamedTimer(7.0, 2.0, b'"b"'), "y": NamedTimer(1.0, None, b'"c"'), "z": None
    }
    assert sorted(ctx.effects.timer_delays()) == [1.0, 7.0]
    assert ctx.effects  # a cancel alone is an effect too


def test_encoded_named_timers_have_deterministic_ids() -> None:
    ctx = _ctx()
    ctx.send_after(0.5, {"n": 1}, name="x", every=2)
    ctx.cancel_timer("gone")
    encoded = encode_effects(ctx.effects, type_name="t", key="k", version=4, reply_to=None,
                             now_ms=0)
    assert list(encoded.named_timers) == [
        ("x", 500, b'2000\n"t:k@4.n0"\n,"timer":true,"name":"x"}\n{"n":1}'),
        ("gone", None, b""),
    ]


@pytest.mark.parametrize(
    ("call", "word"),
    [(lambda c: c.send_after(1, 1, name=""), "name"),
     (lambda c: c.send_after(1, 1, name="n" * 201), "name"),
     (lambda c: c.send_after(1, 1, name=3), "name"),
     (lambda c: c.cancel_timer(""), "name"),
     (lambda c: c.send_after(1, 1, every=5), "every needs a name"),
     (lambda c: c.send_after(1, 1, name="n", every=0), "every"),
     (lambda c: c.send_after(1, 1, name="n", every=-1), "every"),
     (lambda c: c.send_after(1, 1, name="n", every=float("nan")), "every"),
     (lambda c: c.send_after(1, 1, name="n", every=float("inf")), "every"),
     (lambda c: c.send_after(1, 1, name="n", every=True), "every"),
     (lambda c: c.send_after(1, 1, name="n", every=0.5), "tick interval")],
)
def test_bad_arguments_are_refused_and_record_nothing(call: Any, word: str) -> None:
    ctx = _ctx()
    with pytest.raises(InvalidMessage, match=word):
        call(ctx)
    assert not ctx.effects


def test_a_replay_reports_named_timers_and_cancels() -> None:
    ctx = _ctx()
    ctx.send_after(2, "plain")
    ctx.send_after(3, "named", name="x", every=4)
    ctx.cancel_timer("y")
    effects = ReplayEffects.of(ctx)
    assert effects.timers == ({"after": 2.0, "message": "plain"},
                              {"after": 3.0, "message": "named", "name": "x", "every": 4.0})
    assert effects.cancelled_timers == ("y",)
