"""``Supervision(app)``: install celery_supervise on one Celery app.

Installing validates the settings, registers the supervisor tick task and merges it into
``beat_schedule``. It opens no connection: the Redis client is made lazily in each process
(after a prefork fork, never inherited).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import redis
from celery import Celery, signals
from celery import _state as celery_state

from .child_lost import PoolWatch
from .codec import text
from .errors import NotInstalled, RedisTooOld
from .isolation import Isolation, register_isolation_task
from .keyspace import Keyspace
from .ref import ActorRef
from .registry import registered, validate_key
from .runtime import Dispatch, Runtime
from .scripts import Scripts
from .settings import Settings, read_settings
from .specs import SupervisorTree, parse_supervisor_spec
from .tick import TICK_TASK, run_tick

__all__ = ["TICK_LOGGERS", "TICK_TASK", "Supervision", "TickLogsAtDebug", "quiet_tick_logs"]

log = logging.getLogger("celery_supervise")

#: Name of the supervisor task run by beat.
#: Celery's loggers that log every tick at INFO: a worker's "received" and "succeeded"
#: lines, beat's "Sending due task".
TICK_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.beat")


class TickLogsAtDebug(logging.Filter):
    """Celery's per-task INFO lines about the tick, logged at DEBUG instead: ticks run
    every ``tick_interval`` and would be half a worker's log. What a tick *decides* is
    logged by ``EventLog.record`` at INFO, and a failed tick still logs at ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _about_tick(record.args):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _about_tick(args: Any) -> bool:
    if isinstance(args, dict):  # the worker's lines: a context dict with the task's name
        return args.get("name") == TICK_TASK
    return isinstance(args, tuple) and TICK_TASK in args  # beat: (entry name, task name)


def quiet_tick_logs() -> None:
    """Install ``TickLogsAtDebug`` on Celery's loggers (once; when ``Supervision(app)`` is
    created, never at import time)."""
    for name in TICK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TickLogsAtDebug) for f in logger.filters):
            logger.addFilter(TickLogsAtDebug())


_installed: weakref.WeakKeyDictionary[Any, Supervision] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()


