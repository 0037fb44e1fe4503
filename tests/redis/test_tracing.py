"""Traces (SPEC 7, docs/tracing.md) against a real Redis with the in-process runner: the
sender's W3C trace context is kept in the mailbox entry, the step runs in a child span of
it, and ``ctx.send``, ``ctx.isolate`` and timers carry the step's context on. Spans are
caught by the SDK's in-memory exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from celery_supervise import tracing
from celery_supervise.isolation import ISOLATED_TASK
from celery_supervise.mailbox import Entry
from celery_supervise.testing import LocalRunner
from tests.harness import PROJECT_ROOT

STEP = "celery_supervise.step"


#: The tests' own SDK provider, not installed as the global one (which can be set only once
#: per process, and would then trace every later test of the session): the steps' tracer is
#: taken from it while a test here runs.
_PROVIDER = TracerProvider()
_EXPORTER = InMemorySpanExporter()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    monkeypatch.setattr(tracing, "_tracer", lambda: _PROVIDER.get_tracer(tracing.TRACER_NAME))
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def traced(bank_env: dict[str, str]) -> ModuleType:
    from tests.apps import traced as module

    return module


@pytest.fixture
def local(traced: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(traced.supervision)
    return runner


def _sender() -> Any:
    return _PROVIDER.get_tracer("tests").start_as_current_span("sender")


def _steps(spans: InMemorySpanExporter, type_name: str | None = None) -> list[ReadableSpan]:
    """The step spans, in the order they ended."""
    return [s for s in spans.get_finished_spans() if s.name.startswith(STEP)
            and (type_name is None or s.name == f"{STEP} {type_name}")]  # fmt: skip


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _id(span: Any) -> int:
    return int(span.get_span_context().span_id)


def _trace_id(span: Any) -> int:
    return int(span.get_span_context().trace_id)


def _entries(client: redis.Redis, key: str) -> list[Entry]:
    return [Entry.parse(raw, where="test") for raw in client.lrange(key, 0, -1)]


def _until(local: LocalRunner, done: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        local.tick()
        if value := done():
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_the_step_runs_in_a_child_span_of_the_sender(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter, redis_client: redis.Redis
) -> None:
    ref = traced.supervision.ref("traced.front", "a")
    with _sender() as sender:
        mid = ref.send({})
    (entry,) = _entries(redis_client, ref.keys.mailbox)
    context = sender.get_span_context()
    flags = int(context.trace_flags)
    assert entry.header["trace"] == {
        "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    }
    local.run()
    (step,) = _steps(spans)
    assert step.name == "celery_supervise.step traced.front" and step.kind == SpanKind.CONSUMER
    assert _trace_id(step) == context.trace_id and _parent_of(step) == context.span_id
    assert dict(step.attributes or {}) == {
        "celery_supervise.actor.type": "traced.front",
        "celery_supervise.actor.key": "a",
        "celery_supervise.message.id": mid,
        "celery_supervise.message.seq": entry.seq,
        "celery_supervise.attempt": 1,
        "celery_supervise.outcome": "committed",
        "celery_supervise.version": 1,
    }
    assert set(step.attributes or {}) == {f"celery_supervise.{a}" for a in tracing.ATTRIBUTES}


def test_tracestate_is_kept_with_the_traceparent(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter, redis_client: redis.Redis
) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "v1")]))  # fmt: skip
    ref = traced.supervision.ref("traced.front", "state")
    with trace.use_span(NonRecordingSpan(remote)):
        ref.send({})
    (entry,) = _entries(redis_client, ref.keys.mailbox)
    assert entry.header["trace"]["tracestate"] == "vendor=v1"
    local.run()
    (step,) = _steps(spans)
    assert step.parent is not None and step.parent.trace_state.get("vendor") == "v1"
    assert _parent_of(step) == 0xDEF and _trace_id(step) == 0xABC


def test_without_a_span_the_entry_has_no_trace_and_the_step_starts_one(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter, redis_client: redis.Redis
) -> None:
    """Nothing active at ``send``: no trace stored; the step's span is then a root, and what
    the step asks for continues that one."""
    ref = traced.supervision.ref("traced.front", "plain")
    ref.send({"relay": "b", "after": 0, "isolate": "job"})
    (raw,) = redis_client.lrange(ref.keys.mailbox, 0, -1)
    assert b'"trace"' not in raw
    local.run(max_runs=1)
    (step,) = _steps(spans)
    assert step.parent is None
    back = traced.supervision.ref("traced.back", "b")
    (timer,) = redis_client.zrange(ref.keys.timers, 0, -1)
    (relayed,) = _entries(redis_client, back.keys.mailbox)
    (record,) = [json.loads(v) for f, v in redis_client.hgetall(ref.keys.isolates).items()
                 if b"|" not in f]  # fmt: skip
    assert Entry.parse(b"1 0 " + timer, where="timer").trace == _carrier(step)
    assert relayed.trace == _carrier(step) and record["trace"] == _carrier(step)


def test_a_batch_gets_one_span_per_step(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter
) -> None:
    ref = traced.supervision.ref("traced.front", "batch")
    senders = []
    for _ in range(3):
        with _sender() as sender:
            ref.send({})
        senders.append(sender)
    assert local.run() == 1  # one task run took the three messages
    steps = _steps(spans)
    assert [_parent_of(s) for s in steps] == [_id(s) for s in senders]
    assert [s.attributes["celery_supervise.message.seq"] for s in steps] == [1, 2, 3]


def test_ctx_send_carries_the_step_context_to_the_receiving_step(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter
) -> None:
    front = traced.supervision.ref("traced.front", "f")
    with _sender() as sender:
        front.send({"relay": "b", "self": "again"})
    local.run()
    first, again = _steps(spans, "traced.front")
    (back,) = _steps(spans, "traced.back")
    assert _parent_of(first) == _id(sender)
    assert _parent_of(back) == _id(first) and _parent_of(again) == _id(first)
    assert {_trace_id(s) for s in (first, back, again)} == {_trace_id(sender)}
    assert traced.supervision.ref("traced.back", "b").snapshot().state == {"got": [{"from": "f"}]}


def test_a_send_relayed_later_by_the_tick_keeps_the_step_context(
    traced: ModuleType,
    local: LocalRunner,
    spans: InMemorySpanExporter,
    redis_client: redis.Redis,
) -> None:
    """The worker died between its commit and its relay: the tick relays the outbox entry,
    in the trace of the step that committed it."""
    from celery_supervise import runner

    front = traced.supervision.ref("traced.front", "late")
    with pytest.MonkeyPatch.context() as died:
        died.setattr(runner, "relay_outbox", lambda *args: None)
        with _sender():
            front.send({"relay": "b-late"})
        local.run()
    (item,) = [json.loads(raw) for raw in redis_client.lrange(front.keys.outbox, 0, -1)]
    (first,) = _steps(spans)
    assert item["trace"] == _carrier(first)
    _until(local, lambda: _steps(spans, "traced.back"))
    (back,) = _steps(spans, "traced.back")
    assert _parent_of(back) == _id(first)


def _carrier(span: ReadableSpan) -> dict[str, str]:
    context = span.get_span_context()
    flags = int(context.trace_flags)
    return {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"}


def test_timers_carry_the_step_context_unnamed_named_and_periodic(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter
) -> None:
    front = traced.supervision.ref("traced.front", "timers")
    with _sender():
        front.send({"after": 0, "timer": "named"})
    local.run()
    with _sender():
        front.send({"timer": "periodic", "every": 0.5})
    local.run()
    _until(local, lambda: front.snapshot().state["ticks"].count("periodic") >= 2)
    front.send({"cancel": "periodic"})
    local.run()
    setter_once, setter_periodic = _steps(spans)[:2]
    by_tick: dict[str, list[ReadableSpan]] = {}
    for step in _steps(spans)[2:]:
        message_id = str(step.attributes["celery_supervise.message.id"])
        if "@1.t0" in message_id:
            by_tick.setdefault("unnamed", []).append(step)
        elif "@1.n0" in message_id:
            by_tick.setdefault("named", []).append(step)
        elif "@2.n0/" in message_id:
            by_tick.setdefault("periodic", []).append(step)
    assert [_parent_of(s) for s in by_tick["unnamed"]] == [_id(setter_once)]
    assert [_parent_of(s) for s in by_tick["named"]] == [_id(setter_once)]
    assert len(by_tick["periodic"]) >= 2  # every firing, a child of the step that set it
    assert {_parent_of(s) for s in by_tick["periodic"]} == {_id(setter_periodic)}


def test_ctx_isolate_publishes_in_the_step_context_and_the_outcome_continues_the_subtask(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter
) -> None:
    """The subtask's task is published with the asking step's span current (Celery's
    instrumentation injects that into the task's headers: tests/workers shows it end to
    end); the outcome message carries the context the subtask ran in."""
    published: list[tuple[str, Any]] = []
    enqueue = traced.supervision.dispatcher

    def recording(name: str, args: Any, kwargs: Any, options: Any) -> None:
        published.append((name, trace.get_current_span().get_span_context()))
        enqueue(name, args, kwargs, options)

    traced.supervision.dispatcher = recording
    front = traced.supervision.ref("traced.front", "iso")
    with _sender():
        front.send({"isolate": "job"})
    local.run(max_runs=1)
    (asking,) = _steps(spans)
    (context,) = [c for name, c in published if name == ISOLATED_TASK]
    assert (context.trace_id, context.span_id) == (_trace_id(asking), _id(asking))
    (name, args, kwargs) = local.queue.popleft()
    assert name == ISOLATED_TASK
    # as Celery's instrumentation runs it: in a span continuing the published context
    published_in = trace.set_span_in_context(trace.NonRecordingSpan(context))
    tracer = _PROVIDER.get_tracer("tests")
    with tracer.start_as_current_span("run/celery_supervise.isolated", published_in) as run:
        traced.app.tasks[ISOLATED_TASK].apply(args=args, kwargs=kwargs)
    local.run()
    (_, outcome) = _steps(spans)
    assert _parent_of(outcome) == _id(run) and _trace_id(outcome) == _trace_id(asking)
    assert front.snapshot().state["outcomes"] == [{"isolated": "job", "ok": True, "result": 2}]


def test_a_subtask_timeout_delivered_by_the_tick_continues_the_asking_step(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter
) -> None:
    """No worker ran the subtask: the tick's timeout outcome is a child of the step that
    asked for it (the pending record keeps the step's context)."""
    front = traced.supervision.ref("traced.front", "lost")
    with _sender():
        front.send({"isolate": "never", "timeout": 0.2})
    local.run(max_runs=1)
    local.queue.clear()  # the subtask's task is lost: nobody runs it
    _until(local, lambda: front.snapshot().state["outcomes"])
    asking, outcome = _steps(spans)
    assert front.snapshot().state["outcomes"][0]["error"]["type"] == "Timeout"
    assert _parent_of(outcome) == _id(asking)


def test_a_crashed_step_is_an_error_span_and_each_attempt_has_its_own(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter
) -> None:
    front = traced.supervision.ref("traced.front", "crash")
    with _sender() as sender:
        front.send({"fail": True})
    local.run()
    _until(local, lambda: len(_steps(spans)) >= 2, seconds=15)  # restarted after backoff
    first, second = _steps(spans)[:2]
    for attempt, step in enumerate((first, second), start=1):
        assert step.attributes["celery_supervise.outcome"] == "crashed"
        assert step.attributes["celery_supervise.attempt"] == attempt
        assert step.status.status_code == StatusCode.ERROR
        assert [e.name for e in step.events] == ["exception"]
        assert step.events[0].attributes["exception.message"] == "asked to fail"
        assert _parent_of(step) == _id(sender)


def test_without_opentelemetry_a_step_runs_as_before(supervise_redis_url: str) -> None:
    """A process where ``opentelemetry`` cannot be imported: sends, steps, relays, timers and
    subtasks work, and nothing stores a trace."""
    script = """
import json, sys
sys.modules["opentelemetry"] = None  # as if it were not installed
from celery_supervise import tracing
from celery_supervise.testing import LocalRunner
from celery_supervise.testing.pointing import clear_keys
from tests.apps import traced

clear_keys(traced.supervision)
local = LocalRunner(traced.supervision)
front = traced.supervision.ref("traced.front", "no-otel")
front.send({"relay": "b", "isolate": "job", "timer": "t", "in": 60})
raw = [*traced.supervision.client.lrange(front.keys.mailbox, 0, -1)]
local.run()
client = traced.supervision.client
stored = raw + client.lrange(traced.supervision.ref("traced.back", "b").keys.mailbox, 0, -1)
stored += list(client.hvals(front.keys.timer_specs))
print(json.dumps({
    "available": tracing.AVAILABLE,
    "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m]),
    "traced": [item.decode() for item in stored if b'"trace"' in item],
    "n_stored": len(stored),
    "front": front.snapshot().state,
    "back": traced.supervision.ref("traced.back", "b").snapshot().state,
}))
"""
    env = {**os.environ, "TEST_BROKER_URL": supervise_redis_url, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["available"] is False and out["loaded"] == []
    assert out["traced"] == [] and out["n_stored"] >= 2
    assert out["front"]["outcomes"] == [{"isolated": "job", "ok": True, "result": 2}]
    assert out["back"] == {"got": [{"from": "no-otel"}]}



def test_a_commit_refused_for_a_lost_lease_is_outcome_lease_lost(
    traced: ModuleType,
    local: LocalRunner,
    spans: InMemorySpanExporter,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery_supervise import runner

    front = traced.supervision.ref("traced.front", "lease")
    real = runner.step_on_copy

    def fenced_out(*args: Any, **kwargs: Any) -> Any:
        redis_client.hincrby(front.keys.meta, "token", 1)  # another worker took the lease
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "step_on_copy", fenced_out)
    with _sender():
        front.send({})
    local.run(max_runs=1)
    (step,) = _steps(spans)
    assert step.attributes["celery_supervise.outcome"] == "lease_lost"
    assert front.snapshot().version == 0  # nothing committed


def test_a_message_this_process_cannot_open_is_outcome_refused(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter
) -> None:
    """Sealed by a ``supervise_codec`` this process does not have: not stepped, refused."""
    front = traced.supervision.ref("traced.front", "sealed")
    with _sender():
        front.send("sealed:AAAA")
    local.run(max_runs=1)
    (step,) = _steps(spans)
    assert step.attributes["celery_supervise.outcome"] == "refused"
    assert front.snapshot().pending == 1  # left for a worker that can open it
    assert set(tracing.OUTCOMES) == {"committed", "crashed", "lease_lost", "refused"}


def test_a_requeued_dead_letter_is_sent_again_by_whoever_requeues_it(
    traced: ModuleType, local: LocalRunner, spans: InMemorySpanExporter, redis_client: redis.Redis
) -> None:
    fragile = traced.supervision.ref("traced.fragile", "f")
    with _sender():
        mid = fragile.send({"fail": True})
    local.run()
    assert [letter.message_id for letter in fragile.dead_letters()] == [mid]
    with _sender() as operator:  # an admin page's request, say
        fragile.requeue_dead_letter(mid)
    (entry,) = _entries(redis_client, fragile.keys.mailbox)
    assert entry.message_id == mid and entry.trace is not None
    _until(local, lambda: len(_steps(spans)) >= 2)
    assert _parent_of(_steps(spans)[1]) == _id(operator)


def test_a_dead_letter_released_after_replay_is_sent_again_by_the_releaser(
    traced: ModuleType,
    local: LocalRunner,
    spans: InMemorySpanExporter,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fragile = traced.supervision.ref("traced.fragile", "r")
    mid = fragile.send({"fail": True})
    local.run()
    monkeypatch.setitem(traced.FRAGILE, "broken", False)  # the fix is deployed here
    result = fragile.replay(message_id=mid)
    with _sender() as operator:
        assert fragile.release(result) == "requeued"
    (entry,) = _entries(redis_client, fragile.keys.mailbox)
    assert entry.message_id == mid
    _until(local, lambda: fragile.snapshot().state == {"n": 1})  # restarted after its crash
    assert _parent_of(_steps(spans)[-1]) == _id(operator)
