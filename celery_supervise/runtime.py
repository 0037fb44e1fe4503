"""The low-level runtime every layer above takes: connections, scripts, keys, settings, the
event log and a way to publish tasks.

It knows nothing of Celery (``publish`` and ``dispatch`` are callables handed in by
``Supervision``) and nothing of the layers above it, so every import runs downward:
``supervision`` -> ``runner`` / ``tick`` -> ``tree_shell`` -> ``effects`` -> ``store`` ->
``runtime`` -> ``scripts`` / ``keyspace`` / ``settings``. Connections are made lazily in
each process (after a prefork fork, never inherited).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from . import topology
from .codec import text
from .codecs import Payloads
from .errors import (
    CorruptActorData,
    RedisRejected,
    RedisTLSError,
    RedisTooOld,
    RedisUnavailable,
    ReplicaAckTimeout,
)
from .keyspace import Keyspace
from .scripts import Scripts
from .server_version import check_server_version, info_fields
from .settings import Settings
from .specs import SupervisorTree

__all__ = [
    "EVENTS_KEPT",
    "Dispatch",
    "EventLog",
    "Runtime",
    "patiently",
    "redis_errors",
    "waiting_at_most",
]

T = TypeVar("T")
log = logging.getLogger("celery_supervise")

#: How long a worker waits for Redis to come back before giving up a call (a tick waits
#: less: see ``waiting_at_most``).
REDIS_PATIENCE = 120.0

#: How often a process measures again its clock's offset to Redis' (seconds).
CLOCK_REFRESH = 30.0
#: How soon a process tries again after Redis did not answer a clock measurement (seconds).
CLOCK_RETRY = 1.0

#: Events kept in the capped decision stream.
EVENTS_KEPT = 10_000

#: ``dispatch(task_name, args, kwargs, options)``: publish one Celery task.
Dispatch = Callable[[str, tuple[Any, ...], dict[str, Any], dict[str, Any]], None]

#: Decisions recorded while a collector is active in this context (a tick's report).
_collector: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "celery_supervise_collector", default=None
)


#: Error codes of a Redis that refuses writes for a while; a script meets them at its first
#: write (Redis checks before a script has written anything), so nothing was written.
REJECTED_CODES = ("OOM", "MISCONF", "READONLY", "NOREPLICAS", "MASTERDOWN", "BUSY")
#: What marks corrupt data: the scripts' own "CORRUPT ..." (they check every field before
#: their first write) and Redis' WRONGTYPE (a key of another type, met by a plain read).
CORRUPT_CODES = ("CORRUPT", "WRONGTYPE")
#: How Redis before 7.0 wraps an error that ``redis.call`` met inside a script.
_SCRIPT_WRAPPED = re.compile(
    r"Error running script \(call to f_\w+\): @user_script:\d+: (?:@user_script: \d+: )?-?"
)
#: The codes redis-py turns into classes (and strips from the text) before it kept them.
_CLASS_CODES: dict[type[Exception], str] = {
    redis.exceptions.OutOfMemoryError: "OOM",
    redis.exceptions.ReadOnlyError: "READONLY",
}


@contextlib.contextmanager
def redis_errors(where: str) -> Iterator[None]:
    """Turn Redis' complaints about data we did not write into ``CorruptActorData``, a Redis
    refusing writes into ``RedisRejected``, and a Redis that does not answer into
    ``RedisUnavailable``. Any other error (a script bug) is raised as it is: never taken for
    corruption, since that would drop the actor's hint."""
    try:
        yield
    except redis.ResponseError as exc:
        code, text = _error_code(exc)
        if code in CORRUPT_CODES:
            raise CorruptActorData(f"{where}: {text}") from None
        if code in REJECTED_CODES:
            raise RedisRejected(
                f"{where}: Redis refused the write, nothing was written ({code} {text})"
            ) from None
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        refused = _tls_refusal(exc)
        if refused:
            raise RedisTLSError(
                f"{where}: the TLS hand-shake with Redis failed ({refused}); check the TLS "
                "options in supervise_redis_options (ssl_ca_certs, ssl_cert_reqs, ...)"
            ) from exc
        raise RedisUnavailable(f"{where}: Redis did not answer ({exc})") from exc


