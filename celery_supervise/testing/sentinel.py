"""A real Redis Sentinel topology for tests and demos: one primary, its replicas, and
sentinels watching them (``redis-server <conf> --sentinel``), all local processes on free
ports. ``kill_primary()`` SIGKILLs the current primary and waits until the sentinels have
promoted a replica, as a crashed host would be handled in production."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .redis_server import RedisServer, _free_port, find_redis_server_binary

__all__ = ["LocalSentinel"]

_HOST = "127.0.0.1"


class _SentinelProcess:
    def __init__(self, master: str, primary_port: int, quorum: int, down_after_ms: int) -> None:
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="celery-supervise-sentinel-"))
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind {_HOST}\nprotected-mode no\ndir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {master} {_HOST} {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
            f"sentinel failover-timeout {master} {4 * down_after_ms}\n"
            f"sentinel parallel-syncs {master} 2\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, binary: str) -> None:
        self.proc = subprocess.Popen(
            [binary, str(self.conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def command(self, *args: Any) -> Any:
        import redis

        client = redis.Redis(host=_HOST, port=self.port, socket_timeout=2.0, protocol=2,
                             decode_responses=True)  # fmt: skip
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class LocalSentinel:
    """``replicas`` replicas of one primary, watched by ``sentinels`` sentinels."""

    def __init__(
        self,
        *,
        master_name: str = "mymaster",
        replicas: int = 2,
        sentinels: int = 1,
        down_after_ms: int = 1000,
        binary: str | None = None,
        appendonly: bool = True,
    ) -> None:
        self.master_name = master_name
        self.binary = binary or find_redis_server_binary()
        self.primary = RedisServer(binary=self.binary, appendonly=appendonly)
        self.replicas = [
            RedisServer(binary=self.binary, appendonly=appendonly,
                        extra_args=("--replicaof", _HOST, str(self.primary.port)))
            for _ in range(replicas)
        ]  # fmt: skip
        quorum = sentinels // 2 + 1
        self.sentinels = [
            _SentinelProcess(master_name, self.primary.port, quorum, down_after_ms)
            for _ in range(sentinels)
        ]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://{_HOST}:{s.port}" for s in self.sentinels)

    def start(self, timeout: float = 30.0) -> LocalSentinel:
        for server in self.servers:
            server.start()
        self._wait(self._replicas_online, timeout, "every replica in sync with the primary")
        for sentinel in self.sentinels:
            sentinel.start(self.binary)
        self._wait(lambda: self._sentinels_see(len(self.replicas)), timeout,
                   "the sentinels to know the primary and every replica")  # fmt: skip
        return self

    def master_port(self) -> int:
        """The primary's port as the first sentinel that answers says."""
        for sentinel in self.sentinels:
            with contextlib.suppress(Exception):
                return int(sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                            self.master_name)[1])  # fmt: skip
        raise RuntimeError("no sentinel answers")

    def current_primary(self) -> RedisServer:
        port = self.master_port()
        return next(s for s in self.servers if s.port == port)

    def kill_primary(self, timeout: float = 30.0) -> RedisServer:
        """SIGKILL the primary; wait until a replica is promoted and answers as primary.
        Returns the killed server (``start()`` it again to bring it back as a replica)."""
        old = self.current_primary()
        old.kill()

        def promoted() -> bool:
            port = self.master_port()
            if port == old.port:
                return False
            new = next(s for s in self.servers if s.port == port)
            client = new.client(socket_timeout=1.0)
            try:
                return bool(client.info("replication")["role"] == "master")
            finally:
                client.close()

        self._wait(promoted, timeout, "a replica promoted by the sentinels")
        return old

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()

    def __enter__(self) -> LocalSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _replicas_online(self) -> bool:
        client = self.primary.client(socket_timeout=1.0)
        try:
            info = client.info("replication")
        finally:
            client.close()
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                  and v.get("state") == "online"]  # fmt: skip
        return len(online) == len(self.replicas)

    def _sentinels_see(self, replicas: int) -> bool:
        for sentinel in self.sentinels:
            flat = list(sentinel.command("SENTINEL", "MASTER", self.master_name))
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if int(fields["num-slaves"]) < replicas:
                return False
        return True

    @staticmethod
    def _wait(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception:  # a server still starting or failing over: look again
                pass
            time.sleep(0.1)
        raise RuntimeError(f"local sentinel: gave up waiting {timeout}s for {what}")

