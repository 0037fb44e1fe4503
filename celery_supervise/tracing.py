"""OpenTelemetry traces, when ``opentelemetry-api`` is installed (the ``otel`` extra).

A message sent while a span is active carries that span's W3C trace context (``traceparent``
and ``tracestate``) in its mailbox entry's header, field ``"trace"``; the step that handles
it runs in a span whose parent is that context, wherever and whenever it runs. What a step
asks for (sends, timers, isolated subtasks) is stored with the step's own context, and
whoever delivers it later (the worker, the tick) puts that context back first. Without
OpenTelemetry, or with no span active, the field is simply absent: entries, outbox items and
timers are what they always were, and no work is done here (docs/tracing.md).

Nothing is configured here: the application sets up its tracer provider and exporters (and
``opentelemetry-instrumentation-celery`` for the isolated subtasks), as for any library.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

try:  # optional: the ``otel`` extra
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the pure test runs this branch in a subprocess
    _trace = None  # type: ignore[assignment]
    _context = None  # type: ignore[assignment]
    _PROPAGATOR = None
else:
    #: W3C Trace Context explicitly, whatever the application's global propagator is: the
    #: stored format must not change with a process's configuration.
    _PROPAGATOR = TraceContextTextMapPropagator()

__all__ = [
    "ATTRIBUTES",
    "AVAILABLE",
    "OUTCOMES",
    "SPAN_PREFIX",
    "TRACER_NAME",
    "Carrier",
    "StepSpan",
    "carried",
    "carrier",
    "continued",
    "step_span",
]

#: A stored trace context: ``{"traceparent": ..., "tracestate": ...}`` (tracestate optional).
Carrier = dict[str, str]

#: True when ``opentelemetry-api`` could be imported in this process.
AVAILABLE = _trace is not None
#: A step's span is named ``"celery_supervise.step <actor type>"``.
SPAN_PREFIX = "celery_supervise.step"
#: The tracer's instrumentation scope.
TRACER_NAME = "celery_supervise"
#: The attributes of a step's span, each prefixed ``celery_supervise.`` (docs/tracing.md).
ATTRIBUTES = ("actor.type", "actor.key", "message.id", "message.seq", "attempt", "outcome",
              "version")  # fmt: skip
#: Its ``outcome``: committed, crashed, the lease lost at commit, or refused (the process
#: cannot open the payload: ``supervise_codec``).
OUTCOMES = ("committed", "crashed", "lease_lost", "refused")

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
#: W3C caps tracestate at 32 members; 512 characters is what propagators must keep.
_MAX_TRACESTATE = 512


def carrier() -> Carrier | None:
    """The W3C trace context of the span active here, or None: no OpenTelemetry, or no
    valid span (then nothing is stored, and nothing costs anything)."""
    if _trace is None or _PROPAGATOR is None:
        return None
    if not _trace.get_current_span().get_span_context().is_valid:
        return None
    out: Carrier = {}
    _PROPAGATOR.inject(out)
    return carried(out)


def carried(value: Any) -> Carrier | None:
    """A stored ``"trace"`` field as a carrier, or None when there is none or it is not one
    we write (an entry from before tracing, or garbage: a step never fails over its trace)."""
    if not isinstance(value, Mapping):
        return None
    parent = value.get("traceparent")
    if not isinstance(parent, str) or _TRACEPARENT.fullmatch(parent) is None:
        return None
    out: Carrier = {"traceparent": parent}
    state = value.get("tracestate")
    if isinstance(state, str) and state and len(state) <= _MAX_TRACESTATE:
        out["tracestate"] = state
    return out


def _extract(trace: Carrier | None) -> Any:
    """The OpenTelemetry context ``trace`` names (None: the current one)."""
    if trace is None or _PROPAGATOR is None:
        return None
    return _PROPAGATOR.extract(trace)


@contextlib.contextmanager
def continued(trace: Carrier | None) -> Iterator[None]:
    """Run the block with ``trace`` as the current context: delivering a stored effect
    (``ctx.send``, ``ctx.isolate``) as if from inside the step that asked for it, so what
    the block publishes (Celery's instrumentation injects the current context) joins it."""
    parent = _extract(trace)
    if parent is None or _context is None:
        yield
        return
    token = _context.attach(parent)
    try:
        yield
    finally:
        _context.detach(token)


class StepSpan:
    """The span of one step (a no-op without OpenTelemetry): ``note`` sets its attributes,
    ``carrier`` is its context, stored with the step's effects."""

    def __init__(self, span: Any, parent: Carrier | None) -> None:
        self._span = span
        self._parent = parent
        self.carrier = self._own_carrier()

    def _own_carrier(self) -> Carrier | None:
        if self._span is None or _trace is None or _PROPAGATOR is None:
            return self._parent
        if not self._span.get_span_context().is_valid:
            return self._parent  # no SDK here: pass the sender's trace on unchanged
        out: Carrier = {}
        _PROPAGATOR.inject(out, context=_trace.set_span_in_context(self._span))
        return carried(out) or self._parent

    def note(self, **attributes: str | int) -> None:
        """Set ``celery_supervise.<name>`` attributes (``actor_type`` -> ``actor.type``)."""
        if self._span is None:
            return
        for name, value in attributes.items():
            self._span.set_attribute(f"celery_supervise.{name.replace('_', '.')}", value)

    def failed(self, exc: BaseException) -> None:
        """The step crashed: the exception recorded, the span's status an error."""
        if self._span is None or _trace is None:
            return
        self._span.record_exception(exc)
        self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{type(exc).__name__}"))


@functools.cache
def _tracer() -> Any:
    """The tracer, got once: before the application sets its provider this is OpenTelemetry's
    proxy, which follows the provider once set (the global provider is set at most once)."""
    assert _trace is not None
    return _trace.get_tracer(TRACER_NAME)


@contextlib.contextmanager
def step_span(type_name: str, key: str, parent: Carrier | None) -> Iterator[StepSpan]:
    """A span for one step of actor ``type_name:key``, current for the block, whose parent
    is the entry's stored context ``parent`` (None: the current context, e.g. Celery's own
    task span, or none). Without OpenTelemetry the block runs with a no-op ``StepSpan``."""
    if _trace is None:
        yield StepSpan(None, parent)
        return
    with _tracer().start_as_current_span(
        f"{SPAN_PREFIX} {type_name}",
        context=_extract(parent),
        kind=_trace.SpanKind.CONSUMER,
        attributes={"celery_supervise.actor.type": type_name, "celery_supervise.actor.key": key},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield StepSpan(span, parent)
