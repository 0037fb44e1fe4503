"""``Supervision(app)``: install celery_supervise on one Celery app.

Installing validates the settings, registers the supervisor tick task and merges it into
``beat_schedule``. It opens no connection: the Redis client is made lazily in each process
(after a prefork fork, never inherited).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .actors import registered, validate_key
from .codec import text
from .errors import ConfigurationError, NotInstalled
from .keyspace import Keyspace
from .scripts import Scripts
from .settings import Settings, read_settings
from .store import ActorStore

if TYPE_CHECKING:
    from celery import Celery

    from .ref import ActorRef

__all__ = ["TICK_TASK", "Supervision"]

log = logging.getLogger("celery_supervise")

#: Name of the supervisor task run by beat.
TICK_TASK = "celery_supervise.tick"
#: Events kept in the capped decision stream.
EVENTS_KEPT = 10_000


_installed: weakref.WeakKeyDictionary[Any, Supervision] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()


class Supervision:
    """celery_supervise installed on a Celery app. ``Supervision(app)`` is idempotent."""

    app: Celery
    settings: Settings
    keyspace: Keyspace

    def __new__(cls, app: Celery) -> Supervision:
        with _install_lock:
            existing = _installed.get(app)
            if existing is not None:
                return existing
            self = super().__new__(cls)
            self._install(app)
            _installed[app] = self
            return self

    def __init__(self, app: Celery) -> None:  # all work happens once, in _install
        pass

    @classmethod
    def for_app(cls, app: Celery) -> Supervision:
        try:
            return _installed[app]
        except KeyError:
            raise NotInstalled(
                f"celery_supervise is not installed on Celery app {app.main!r}: call "
                f"Supervision(app) where the app is configured"
            ) from None

    def _install(self, app: Celery) -> None:
        self.app = app
        self.settings = read_settings(app)
        self.keyspace = Keyspace(self.settings.key_prefix)
        self.tree = self.settings.tree
        #: Set by a running tick: the decisions it made, returned as its result.
        self.decisions: list[dict[str, Any]] | None = None
        self.dispatcher: (
            Callable[[str, tuple[Any, ...], dict[str, Any], dict[str, Any]], None] | None
        ) = None
        self._client: redis.Redis | None = None
        self._once: redis.Redis | None = None
        self._client_pid = 0
        self._scripts: Scripts | None = None
        self.store = ActorStore(self)
        from .isolation import Isolation

        self.isolation = Isolation(self)
        self._register_tasks()
        self._schedule_tick()
        self._connect_startup_check()

    def _register_tasks(self) -> None:
        from .isolation import register_isolation_task
        from .tick import run_tick

        sup = self

        @self.app.task(  # type: ignore[untyped-decorator]  # celery has no type hints
            name=TICK_TASK,
            bind=True,
            ignore_result=True,
            shared=False,
            # Flower shows a result through a repr cut at this size: a tick's decisions
            # are its point, so let them through.
            resultrepr_maxsize=16384,
        )
        def tick(task: Any) -> dict[str, Any]:
            return run_tick(sup)

        register_isolation_task(self)
        self.tick_task = tick

    def _connect_startup_check(self) -> None:
        # Connected here, when the user installs us on their app -- never at import time.
        from celery import signals

        def on_start(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "app", self.app) is self.app:
                for warning in self.check_redis():
                    log.warning("celery_supervise %s", warning)

        signals.worker_ready.connect(on_start, weak=False)
        signals.beat_init.connect(on_start, weak=False)

    def check_redis(self) -> list[str]:
        """Warnings about Redis settings that put actor state at risk (logged at start-up)."""
        warnings: list[str] = []
        try:
            config = self.client.config_get("maxmemory-policy")
            config.update(self.client.config_get("appendonly"))
            config.update(self.client.config_get("appendfsync"))
        except redis.RedisError as exc:  # managed Redis often disables CONFIG
            return [f"could not read Redis' configuration to check durability ({exc})"]
        values = {text(k): text(v) for k, v in config.items()}
        policy = values.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            warnings.append(
                f"Redis maxmemory-policy is {policy!r}: Redis may evict actor state and "
                "mailboxes under memory pressure; set maxmemory-policy noeviction"
            )
        if values.get("appendonly") != "yes":
            warnings.append(
                "Redis appendonly is off: a Redis restart loses committed steps; use "
                "appendonly yes with appendfsync always (or everysec: about 1 s at risk)"
            )
        elif values.get("appendfsync") != "always":
            warnings.append(
                f"Redis appendfsync is {values.get('appendfsync')!r}: a Redis crash may lose "
                "about the last second of committed steps (appendfsync always loses none)"
            )
        return warnings

    def _schedule_tick(self) -> None:
        conf = self.app.conf
        schedule = dict(conf.get("beat_schedule") or {})
        interval = self.settings.tick_interval
        schedule.setdefault(
            TICK_TASK,
            {
                "task": TICK_TASK,
                "schedule": interval,
                # A tick that waited in the queue long is stale but still useful (under a
                # backlog it may be the only one to get through); past this it is dropped.
                # Route it to a queue of its own to keep it off the actors' backlog.
                "options": {"expires": max(interval * 10, 10.0)},
            },
        )
        conf.beat_schedule = schedule

    def supervisor(self, name: str, **spec: Any) -> None:
        """Declare (or replace) a supervisor, as a ``supervise_supervisors`` entry would.
        Validated now: unknown keys, bad values, cycles, unknown parents raise
        ``ConfigurationError``. Declare it in every process (module level, like tasks)."""
        from .specs import parse_supervisor_spec

        self.tree = self.tree.with_spec(
            parse_supervisor_spec(name, spec, where=f"supervision.supervisor({name!r})")
        )

    # -- connections (per process) ---------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        if self._client is None or self._client_pid != os.getpid():
            self._client = self._connect(retries=2)
            self._once = self._connect(retries=0)
            self._client_pid = os.getpid()
            self._scripts = None
        return self._client

    @property
    def client_once(self) -> redis.Redis:
        """A client that never repeats a command by itself. ``send`` uses it: a send whose
        reply was lost may have been applied, and only the caller can decide to retry (safely,
        with a ``message_id``)."""
        self.client  # noqa: B018  (connects both clients in this process)
        assert self._once is not None
        return self._once

    def _connect(self, *, retries: int) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
            health_check_interval=30,
        )

    @property
    def scripts(self) -> Scripts:
        client = self.client
        if self._scripts is None:
            self._scripts = Scripts(client)
        return self._scripts

    @property
    def repair_after(self) -> float:
        """Seconds after which a scheduled actor nobody picked up is woken again."""
        return max(2 * self.settings.lease_seconds, 2 * self.settings.tick_interval)

    # -- actors ----------------------------------------------------------------------------
    def ref(self, type_name: str, key: str) -> ActorRef:
        from .ref import ActorRef

        registered(type_name)
        return ActorRef(self, type_name, validate_key(key))

    def publish(self, type_name: str, key: str) -> None:
        """Schedule one task run of the actor (its Celery task carries only the key)."""
        self.dispatch(type_name, (key,), {}, {})

    def dispatch(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        """Publish a task through the broker, or hand it to ``dispatcher`` when one is set
        (``celery_supervise.testing.LocalRunner`` runs them in the test's own process)."""
        if self.dispatcher is not None:
            self.dispatcher(name, args, kwargs, options)
        else:
            self.app.send_task(name, args=args, kwargs=kwargs, **options)

    def relay_outbox(self, type_name: str, key: str) -> int:
        from .effects import relay_outbox

        return relay_outbox(self, type_name, key)

    def operator_restart(
        self, ref: ActorRef, *, recovery: str | None, only_halted: bool = False
    ) -> str:
        atype = registered(ref.type_name)
        recovery = recovery or atype.recovery
        if recovery not in ("last_good", "reset"):
            raise ConfigurationError(f"recovery must be 'last_good' or 'reset', got {recovery!r}")
        initial = atype.valid_initial(ref.key) if recovery == "reset" else None
        if only_halted:
            snap = ref.snapshot()
            if snap.status not in ("stopped", "quarantined", "backoff"):
                return "skip"
        outcome = self.store.restart(
            ref,
            mode="force",
            recovery=recovery,
            initial=initial,
            history=atype.history,
            clear_crashes=True,
        )
        self.log_event(
            "operator_restart", actor=ref.type_name, key=ref.key, recovery=recovery, outcome=outcome
        )
        return outcome

    def notify_exit(self, type_name: str, key: str) -> None:
        """An actor stopped normally: let the tick report it to its supervisor."""
        pipe = self.client.pipeline(transaction=False)
        self.store.add_hint(pipe, type_name, key, 0)
        pipe.execute()

    # -- decisions, reported one way ---------------------------------------------------------
    def log_event(self, event: str, **fields: Any) -> None:
        """One structured log line per decision, also kept in a capped Redis stream."""
        record = {"event": event, **fields}
        if self.decisions is not None:
            self.decisions.append(record)
        log.info(
            "celery_supervise %s",
            json.dumps(record, sort_keys=True, default=str),
            extra={"celery_supervise": record},
        )
        try:
            self.client.xadd(
                self.keyspace.events,
                {"event": json.dumps(record, default=str)},
                maxlen=EVENTS_KEPT,
                approximate=True,
            )
        except redis.RedisError:
            log.warning("celery_supervise could not record event %s in Redis", event)