class Supervision:
    """celery_supervise installed on a Celery app. ``Supervision(app)`` is idempotent."""

    app: Celery
    runtime: Runtime

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

    @classmethod
    def for_current_app(cls) -> Supervision:
        """The Supervision of this thread's current Celery app. Celery's current app is
        thread-local: a thread that never set one (a thread pool, a threaded web server)
        falls back to Celery's process-wide default app, and then the one Supervision
        installed in this process is meant."""
        app = celery_state.get_current_app()
        found = _installed.get(app)
        if found is not None:
            return found
        chose_none = celery_state._tls.current_app is None  # this thread never set one
        with _install_lock:
            everyone = list(_installed.values())
        if chose_none and len(everyone) == 1:
            return everyone[0]
        if chose_none and everyone:
            names = ", ".join(sorted(repr(s.app.main) for s in everyone))
            raise NotInstalled(
                f"celery_supervise is installed on several Celery apps ({names}) and this "
                "thread has no current app: use supervision.ref(type, key), or call "
                "app.set_default() (or app.set_current() in this thread)"
            )
        return cls.for_app(app)

    def _install(self, app: Celery) -> None:
        self.app = app
        settings = read_settings(app)
        tree = settings.tree
        #: Set by ``celery_supervise.testing.LocalRunner``: tasks go to it, not the broker.
        self.dispatcher: Dispatch | None = None
        self.runtime = Runtime(settings, tree, self.dispatch)
        self._register_tasks()
        self._schedule_tick()
        self._connect_startup_check()
        self._connect_pool_watch()
        quiet_tick_logs()
        self._discover_actors()

    # -- what the runtime holds, for callers of this object ----------------------------------
    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def keyspace(self) -> Keyspace:
        return self.runtime.keyspace

    @property
    def tree(self) -> SupervisorTree:
        return self.runtime.tree

    @property
    def client(self) -> redis.Redis:
        return self.runtime.client

    @property
    def client_once(self) -> redis.Redis:
        return self.runtime.client_once

    @property
    def scripts(self) -> Scripts:
        return self.runtime.scripts

    @property
    def repair_after(self) -> float:
        return self.runtime.repair_after

    @property
    def isolation(self) -> Isolation:
        return Isolation(self.runtime)

    def _register_tasks(self) -> None:
        rt = self.runtime

        @self.app.task(  # type: ignore[untyped-decorator]  # celery has no type hints
            name=TICK_TASK,
            bind=True,
            ignore_result=True,
            shared=False,
            # Flower shows a result through a repr cut at this size: a tick's decisions
            # are its point, so let them through.
            resultrepr_maxsize=16384,
        )
        def tick(task: Any, group: int | None = None) -> dict[str, Any]:
            # Celery's ``origin`` header names the sending process (a beat: gen<pid>@host);
            # a group tick was sent by a worker's tick, which is not a beat.
            if group is not None:
                return run_tick(rt, group=group)
            return run_tick(rt, sender=getattr(task.request, "origin", None))

        register_isolation_task(self.app, rt)
        self.tick_task = tick

    def _discover_actors(self) -> None:
        # Actor types live in ``actors.py`` as tasks live in ``tasks.py``: import ``<app>.actors``
        # of every installed Django app, lazily, the way ``autodiscover_tasks()`` finds tasks
        # (on ``import_modules``, when a worker, beat or a ``celery`` command imports the
        # app's task modules). Without this a worker knew the actors only if something else
        # (Django's system checks importing the views) happened to import them. Outside
        # Django the app's ``imports``/``include`` name the modules.
        self.app.autodiscover_tasks(related_name="actors")

    def _connect_startup_check(self) -> None:
        # Connected here, when the user installs us on their app -- never at import time.
        def on_start(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "app", self.app) is not self.app:
                return
            try:
                warnings = self.check_redis()
            except RedisTooOld as exc:
                # Celery logs and swallows an exception from a signal handler; a worker or
                # beat that cannot run a single step must stop instead (exit code 1).
                log.critical("celery_supervise RedisTooOld: %s", exc)
                raise SystemExit(1) from exc
            for warning in warnings:
                log.warning("celery_supervise %s", warning)

        signals.worker_ready.connect(on_start, weak=False)
        signals.beat_init.connect(on_start, weak=False)

    def _connect_pool_watch(self) -> None:
        # A worker's main process hears at once of a pool process that died mid-step
        # (WorkerLostError) and ends its lease (child_lost.py). Connected in that process
        # only, when it starts -- never at import time, never in other ``celery`` commands.
        def on_worker_init(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "app", None) is self.app:
                PoolWatch(self.runtime, self.app).connect()

        signals.worker_init.connect(on_worker_init, weak=False)

    def check_redis(self) -> list[str]:
        """Warnings about Redis settings that put actor state at risk (logged at start-up);
        raises ``RedisTooOld`` when this process's first connection meets an old server."""
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
        self.runtime.tree = self.tree.with_spec(
            parse_supervisor_spec(name, spec, where=f"supervision.supervisor({name!r})")
        )

    # -- actors ----------------------------------------------------------------------------
    def ref(self, type_name: str, key: str) -> ActorRef:
        registered(type_name)
        return ActorRef(self.runtime, type_name, validate_key(key))

    def publish(self, type_name: str, key: str) -> None:
        """Publish one task run of the actor (its Celery task carries only the key), whatever
        runs of its type are live; sends wake actors through ``Runtime.publish`` instead."""
        self.runtime.publish(type_name, key, direct=True)

    def dispatch(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        """Publish a task through the broker, or hand it to ``dispatcher`` when one is set
        (``celery_supervise.testing.LocalRunner`` runs them in the test's own process)."""
        if self.dispatcher is not None:
            self.dispatcher(name, args, kwargs, options)
        else:
            self.app.send_task(name, args=args, kwargs=kwargs, **options)
