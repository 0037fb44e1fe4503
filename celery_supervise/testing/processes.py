"""Real ``celery worker`` / ``celery beat`` / ``celery flower`` processes, for tests and the
demo.

Every process runs in its own process group (so :meth:`CeleryProcess.kill` takes the pool
children too), logs to a file (a pipe nobody reads would fill up and block the worker), and is
killed at interpreter exit if a test forgot to.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

__all__ = [
    "CeleryProcess",
    "start_beat",
    "start_worker",
    "wait_until",
]

T = TypeVar("T")

#: Log lines that say a process is ready to work, by celery sub-command.
_READY_PATTERNS: dict[str, re.Pattern[str]] = {
    "worker": re.compile(r"@\S+ ready\."),
    "beat": re.compile(r"beat: Starting\.\.\."),
    "flower": re.compile(r"Visit me at"),
}
_LOG_TAIL_LINES = 60

_LIVE: set[CeleryProcess] = set()
_LIVE_LOCK = threading.Lock()
_counter = itertools.count(1)


_log_dir: Path | None = None


def _default_log_dir() -> Path:
    """One log directory per test run; removed at exit unless ``$CELERY_SUPERVISE_KEEP_LOGS``
    is set (a failing test quotes the log tail in its error anyway)."""
    global _log_dir
    with _LIVE_LOCK:
        if _log_dir is None:
            _log_dir = Path(tempfile.mkdtemp(prefix="celery-supervise-logs-"))
        return _log_dir


def _at_exit() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.kill()
    if _log_dir is not None and not os.environ.get("CELERY_SUPERVISE_KEEP_LOGS"):
        shutil.rmtree(_log_dir, ignore_errors=True)


def _register_at_exit() -> None:
    # Registered when the first process starts, not at import (this module is imported by
    # the pytest plugin in every test run).
    global _at_exit_registered
    with _LIVE_LOCK:
        if not _at_exit_registered:
            atexit.register(_at_exit)
            _at_exit_registered = True


_at_exit_registered = False


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Raises ``AssertionError`` with ``message`` and the last value (or exception) after
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{message or 'condition not met'} within {timeout}s; last value: {value!r}"
            )
        time.sleep(interval)


def _child_pids_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from ``/proc/*/stat`` (field 4 is the parent's pid)."""
    children = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # The command name (field 2) is in parentheses and may itself hold spaces or ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry.name))
    return sorted(children)


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


class CeleryProcess:
    """One ``python -m celery -A <app> <name> <args...>`` subprocess."""

    def __init__(
        self,
        app: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str = "worker",
        log_dir: Path | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.args = args
        self.cwd = cwd or os.getcwd()
        self.env = self._build_env(env, self.cwd)
        if log_dir is None:
            log_dir = _default_log_dir()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{os.getpid()}-{next(_counter)}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _build_env(extra: Mapping[str, str] | None, cwd: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(extra or {})
        paths = [cwd]  # the app module is imported from where the process runs
        paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they are written
        return env

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app, self.name, *self.args]

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else f"pid={self._proc.pid}"
        return f"<CeleryProcess {self.name} -A {self.app} {state} log={self.log_path}>"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> CeleryProcess:
        if self._proc is not None:
            raise RuntimeError(f"{self!r} was already started")
        _register_at_exit()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: kill() takes the pool too
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait for the "ready" line of the log (worker: ``ready.``; beat: ``Starting...``).

        Raises ``AssertionError`` with the log tail if the process exits first or the line does
        not appear within ``timeout`` seconds; the process is killed then.
        """
        proc = self._require_started()
        pattern = _READY_PATTERNS.get(self.name)
        deadline = time.monotonic() + timeout
        while True:
            if pattern is None or pattern.search(self.log_text()):
                return
            if proc.poll() is not None:
                raise AssertionError(
                    f"{self!r} exited with code {proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(f"{self!r} not ready within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self._require_started().pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def child_pids(self) -> list[int]:
        """Pids of the live direct children (the prefork pool processes)."""
        return _child_pids_of(self.pid)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the main process only (use ``os.kill`` on a child pid for one child)."""
        os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and pool children) and reap."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, timeout: float = 10) -> None:
        """Warm shutdown (SIGTERM: finish running tasks); SIGKILL the group after ``timeout``.

        Whatever is left of the process group afterwards is killed too.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        self.kill()

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self!r} was not started")
        return self._proc

    # -- logs ------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start_ready(self, timeout: float = 30) -> CeleryProcess:
        """Start, wait until ready, and kill it again if it never gets there."""
        self.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> CeleryProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_worker(
    app: str,
    *,
    concurrency: int = 2,
    pool: str = "prefork",
    hostname: str,
    queues: str | None = None,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    log_dir: Path | None = None,
    ready_timeout: float = 30,
) -> CeleryProcess:
    """Start ``celery -A app worker`` (fair scheduling, prefetch 1, no gossip/mingle/heartbeat)
    and wait until it is ready."""
    args = [
        "-l", "info",
        "-c", str(concurrency),
        "-P", pool,
        "-n", hostname,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-O", "fair",
        "--prefetch-multiplier", "1",
    ]  # fmt: skip
    if queues:
        args += ["-Q", queues]
    args += extra
    return CeleryProcess(app, *args, env=env, name="worker", log_dir=log_dir).start_ready(
        ready_timeout
    )


def start_beat(
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    schedule_dir: Path,
    extra: Sequence[str] = (),
    ready_timeout: float = 30,
) -> CeleryProcess:
    """Start ``celery -A app beat`` with its schedule file in ``schedule_dir``; wait until it
    runs."""
    schedule_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "-l", "info",
        "-s", str(schedule_dir / "celerybeat-schedule"),
        "--max-interval", "1",
        *extra,
    ]  # fmt: skip
    return CeleryProcess(app, *args, env=env, name="beat", log_dir=schedule_dir).start_ready(
        ready_timeout
    )
