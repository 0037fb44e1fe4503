"""``ctx``: what a handler sees of its step, and the effects it asks for.

Effects are only *recorded* here. They are committed atomically with the step (see
``runner``) and applied if and only if the step commits: a crashed step emits nothing.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Protocol

from .codec import encode
from .errors import InvalidMessage, MessageTooLarge
from .timers import MAX_TIMER_NAME


class Addressee(Protocol):
    """What ``ctx.send`` needs of its target: an ``ActorRef`` (or anything naming an actor)."""

    @property
    def type_name(self) -> str: ...
    @property
    def key(self) -> str: ...

__all__ = ["Addressee", "Context", "Effects", "NamedTimer", "in_handler"]

#: Set while a handler runs in this thread/task, so ``ask`` can refuse (it would deadlock).
in_handler: contextvars.ContextVar[bool] = contextvars.ContextVar("in_handler", default=False)


@dataclass(frozen=True)
class NamedTimer:
    """``send_after(..., name=)``: replaces the pending timer of that name when committed."""

    delay: float
    every: float | None
    body: bytes


@dataclass
class Effects:
    """Effects of one step, in the order the handler asked for them."""

    sends: list[tuple[str, str, bytes]] = field(default_factory=list)  # (type, key, body)
    replies: list[bytes] = field(default_factory=list)
    isolates: list[dict[str, Any]] = field(default_factory=list)
    timers: list[tuple[float, bytes]] = field(default_factory=list)  # (delay s, body)
    #: The last word of this step on each timer name it touched: set, or None (cancelled).
    named_timers: dict[str, NamedTimer | None] = field(default_factory=dict)
    stop: bool = False

    def __bool__(self) -> bool:
        return bool(self.sends or self.replies or self.isolates or self.timers
                    or self.named_timers or self.stop)

    def timer_delays(self) -> list[float]:
        """Delays of every timer this step sets (the tick must look by the first)."""
        named = [t.delay for t in self.named_timers.values() if t is not None]
        return [delay for delay, _ in self.timers] + named


class Context:
    """The handler's view of one step. Effects apply only if the step commits."""

    def __init__(
        self,
        *,
        actor: str,
        key: str,
        message_id: str,
        version: int,
        attempt: int,
        reply_wanted: bool,
        max_message_bytes: int,
        replaying: bool = False,
        min_timer_period: float = 0.0,
    ) -> None:
        self.actor = actor
        self.key = key
        self.message_id = message_id
        self.version = version
        self.attempt = attempt
        self.effects = Effects()
        #: True while ``supervise replay`` runs this step on a copy: nothing asked of
        #: ``ctx`` is performed, but code outside ``ctx`` runs as usual (docs/operations.md).
        self.replaying = replaying
        self._reply_wanted = reply_wanted
        self._max_message_bytes = max_message_bytes
        #: The tick interval: a periodic timer cannot fire more often than the tick runs.
        self._min_timer_period = min_timer_period

    def __repr__(self) -> str:
        return (
            f"<Context {self.actor}:{self.key} message={self.message_id} "
            f"version={self.version} attempt={self.attempt}>"
        )

    def _encode(self, value: Any, what: str) -> bytes:
        body = encode(value, what=what)
        if len(body) > self._max_message_bytes:
            raise MessageTooLarge(len(body), self._max_message_bytes)
        return body

    def send(self, ref: Addressee, message: Any) -> None:
        """Send ``message`` to another actor (or this one) if this step commits."""
        if len(self.effects.sends) >= 1024:
            raise InvalidMessage("ctx.send: at most 1024 messages per step")
        self.effects.sends.append((ref.type_name, ref.key, self._encode(message, "message")))

    def reply(self, value: Any) -> None:
        """Answer the ``ask`` that sent this message (ignored if it was a plain send)."""
        if self.effects.replies:
            raise InvalidMessage("ctx.reply was already called in this step")
        self.effects.replies.append(self._encode(value, "reply"))

    @property
    def reply_wanted(self) -> bool:
        return self._reply_wanted

    def isolate(self, signature: Any, *, tag: str, timeout: float | None = None) -> None:
        """Run a Celery task as an isolated subtask; its outcome comes back as a message."""
        if not isinstance(tag, str) or not tag:
            raise InvalidMessage("ctx.isolate: tag must be a non-empty str")
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise InvalidMessage(f"ctx.isolate: timeout must be None or > 0, got {timeout!r}")
        sig = dict(signature)  # a celery Signature is a dict; this also accepts plain dicts
        for part in ("task", "args", "kwargs"):
            if part not in sig:
                raise InvalidMessage(f"ctx.isolate: signature has no {part!r}: {signature!r}")
        spec = {
            "tag": tag,
            "timeout": timeout,
            "task": sig["task"],
            "args": list(sig.get("args") or ()),
            "kwargs": dict(sig.get("kwargs") or {}),
            "options": {k: v for k, v in (sig.get("options") or {}).items() if k == "queue"},
        }
        self._encode(spec, "ctx.isolate signature")  # args must be JSON
        self.effects.isolates.append(spec)

    def send_after(
        self, seconds: float, message: Any, *, name: str | None = None, every: float | None = None
    ) -> None:
        """A durable timer: ``message`` is delivered to this actor after ``seconds``.
        ``name``: replaces the pending timer of that name. ``every`` (needs ``name``): then
        again every ``every`` seconds, until ``cancel_timer(name)`` or a replacement."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise InvalidMessage(f"ctx.send_after: seconds must be >= 0, got {seconds!r}")
        body = self._encode(message, "message")
        if name is None:
            if every is not None:
                raise InvalidMessage("ctx.send_after: every needs a name (to cancel it by)")
            self.effects.timers.append((float(seconds), body))
            return
        _check_timer_name(name, "ctx.send_after")
        if every is not None:
            self._check_every(every)
        period = None if every is None else float(every)
        self.effects.named_timers[name] = NamedTimer(float(seconds), period, body)

    def _check_every(self, every: Any) -> None:
        number = isinstance(every, int | float) and not isinstance(every, bool)
        if not number or not 0 < every < 1e9:
            raise InvalidMessage(f"ctx.send_after: every must be > 0 seconds, got {every!r}")
        if every < self._min_timer_period:
            raise InvalidMessage(
                f"ctx.send_after: every={every!r} is shorter than the tick interval "
                f"({self._min_timer_period} s), which is as often as a timer can fire"
            )

    def cancel_timer(self, name: str) -> None:
        """Remove the pending timer ``name`` if this step commits (unknown: nothing to do)."""
        _check_timer_name(name, "ctx.cancel_timer")
        self.effects.named_timers[name] = None

    def stop(self) -> None:
        """Exit normally after this step (a transient actor is then not restarted)."""
        self.effects.stop = True


def _check_timer_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_TIMER_NAME:
        raise InvalidMessage(
            f"{where}: name must be a non-empty str of at most {MAX_TIMER_NAME} characters, "
            f"got {name!r:.60}"
        )
