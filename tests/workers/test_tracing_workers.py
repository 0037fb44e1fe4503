"""Traces across real worker processes (SPEC 7, docs/tracing.md): the worker processes of
``tests.apps.traced`` configure the OpenTelemetry SDK when they start and write every span
to a file; this process sends under a span of its own and reads the files back. The links:
sender -> step -> relayed step (``ctx.send``), step -> Celery's publish and run spans of the
isolated subtask (its instrumentation) -> the outcome's step, and step -> the timer's step."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import redis
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from celery_supervise.testing.pointing import clear_keys
from celery_supervise.tick import run_tick
from tests.harness import start_worker, wait_until

APP = "tests.apps.traced"
STEP = "celery_supervise.step"
MESSAGE_ID = "celery_supervise.message.id"


def _spans(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("spans-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def _id(value: str | None) -> int | None:
    return int(value, 16) if value else None


def test_spans_link_sender_step_relay_isolated_task_and_timer_across_workers(
    bank_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    from tests.apps import traced

    clear_keys(traced.supervision)
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    worker = start_worker(APP, concurrency=2, hostname="traced@%h",
                          env={**bank_env, "TEST_SPANS_DIR": str(spans_dir)},
                          log_dir=tmp_path)  # fmt: skip
    try:
        trace_id, sender_id = random.getrandbits(128), random.getrandbits(64)
        sender = SpanContext(trace_id, sender_id, is_remote=False, trace_flags=TraceFlags(1))
        front = traced.supervision.ref("traced.front", "w")
        back = traced.supervision.ref("traced.back", "w-back")
        with trace.use_span(NonRecordingSpan(sender)):  # e.g. a web request's span
            mid = front.send({"relay": "w-back", "isolate": "job", "timer": "soon", "in": 0.2})
        plain = back.send({"untraced": True})  # no span active: nothing stored

        def done() -> bool:
            run_tick(traced.supervision.runtime)  # fires the timer (beat's job in production)
            state = front.snapshot().state
            return bool(state["outcomes"] and state["ticks"] and back.snapshot().state["got"])

        wait_until(done, 60, interval=0.2, message="the relay, subtask and timer did not land")

        def linked() -> list[dict[str, Any]] | None:
            every = _spans(spans_dir)
            spans = [s for s in every if _id(s["context"]["trace_id"]) == trace_id]
            steps = [s for s in spans if s["name"].startswith(STEP)]
            # the four steps of the trace, and the untraced one, have ended and been written
            plains = [s for s in every if s["attributes"].get(MESSAGE_ID) == plain]
            return every if len(steps) >= 4 and plains else None

        every = wait_until(linked, 30, message="the step spans were not written")
    finally:
        worker.kill()

    everything = {_id(s["context"]["span_id"]): s for s in every}
    (untraced,) = [s for s in every if s["attributes"].get(MESSAGE_ID) == plain]
    # a child of the span Celery's instrumentation runs the actor's task in
    assert everything[_id(untraced["parent_id"])]["name"] == "run/traced.back"
    assert _id(untraced["context"]["trace_id"]) != trace_id

    spans = [s for s in every if _id(s["context"]["trace_id"]) == trace_id]
    by_id = {_id(s["context"]["span_id"]): s for s in spans}

    def one(name: str, **attributes: Any) -> dict[str, Any]:
        (found,) = [s for s in spans if s["name"] == name and all(
            s["attributes"].get(f"celery_supervise.{k}") == v for k, v in attributes.items())]
        return found

    def parent(span: dict[str, Any]) -> dict[str, Any] | None:
        return by_id.get(_id(span["parent_id"]))

    step = one(f"{STEP} traced.front", **{"message.id": mid})
    assert _id(step["parent_id"]) == sender_id  # the sender's span, in this process
    assert step["attributes"]["celery_supervise.outcome"] == "committed"
    assert step["resource"]["attributes"]["service.name"] == "traced-worker"

    relayed = one(f"{STEP} traced.back", **{"message.id": "traced.front:w@1.s0"})
    assert parent(relayed) is step

    (timer,) = [s for s in spans if s["name"] == f"{STEP} traced.front"
                and str(s["attributes"]["celery_supervise.message.id"]).endswith("@1.n0")]
    assert parent(timer) is step

    publish = one("apply_async/celery_supervise.isolated")
    run = one("run/celery_supervise.isolated")
    assert parent(publish) is step and parent(run) is publish
    assert parent(one("run/traced.work")) is run  # the user's task, run inside the subtask
    (outcome,) = [s for s in spans if s["name"] == f"{STEP} traced.front"
                  and str(s["attributes"]["celery_supervise.message.id"]).endswith(".outcome")]
    assert parent(outcome) is run
    assert front.snapshot().state["outcomes"] == [{"isolated": "job", "ok": True, "result": 2}]