def _tls_refusal(exc: BaseException) -> str | None:
    """What ``ssl`` said, when a connection failed in its TLS hand-shake (redis-py raises its
    ConnectionError while handling the ``ssl.SSLError``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _error_code(exc: redis.ResponseError) -> tuple[str, str]:
    """The error code of a Redis error reply, and its text without redis-py's wrapping."""
    # redis-py prefixes an error met in a pipeline with "Command # N (...) of pipeline
    # caused error: "; the error code comes after it.
    text = str(exc).partition(" of pipeline caused error: ")[2] or str(exc)
    wrapped = _SCRIPT_WRAPPED.match(text)
    if wrapped:  # Redis < 7 wraps what redis.call met in a script: its code is inside
        text = text[wrapped.end() :]
        return text.split(" ", 1)[0], text
    # redis-py strips the code of the errors it has a class for (OOM, READONLY, ...);
    # 8 keeps it in status_code, 5 (what Celery 5.4 installs) only in the class.
    code = getattr(exc, "status_code", None) or _CLASS_CODES.get(type(exc))
    return code or text.split(" ", 1)[0], text


_patience: contextvars.ContextVar[float] = contextvars.ContextVar(
    "celery_supervise_patience", default=REDIS_PATIENCE
)


@contextlib.contextmanager
def waiting_at_most(seconds: float) -> Iterator[None]:
    """Within this block, ``patiently`` gives up after ``seconds`` instead of
    ``REDIS_PATIENCE``: a tick, whose work the next tick repeats, must not hold its lock
    (or its worker) for minutes on one actor while Redis is away or out of memory."""
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


def patiently(fn: Callable[[], T], *, where: str, patience: float | None = None) -> T:
    """Call ``fn`` until Redis answers and accepts writes (workers and ticks wait out an
    outage, SPEC 6.7, or a Redis out of memory), for ``patience`` seconds (by default
    ``REDIS_PATIENCE``, or what ``waiting_at_most`` set). ``fn`` must be safe to repeat:
    the scripts it runs recognise their own earlier success."""
    delay = 0.1
    deadline = time.monotonic() + (_patience.get() if patience is None else patience)
    while True:
        try:
            with redis_errors(where):
                return fn()
        except (RedisUnavailable, RedisRejected) as exc:
            if time.monotonic() > deadline:
                raise
            kind = "unavailable" if isinstance(exc, RedisUnavailable) else "rejected"
            log.warning("celery_supervise redis_%s where=%r retry_in=%.1fs", kind, where, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _version_without_hello(connection: Any) -> str:
    """The version of a server that refused RESP3's ``HELLO``: ``INFO`` in RESP2 on the same
    connection answers unless the server wants a password first."""
    try:
        connection.send_command("INFO", "server")
        return info_fields(text(connection.read_response())).get("redis_version", "< 6.0")
    except redis.RedisError:
        return "< 6.0 (no HELLO)"


#: How long a ``WAIT`` for ``supervise_replica_acks`` replicas may block (ms): well under the
#: client's 5 s socket timeout, so a missing replica is an error, not a hung connection.
REPLICA_ACK_TIMEOUT_MS = 1000

class EventLog:
    """One structured log line per decision, also kept in a capped Redis stream."""

    def __init__(self, client: Callable[[], redis.Redis], stream: str) -> None:
        self._client = client
        self.stream = stream

    def record(self, event: str, **fields: Any) -> None:
        record = {"event": event, **fields}
        collected = _collector.get()
        if collected is not None:
            collected.append(record)
        log.info(
            "celery_supervise %s",
            json.dumps(record, sort_keys=True, default=str),
            extra={"celery_supervise": record},
        )
        try:
            self._client().xadd(
                self.stream,
                {"event": json.dumps(record, default=str)},
                maxlen=EVENTS_KEPT,
                approximate=True,
            )
        except redis.RedisError:
            log.warning("celery_supervise could not record event %s in Redis", event)

    @staticmethod
    @contextlib.contextmanager
    def collect() -> Iterator[list[dict[str, Any]]]:
        """Also gather every event recorded in this context (a tick's decisions)."""
        gathered: list[dict[str, Any]] = []
        token = _collector.set(gathered)
        try:
            yield gathered
        finally:
            _collector.reset(token)


#: Every Runtime of this process: a fork gives each a fresh clients lock (a thread of the
#: parent may have held it at the fork, and no thread of the child would ever release it).
_RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


def _locks_after_fork() -> None:
    for rt in list(_RUNTIMES):
        rt._clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_locks_after_fork)


#: Most actors a run takes from its type's ready set at once.
READY_TAKE = 8
#: Most runs of one actor type live at once that serve its ready set: another run is
#: published when more actors wait than the live ones take at once, up to this many.
READY_RUNS = 8


def new_run_id() -> str:
    """A Celery task id for a run published from here (the ready set names runs by it)."""
    return str(uuid.uuid4())


