"""The stored trace context (``tracing.py``), pure: what is kept in a header, outbox item,
timer and subtask record, what is read back (garbage and old entries: nothing), and that the
package works unchanged where OpenTelemetry is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from celery_supervise import tracing
from celery_supervise.context import Effects, NamedTimer
from celery_supervise.effects import encode_effects
from celery_supervise.mailbox import Entry, header_json
from celery_supervise.timers import named_spec, parse_timers

ROOT = Path(__file__).resolve().parents[2]
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE = {"traceparent": PARENT, "tracestate": "vendor=v1"}


@pytest.mark.parametrize(
    "value",
    [None, "garbage", 3, [], {}, {"traceparent": 5}, {"traceparent": "00-xyz"},
     {"traceparent": PARENT.upper()}, {"traceparent": PARENT + "-extra"}],
)  # fmt: skip
def test_a_stored_trace_that_is_not_one_we_write_reads_as_none(value: Any) -> None:
    assert tracing.carried(value) is None


def test_a_stored_trace_reads_back_with_its_tracestate_kept_when_usable() -> None:
    assert tracing.carried(TRACE) == TRACE
    assert tracing.carried({"traceparent": PARENT, "tracestate": ""}) == {"traceparent": PARENT}
    too_long = {"traceparent": PARENT, "tracestate": "a=" + "b" * 600}
    assert tracing.carried(too_long) == {"traceparent": PARENT}
    assert tracing.carried({**TRACE, "baggage": "x"}) == TRACE  # only what we write


def test_the_header_holds_the_trace_only_when_there_is_one() -> None:
    assert header_json("m1") == '{"id":"m1"}'
    assert header_json("m1", reply=True, trace=None) == '{"id":"m1","reply":true}'
    traced = header_json("m1", reply=True, trace=TRACE)
    assert json.loads(traced) == {"id": "m1", "reply": True, "trace": TRACE}
    entry = Entry.parse(f"7 0 {traced}\nnull", where="test")
    assert entry.trace == TRACE and entry.message_id == "m1" and entry.reply_wanted


def test_an_entry_written_before_tracing_has_no_trace() -> None:
    assert Entry.parse('3 1700000000000 {"id":"old"}\n{"a":1}', where="test").trace is None
    garbage = Entry.parse('3 0 {"id":"x","trace":"no"}\nnull', where="test")
    assert garbage.trace is None  # read as none: a step never fails over its trace


def test_the_current_span_is_the_carrier_at_send() -> None:
    assert tracing.carrier() is None  # no span active
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331,
                          is_remote=False, trace_flags=TraceFlags(1))  # fmt: skip
    with trace.use_span(NonRecordingSpan(context)):
        assert tracing.carrier() == {"traceparent": PARENT}
    invalid = NonRecordingSpan(SpanContext(0, 0, is_remote=False))
    with trace.use_span(invalid):
        assert tracing.carrier() is None


def test_continued_makes_the_stored_context_current_for_the_block() -> None:
    with tracing.continued(TRACE):
        assert tracing.carrier() == TRACE
    assert tracing.carrier() is None
    with tracing.continued(None):
        assert tracing.carrier() is None


def _effects() -> Effects:
    return Effects(
        sends=[("other", "k2", b'{"a":1}'), ("me", "k", b'{"self":1}')],
        isolates=[{"tag": "t", "task": "x.y", "args": [], "kwargs": {}, "timeout": None}],
        timers=[(1.0, b'"later"')],
        named_timers={"n": NamedTimer(2.0, 5.0, b'"named"')},
    )


def _encoded(trace_: dict[str, str] | None) -> Any:
    return encode_effects(_effects(), type_name="me", key="k", version=3, reply_to=None,
                          now_ms=1000, trace=trace_)  # fmt: skip


def test_without_a_trace_the_effects_are_stored_as_they_always_were() -> None:
    encoded = _encoded(None)
    stored = [*encoded.outbox, *(h.encode() for h, _ in encoded.selfs),
              *(t for _, t in encoded.timers), *(r for _, r in encoded.isolates),
              *(spec for _, _, spec in encoded.named_timers)]  # fmt: skip
    assert len(stored) == 6 and not any(b"trace" in item for item in stored)
    assert encoded.outbox[0] == (
        b'{"kind": "send", "type": "other", "key": "k2", "id": "me:k@3.s0", "from": "me:k", '
        b'"ord": 3072,"message":{"a":1}}'
    )
    assert encoded.timers[0][1] == b'{"id":"me:k@3.t0","timer":true}\n"later"'


def test_with_a_trace_every_effect_stores_it() -> None:
    encoded = _encoded(TRACE)
    send, isolate = (json.loads(item) for item in encoded.outbox)
    assert send["trace"] == TRACE and send["message"] == {"a": 1} and send["ord"] == 3072
    assert isolate["trace"] == TRACE and isolate["kind"] == "isolate"
    ((self_header, _),) = encoded.selfs
    assert json.loads(self_header)["trace"] == TRACE
    ((_, timer),) = encoded.timers
    assert Entry.parse(b"1 0 " + timer, where="timer").trace == TRACE
    ((_, record),) = encoded.isolates
    assert json.loads(record)["trace"] == TRACE
    ((_, _, spec),) = encoded.named_timers
    (timer,) = parse_timers([(b"@n", 9000.0)], {b"n": spec}, where="test")
    assert b'"trace":' in spec and timer.message == "named"


def test_a_named_timer_spec_keeps_the_trace_in_every_firing() -> None:
    spec = named_spec("me:k@3.n0", "n", 5000, b'"tick"', trace=TRACE)
    # what fire_timers.lua builds for a periodic firing: the id with "/<due>", then the rest
    _every, id_json, rest, body = spec.split(b"\n", 3)
    fired = b'{"id":' + id_json[:-1] + b'/9000"' + rest + b"\n" + body
    entry = Entry.parse(b"1 0 " + fired, where="timer")
    assert (entry.message_id, entry.trace, entry.header["name"]) == ("me:k@3.n0/9000", TRACE, "n")
    (timer,) = parse_timers([(b"@n", 9000.0)], {b"n": spec}, where="test")
    assert (timer.name, timer.every, timer.message) == ("n", 5.0, "tick")


def test_a_step_span_without_a_tracer_provider_passes_the_sender_trace_on() -> None:
    """No SDK configured (the API's no-op tracer): the step's effects still carry the
    sender's context, so a trace crosses a process that records nothing."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(TRACE)
    for noop in (trace.NoOpTracer().start_span("step", context=parent), trace.INVALID_SPAN):
        span = tracing.StepSpan(noop, TRACE)
        span.note(outcome="committed", attempt=1)
        assert span.carrier == TRACE


def test_the_package_works_where_opentelemetry_is_not_installed() -> None:
    script = """
import json, sys
sys.modules["opentelemetry"] = None  # as if it were not installed
from celery_supervise import delivery, effects, isolation, relay, runner, tracing
from celery_supervise.context import Effects
from celery_supervise.mailbox import Entry, header_json
trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
with tracing.continued(trace):
    current = tracing.carrier()
with tracing.step_span("me", "k", trace) as span:
    span.note(outcome="crashed")
    span.failed(ValueError("x"))
    passed_on = span.carrier
with tracing.step_span("me", "k", None) as span:
    none_on = span.carrier
encoded = effects.encode_effects(Effects(sends=[("o", "k", b"1")], timers=[(1.0, b"2")]),
    type_name="me", key="k", version=1, reply_to=None, now_ms=0, trace=None)
print(json.dumps({
    "available": tracing.AVAILABLE,
    "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m]),
    "current": current, "passed_on": passed_on, "none_on": none_on,
    "header": header_json("m"),
    "entry_trace": Entry.parse(b"1 0 " + header_json("m", trace=trace).encode() + b"\\n1",
                               where="t").trace,
    "stored": [x.decode() for x in encoded.outbox] + [t.decode() for _, t in encoded.timers],
}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["available"] is False and out["loaded"] == []
    assert out["current"] is None  # nothing to make current without OpenTelemetry
    trace_ = {"traceparent": PARENT}
    assert out["passed_on"] == trace_ and out["none_on"] is None
    assert out["header"] == '{"id":"m"}' and out["entry_trace"] == trace_
    assert not any("trace" in item for item in out["stored"])


def test_the_stored_format_is_w3c_whatever_the_global_propagator() -> None:
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    before = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([]))  # e.g. an app configured for B3
    try:
        with tracing.continued(TRACE):
            assert tracing.carrier() == TRACE
    finally:
        propagate.set_global_textmap(before)
