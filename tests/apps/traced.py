"""A test app for traces (docs/tracing.md): an actor that relays, isolates and sets timers,
and the worker set-up a project would write to export its spans.

Configured like the bank app (``TEST_BROKER_URL``, ``TEST_LEASE``, ``TEST_TICK``); its keys
start with ``tr``. With ``TEST_SPANS_DIR`` set, each worker process configures the
OpenTelemetry SDK when it starts (``worker_process_init``) and writes every span it ends, as
one JSON object a line, to ``<TEST_SPANS_DIR>/spans-<pid>.jsonl``; Celery's instrumentation
is switched on there too. Nothing here imports OpenTelemetry at import time, so the app also
loads where it is not installed.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from celery_supervise import Supervision, actor

BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("traced", broker=BROKER_URL, set_as_current=False)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    supervise_key_prefix="tr",
    supervise_lease_seconds=float(os.environ.get("TEST_LEASE", "2.0")),
    supervise_tick_interval=float(os.environ.get("TEST_TICK", "0.5")),
)
supervision = Supervision(app)


@app.task(name="traced.work")
def work(n: int) -> int:
    """The isolated subtask's own work."""
    return n + 1


@actor(name="traced.front", initial={"outcomes": [], "ticks": []})
def front(ctx: Any, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """``{"relay": key}`` sends to ``traced.back``, ``{"self": tag}`` to itself;
    ``{"isolate": tag}`` runs ``traced.work`` isolated (``"timeout"``: seconds);
    ``{"after": s}`` sets an unnamed timer, ``{"timer": name}`` a named one (``"in"``:
    seconds, ``"every"``: periodic), ``{"cancel": name}`` cancels it; ``{"fail": True}``
    crashes the step."""
    if message.get("fail"):
        raise ValueError("asked to fail")
    if "isolated" in message:
        state["outcomes"].append(message)
    if "tick" in message:
        state["ticks"].append(message["tick"])
    if "relay" in message:
        ctx.send(supervision.ref("traced.back", message["relay"]), {"from": ctx.key})
    if "self" in message:
        ctx.send(supervision.ref("traced.front", ctx.key), {"tick": message["self"]})
    if "isolate" in message:
        ctx.isolate(work.s(1), tag=message["isolate"], timeout=message.get("timeout"))
    if "after" in message:
        ctx.send_after(message["after"], {"tick": "unnamed"})
    if "timer" in message:
        ctx.send_after(message.get("in", 0.0), {"tick": message["timer"]},
                       name=message["timer"], every=message.get("every"))  # fmt: skip
    if "cancel" in message:
        ctx.cancel_timer(message["cancel"])
    return state


@actor(name="traced.back", initial={"got": []})
def back(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    state["got"].append(message)
    return state


#: While True, ``traced.fragile`` crashes on ``{"fail": True}`` (a test fixes the "bug" to
#: replay the dead letter in its own process).
FRAGILE = {"broken": True}


@actor(name="traced.fragile", initial={"n": 0}, max_attempts=1)
def fragile(ctx: Any, state: dict[str, Any], message: Any) -> dict[str, Any]:
    """Dead-letters ``{"fail": True}`` at its first crash."""
    if isinstance(message, dict) and message.get("fail") and FRAGILE["broken"]:
        raise ValueError("asked to fail")
    state["n"] += 1
    return state


# --8<-- [start:worker-setup]
@worker_process_init.connect(weak=False)
def start_tracing(**_: Any) -> None:
    """Configure OpenTelemetry in each worker process, once it has forked."""
    spans_dir = os.environ.get("TEST_SPANS_DIR")
    if not spans_dir:
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "traced-worker"}))
    out = open(os.path.join(spans_dir, f"spans-{os.getpid()}.jsonl"), "a")  # noqa: SIM115
    exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()  # the isolated subtasks' spans continue the trace
# --8<-- [end:worker-setup]