class Runtime:
    """What one process needs to act on actors: built once by ``Supervision``."""

    def __init__(self, settings: Settings, tree: SupervisorTree, dispatch: Dispatch) -> None:
        self.settings = settings
        self.keyspace = Keyspace(
            settings.key_prefix, cluster=topology.is_cluster(settings.redis_url)
        )
        #: The supervision tree; replaced (never mutated) when a supervisor is declared.
        self.tree = tree
        self.dispatch = dispatch
        self.events = EventLog(lambda: self.client, self.keyspace.events)
        #: (retrying client, client_once, pid they were made in), replaced as one: threads
        #: meeting the first use together never see one made and the other not yet.
        self._clients: tuple[redis.Redis, redis.Redis, int] | None = None
        self._clients_lock = threading.Lock()
        _RUNTIMES.add(self)
        self._version_checked_pid = 0
        self._scripts: Scripts | None = None
        #: Redis' clock minus this process's monotonic clock (s); None until measured.
        self._clock_offset: float | None = None
        #: Half the round trip of the measurement: the offset's error bound (s).
        self.clock_error = 0.0
        self._clock_due = 0.0

    def use_settings(self, settings: Settings) -> None:
        """Replace the settings (a test points a configured Supervision at its own server):
        clients, scripts and the clock offset are made again from them. Same key prefix."""
        self.settings = settings
        self.keyspace = Keyspace(
            settings.key_prefix, cluster=topology.is_cluster(settings.redis_url)
        )
        with self._clients_lock:
            self._clients = None
            self._scripts = None
        self._clock_offset = None

    def publish(self, type_name: str, key: str, *, direct: bool = False) -> None:
        """Wake the actor: a task run of its type that is live takes it from the type's
        ready set (``runner.serve_ready``); when none is, one is published for it (its
        Celery task carries only the key, its task id names the run). Redis refusing the
        ready set is no reason to lose the wake: the run is then published anyway.

        ``direct``: publish a run for it whatever is live -- the tick's repair of a run
        that was lost, where a live run may be that lost one."""
        if direct:
            self.dispatch(type_name, (key,), {}, {})
            return
        run_id = new_run_id()
        try:
            pushed = self.ready(type_name, "push", run_id, keys=(key,))
        except redis.RedisError as exc:
            log.warning("celery_supervise ready_failed actor=%s key=%s error=%r "
                        "(publishing its run directly)", type_name, key, exc)  # fmt: skip
            self.dispatch(type_name, (key,), {}, {})
            return
        if int(pushed) == 1:
            self.dispatch_run(type_name, key, run_id)

    def dispatch_run(self, type_name: str, key: str, run_id: str) -> None:
        """Publish the run ``run_id`` the ready set made live for ``key``. If publishing
        fails, the run is given up at once (best effort), so wakes of the type do not wait
        a lease for a run that never comes; the error is raised."""
        try:
            self.dispatch(type_name, (key,), {}, {"task_id": run_id})
        except Exception:
            with contextlib.suppress(redis.RedisError):
                self.ready(type_name, "lost", run_id)
            raise

    def ready(
        self,
        type_name: str,
        mode: str,
        run_id: str,
        *,
        spawn_id: str = "",
        take: int = READY_TAKE,
        max_runs: int = READY_RUNS,
        keys: tuple[str, ...] = (),
    ) -> Any:
        """``ready.lua`` on the type's ready set, its live runs and what they took; a run
        counts as live for a lease's length without coming back."""
        ks = self.keyspace
        live_ms = int(self.settings.lease_seconds * 1000)
        return self.scripts.ready(
            keys=[ks.ready(type_name), ks.ready_runs(type_name), ks.ready_taken(type_name)],
            args=[mode, run_id, live_ms, spawn_id, take, max_runs, *keys],
        )

    @property
    def payloads(self) -> Payloads:
        """Seals and opens stored payloads under ``supervise_codec`` (docs/long-lived.md)."""
        codec = self.settings.codec
        return Payloads(None if isinstance(codec, str) else codec)

    @property
    def repair_after(self) -> float:
        """Seconds after which a scheduled actor nobody picked up is woken again."""
        return max(2 * self.settings.lease_seconds, 2 * self.settings.tick_interval)

    # -- connections (per process) ---------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        return self._both()[0]

    def _both(self) -> tuple[redis.Redis, redis.Redis, int]:
        clients = self._clients
        if clients is not None and clients[2] == os.getpid():
            return clients
        with self._clients_lock:  # made once per process (a fork makes its own)
            clients = self._clients
            if clients is None or clients[2] != os.getpid():
                clients = (self._connect(retries=2), self._connect(retries=0), os.getpid())
                self._scripts = None
                self._clients = clients
            return clients

    @property
    def client_once(self) -> redis.Redis:
        """A client that never repeats a command by itself. ``send`` uses it: a send whose
        reply was lost may have been applied, and only the caller can decide to retry (safely,
        with a ``message_id``)."""
        return self._both()[1]

    def _connect(self, *, retries: int) -> redis.Redis:
        # supervise_redis_options may change the timeouts; never the retries (client_once).
        options: dict[str, Any] = {
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
            "health_check_interval": 30,
            **self.settings.redis_options,
        }
        # A cluster's client is typed as redis.Redis here: it answers the same commands.
        return cast(
            "redis.Redis",
            topology.connect(
                self.settings.redis_url,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
                redis_connect_func=self._on_connect,
                **options,
            ),
        )

    def _on_connect(self, connection: Any) -> None:
        """redis-py's hand-shake, then, on the first connection of this process, the
        server's version (``INFO server``, once per process: a fork checks again)."""
        try:
            if not self.keyspace.cluster:  # a cluster's client shook hands already
                connection.on_connect()
            if self._version_checked_pid == os.getpid():
                return
            connection.send_command("INFO", "server")
            check_server_version(info_fields(text(connection.read_response())))
        except redis.ResponseError as exc:
            if "HELLO" not in str(exc):  # RESP3's hand-shake, which Redis < 6.0 lacks
                raise
            found = _version_without_hello(connection)
            connection.disconnect()
            raise RedisTooOld("Redis", found, "6.2") from None
        except RedisTooOld:
            # Not a RedisError, so redis-py would keep this connection in its pool: drop it,
            # so that every later call meets the check again instead of the old server.
            connection.disconnect()
            raise
        self._version_checked_pid = os.getpid()

    @property
    def scripts(self) -> Scripts:
        client = self.client
        if self._scripts is None:
            self._scripts = Scripts(client)
        return self._scripts

    def pipeline(
        self, build: Callable[[Any], None], *, client: redis.Redis | None = None
    ) -> list[Any]:
        """Build and execute a non-transactional pipeline: one round trip. Pipelines hold at
        most one script; if Redis lost it (restart, flush), load them all and run again
        (safe: a script refused with NOSCRIPT did not run)."""
        for attempt in (1, 2):
            pipe = (client or self.client).pipeline(transaction=False)
            build(pipe)
            try:
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self.scripts.load_all()
        raise AssertionError("unreachable")

    def wait_replicas(self, pipe: Any) -> None:
        """With ``supervise_replica_acks`` = N > 0, queue ``WAIT N`` as the last command of
        ``pipe``: on the pipeline's own connection, it waits for the writes queued before it."""
        if self.settings.replica_acks:
            pipe.execute_command("WAIT", self.settings.replica_acks, REPLICA_ACK_TIMEOUT_MS)

    def check_replicas(self, replies: list[Any], what: str) -> None:
        """Raise ``ReplicaAckTimeout`` if the ``WAIT`` ending ``replies`` counted fewer
        replicas than ``supervise_replica_acks``."""
        wanted = self.settings.replica_acks
        if wanted and int(replies[-1]) < wanted:
            raise ReplicaAckTimeout(what, int(replies[-1]), wanted, REPLICA_ACK_TIMEOUT_MS)

    def now_ms(self) -> int:
        """Redis' clock, in ms: the one clock every process compares against (one round
        trip; the hot paths use ``clock``)."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def clock(self) -> float:
        """Redis' clock, in seconds, without a round trip: this process's monotonic clock
        plus its offset to Redis ``TIME``, measured again every ``CLOCK_REFRESH`` seconds.
        The worker's wall clock is never read, so a host whose clock is off (or stepped)
        still stamps hints, deadlines and restart histories on the clock the tick and the
        scripts compare them with (docs/decisions.md, "One clock")."""
        mono = time.monotonic()
        if mono >= self._clock_due or self._clock_offset is None:
            self._measure_clock()
        assert self._clock_offset is not None
        return mono + self._clock_offset

    def clock_ms(self) -> int:
        """``clock()`` in whole milliseconds, as the scripts and the hint index keep times."""
        return int(self.clock() * 1000)

    def _measure_clock(self) -> None:
        """Take Redis ``TIME`` as of the middle of its round trip. If Redis does not answer,
        keep the offset measured before (it drifts by the clocks' rates only) and try again
        in ``CLOCK_RETRY``; with no offset yet, the error goes to the caller."""
        before = time.monotonic()
        try:
            seconds, micros = self.client.time()
        except redis.RedisError:
            if self._clock_offset is None:
                raise
            self._clock_due = before + CLOCK_RETRY
            return
        after = time.monotonic()
        self._clock_offset = int(seconds) + int(micros) / 1e6 - (before + after) / 2
        self.clock_error = (after - before) / 2
        self._clock_due = after + CLOCK_REFRESH
