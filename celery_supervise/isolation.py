"""Isolated subtasks: ``ctx.isolate(signature, tag=..., timeout=...)``.

The essay's first advice: put failure-prone work in its own process and send the result
back. The step that asks for a subtask commits a *pending record* for it (actor slot) and an
outbox entry; relaying the entry publishes ``celery_supervise.isolated``, which runs the
user's task in a worker and delivers the outcome as a message to the actor. Delivery goes
through ``iso_outcome.lua``, which removes the pending record in the same script that
appends the message: exactly one outcome per call, whichever comes first of result, error,
lost worker (its heartbeat stops) or timeout. Every copy of the wrapper task claims the
run first, so the user's task starts at most once; after ``WorkerLost`` or ``Timeout`` it
may still have done its work, so retries need an idempotency key (docs/effects.md).

Traces: the relay publishes the wrapper task inside the asking step's trace context, so
Celery's own instrumentation (``opentelemetry-instrumentation-celery``) makes the subtask's
span a child of the step's; the outcome message carries the subtask's context on.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from celery import Celery

from .codec import encode, text
from .errors import SuperviseError
from .keyspace import ActorKeys
from .mailbox import header_json
from .runtime import Runtime
from .tracing import Carrier, carried, carrier, continued

__all__ = ["ISOLATED_TASK", "Isolation", "register_isolation_task"]

log = logging.getLogger("celery_supervise")

#: Name of the wrapper task that runs an isolated subtask.
ISOLATED_TASK = "celery_supervise.isolated"
#: Marks kept beside a pending record, in hash field ``"<isolate id>|<mark>"``.
MARKS = ("published", "heartbeat", "started")


class Isolation:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @staticmethod
    def pending_record(spec: dict[str, Any], now: int, trace: Carrier | None = None) -> bytes:
        """What the commit stores for a subtask until its outcome arrives (``now``: Redis'
        clock, ms: the tick compares the deadline with it; ``trace``: the asking step's
        context, which the tick's re-publish and its timeout outcome continue)."""
        deadline = now + int(spec["timeout"] * 1000) if spec.get("timeout") else None
        record = {
            "tag": spec["tag"],
            "task": spec["task"],
            "args": spec["args"],
            "kwargs": spec["kwargs"],
            "options": spec.get("options", {}),
            "created": now,
            "deadline": deadline,
        }
        if trace:
            record["trace"] = trace
        return json.dumps(record).encode()

    def start(self, item: dict[str, Any]) -> None:
        """Relay an outbox ``isolate`` entry: publish the subtask (once per relay claim)."""
        iso_id, spec = item["id"], item["spec"]
        if "type" in item:
            type_name, key = item["type"], item["key"]
        else:  # written before entries named their actor: the key may hold '@' and ':'
            type_name, key = iso_id.rsplit("@", 1)[0].split(":", 1)
        keys = self.rt.keyspace.actor(type_name, key)
        if self.mark(keys, iso_id, "published", claim=True) != 1:
            return  # already published by another relay, or already resolved
        self.publish(iso_id, type_name, key, spec)

    def publish(self, iso_id: str, type_name: str, key: str, spec: dict[str, Any]) -> None:
        self.rt.dispatch(
            ISOLATED_TASK,
            (type_name, key, iso_id, spec["tag"], spec["task"]),
            {"args": spec["args"], "kwargs": spec["kwargs"], "timeout": spec.get("timeout")},
            {"task_id": f"{iso_id}#{self.rt.clock_ms()}", **spec.get("options", {})},
        )

    def mark(self, keys: ActorKeys, iso_id: str, name: str, *, claim: bool) -> int:
        """Set mark ``name`` to Redis' now while the subtask is pending; with ``claim``, only
        if it is not set yet. 1: set; 0: already set; -1: the outcome was delivered."""
        return int(
            self.rt.scripts.iso_mark(
                keys=[keys.isolates], args=[iso_id, name, "now", "1" if claim else "0"]
            )
        )

    def deliver(
        self,
        type_name: str,
        key: str,
        iso_id: str,
        outcome: dict[str, Any],
        *,
        trace: Carrier | None = None,
    ) -> int:
        """Deliver the outcome message unless one was already delivered. -1: already was.
        ``trace``: the context its step continues (the subtask's span, when it ran)."""
        keys = self.rt.keyspace.actor(type_name, key)
        try:
            body = encode(outcome, what="isolated subtask outcome")
        except SuperviseError as exc:
            body = encode(
                {
                    "isolated": outcome["isolated"],
                    "ok": False,
                    "error": {"type": "UnserializableResult", "message": str(exc)},
                }
            )
        result = int(
            self.rt.scripts.iso_outcome(
                keys=[keys.meta, keys.mailbox, keys.isolates, *self.rt.keyspace.metric_keys(keys)],
                args=[iso_id, header_json(f"{iso_id}.outcome", trace=trace),
                      self.rt.payloads.seal(body)],
            )
        )
        if result == 1:
            self.rt.publish(type_name, key)
        return result

    def pending(self, keys: ActorKeys) -> dict[str, dict[str, Any]]:
        """The actor's subtasks still owing their outcome: record plus its marks
        (``published``, ``heartbeat``: Redis ms), by isolate id."""
        records: dict[str, dict[str, Any]] = {}
        marks: list[tuple[str, str, int]] = []
        for field_raw, value_raw in self.rt.client.hgetall(keys.isolates).items():
            field, value = text(field_raw), text(value_raw)
            base, _, mark = field.rpartition("|")
            if mark in MARKS and base:
                marks.append((base, mark, int(float(value))))
            else:
                records[field] = json.loads(value)
        for base, mark, ms in marks:
            if base in records:
                records[base][mark] = ms
        return records

    def check(self, type_name: str, key: str, keys: ActorKeys, now_ms: int) -> None:
        """Tick: time out, declare lost, or re-publish pending subtasks of one actor."""
        lease_ms = self.rt.settings.lease_seconds * 1000
        for iso_id, rec in self.pending(keys).items():
            error = None
            if rec.get("deadline") and now_ms >= rec["deadline"]:
                error = ("Timeout", f"isolated subtask {rec['task']} exceeded its timeout")
            elif rec.get("heartbeat") and now_ms - int(rec["heartbeat"]) > lease_ms:
                error = ("WorkerLost", f"worker running {rec['task']} stopped responding")
            trace = carried(rec.get("trace"))
            if error:
                outcome = {
                    "isolated": rec["tag"],
                    "ok": False,
                    "error": {"type": error[0], "message": error[1]},
                }
                if self.deliver(type_name, key, iso_id, outcome, trace=trace) >= 0:
                    self.rt.events.record(
                        "isolate_failed", actor=type_name, key=key, tag=rec["tag"], error=error[0]
                    )
                continue
            published = int(rec.get("published") or 0)
            if (
                not rec.get("heartbeat")
                and published
                and now_ms - published > (self.rt.repair_after * 1000)
            ):
                # Published but never started: its worker died holding it. Run it again,
                # in the trace of the step that asked for it.
                self.mark(keys, iso_id, "published", claim=False)
                with continued(trace):
                    self.publish(iso_id, type_name, key, rec)

    def next_check_ms(self, keys: ActorKeys) -> float:
        """When the tick must look again: a lease from now, or the soonest deadline."""
        soonest = self.rt.clock() * 1000 + self.rt.settings.lease_seconds * 1000
        for rec in self.pending(keys).values():
            if rec.get("deadline"):
                soonest = min(soonest, float(rec["deadline"]))
        return soonest


class _Heartbeat(threading.Thread):
    def __init__(self, rt: Runtime, keys: ActorKeys, iso_id: str) -> None:
        super().__init__(name="celery_supervise-isolate", daemon=True)
        self.rt, self.keys, self.iso_id = rt, keys, iso_id
        self.stopped = threading.Event()

    def beat(self) -> int:
        return Isolation(self.rt).mark(self.keys, self.iso_id, "heartbeat", claim=False)

    def run(self) -> None:
        while not self.stopped.wait(self.rt.settings.lease_seconds / 3):
            try:
                if self.beat() < 0:
                    return
            except Exception:
                continue


def _run_target(
    app: Celery, task_name: str, args: list[Any], kwargs: dict[str, Any], tag: str
) -> dict[str, Any]:
    """Run the user's task here (``apply``: its own Celery time limits do not apply) and
    turn what happened into the outcome message."""
    try:
        result = app.tasks[task_name].apply(args=args, kwargs=kwargs, throw=False)
        if result.successful():
            return {"isolated": tag, "ok": True, "result": result.result}
        exc = result.result
    except Exception as error:  # the task could not even be found or started
        exc = error
    return {
        "isolated": tag,
        "ok": False,
        "error": {"type": type(exc).__name__, "message": str(exc)},
    }


def register_isolation_task(app: Celery, rt: Runtime) -> None:
    @app.task(  # type: ignore[untyped-decorator]  # celery has no type hints
        name=ISOLATED_TASK, bind=True, ignore_result=True, shared=False
    )
    def isolated(
        task: Any,
        type_name: str,
        key: str,
        iso_id: str,
        tag: str,
        task_name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> dict[str, Any]:
        keys = rt.keyspace.actor(type_name, key)
        heartbeat = _Heartbeat(rt, keys, iso_id)
        # One run starts, however many copies of this task the broker hands out (a relay
        # retried, a republish after a lost worker, a late redelivery): the first claims it.
        claimed = Isolation(rt).mark(keys, iso_id, "started", claim=True)
        if claimed < 0:
            return {"tag": tag, "skipped": "outcome already delivered"}
        if claimed == 0:
            return {"tag": tag, "skipped": "another run of this subtask started first"}
        heartbeat.beat()
        heartbeat.start()
        try:
            outcome = _run_target(app, task_name, args, kwargs, tag)
        finally:
            heartbeat.stopped.set()
        # Under Celery's instrumentation this task runs in a span: the outcome's step is its
        # child (without it, no span is active here and the outcome carries no trace).
        delivered = Isolation(rt).deliver(type_name, key, iso_id, outcome, trace=carrier())
        return {"tag": tag, "ok": outcome["ok"], "delivered": delivered >= 0}
