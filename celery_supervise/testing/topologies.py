"""Real multi-server Redis topologies for tests and demos: a local Redis (or Valkey) Cluster.

``LocalCluster(primaries=3).start()`` starts ``redis-server --cluster-enabled yes`` nodes on
free ports, joins them with ``CLUSTER MEET``, spreads the 16384 slots over the primaries with
``CLUSTER ADDSLOTS`` (Redis 6.2 and Valkey lack nothing it uses; ``redis-cli --cluster`` is not
needed), attaches ``replicas`` replicas to each primary, and waits until every node reports
``cluster_state:ok`` and agrees on the slots. ``migrate_slots`` moves slots between primaries
while clients keep working, the way ``redis-cli --cluster reshard`` does it (``IMPORTING`` /
``MIGRATING``, ``MIGRATE`` in batches, then ``SETSLOT NODE``), so tests can reshard under load.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .redis_server import RedisServer

__all__ = ["CLUSTER_SLOTS", "LocalCluster"]

CLUSTER_SLOTS = 16384
_HOST = "127.0.0.1"


def _command(server: RedisServer, *args: Any, timeout: float = 5.0) -> Any:
    """One command on one node (a fresh connection: a node may have restarted)."""
    client = server.client(socket_timeout=timeout)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; both below 65536."""
    for _ in range(200):
        port = random.randint(20000, 55535)
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("found no free port pair (port, port + 10000) for a cluster node")


class LocalCluster:
    """A Redis Cluster of local ``redis-server`` processes (``primaries`` x (1 + ``replicas``))."""

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 0,
        binary: str | None = None,
        node_timeout_ms: int = 2000,
        appendonly: bool = False,
    ) -> None:
        if primaries < 1:
            raise ValueError(f"a cluster needs at least one primary: primaries={primaries}")
        self.node_timeout_ms = node_timeout_ms
        args = [
            "--cluster-enabled", "yes",
            "--cluster-node-timeout", str(node_timeout_ms),
            # A test kills nodes: the survivors must keep serving their own slots.
            "--cluster-require-full-coverage", "no",
            # A replica's first full sync starts at once (the default waits 5 s for others).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        self.servers = [
            RedisServer(
                port=cluster_port(), binary=binary, appendonly=appendonly, extra_args=args
            )
            for _ in range(primaries * (1 + replicas))
        ]
        for server in self.servers:
            # Each node keeps its own nodes.conf in its own directory.
            server.extra_args += ("--cluster-config-file", str(server.data_dir / "nodes.conf"))
        self.n_primaries = primaries
        self.n_replicas = replicas

    def __repr__(self) -> str:
        return f"<LocalCluster {self.url}>"

    # -- where it is -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis-cluster://host:port,...``: every node, so any of them starts discovery."""
        return "redis-cluster://" + ",".join(f"{_HOST}:{s.port}" for s in self.servers)

    @property
    def nodes(self) -> list[RedisServer]:
        return list(self.servers)

    def primaries(self) -> list[RedisServer]:
        """The nodes that are primaries now (after a failover, a former replica is one)."""
        return [s for s in self.servers if s.pid is not None and self._role(s) == "master"]

    def owner(self, slot: int) -> RedisServer:
        """The primary serving ``slot`` now."""
        for server, ranges in self.slot_map().items():
            if any(lo <= slot <= hi for lo, hi in ranges):
                return server
        raise LookupError(f"no primary serves slot {slot}")

    def slot_map(self) -> dict[RedisServer, list[tuple[int, int]]]:
        """Each primary with the slot ranges it serves, as the first live node sees them."""
        by_port = {s.port: s for s in self.servers}
        found: dict[RedisServer, list[tuple[int, int]]] = {}
        for entry in _command(self._live(), "CLUSTER", "SLOTS"):
            lo, hi, primary = int(entry[0]), int(entry[1]), entry[2]
            found.setdefault(by_port[int(primary[1])], []).append((lo, hi))
        return found

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> LocalCluster:
        for server in self.servers:
            server.start()
        for server in self.servers[1:]:
            _command(self.servers[0], "CLUSTER", "MEET", _HOST, server.port)
        self._wait(lambda: all(self._known(s) == len(self.servers) for s in self.servers),
                   timeout, "every node to know every other")  # fmt: skip
        primaries = self.servers[: self.n_primaries]
        per = CLUSTER_SLOTS // len(primaries)
        for i, server in enumerate(primaries):
            lo = i * per
            hi = CLUSTER_SLOTS - 1 if i == len(primaries) - 1 else lo + per - 1
            _command(server, "CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
        self._wait(lambda: all(self._node_id_seen(s) for s in self.servers), timeout,
                   "every node to see the slot owners")  # fmt: skip
        for i, replica in enumerate(self.servers[self.n_primaries :]):
            primary = primaries[i % len(primaries)]
            _command(replica, "CLUSTER", "REPLICATE", self.node_id(primary))
        self.wait_ok(timeout)
        # A replica that has not finished its first sync cannot take over: wait for it.
        self._wait(lambda: all(self._synced(r) for r in self.servers[self.n_primaries :]),
                   timeout, "every replica to finish its first sync")  # fmt: skip
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and all agree on the slots."""
        self._wait(self._agreed, timeout, "cluster_state:ok on every node")

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- acts --------------------------------------------------------------------------------

    def node_id(self, server: RedisServer) -> str:
        return _text(_command(server, "CLUSTER", "MYID"))

    def migrate_slots(
        self, slots: Iterable[int], source: RedisServer, target: RedisServer, batch: int = 100
    ) -> int:
        """Move ``slots`` from ``source`` to ``target`` live; returns how many keys moved.

        Clients meet ``ASK`` while a slot is half moved and ``MOVED`` after, as with
        ``redis-cli --cluster reshard``.
        """
        src_id, dst_id = self.node_id(source), self.node_id(target)
        src, dst = source.client(), target.client()
        everyone = [server.client() for server in self.primaries()]
        moved = 0
        try:
            for slot in slots:
                dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)  # type: ignore[no-untyped-call]
                src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)  # type: ignore[no-untyped-call]
                while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):  # type: ignore[no-untyped-call]
                    src.execute_command(  # type: ignore[no-untyped-call]
                        "MIGRATE", _HOST, target.port, "", 0, 5000, "REPLACE", "KEYS", *keys
                    )
                    moved += len(keys)
                for client in everyone:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)  # type: ignore[no-untyped-call]
        finally:
            for client in (src, dst, *everyone):
                client.close()
        return moved

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """The live replicas replicating ``primary`` now."""
        live = [s for s in self.servers if s is not primary and s.pid is not None]
        return [s for s in live if self._primary_port(s) == primary.port]

    def kill_primary(self, primary: RedisServer, timeout: float = 30.0) -> RedisServer:
        """SIGKILL ``primary`` and wait until one of its replicas serves its slots and every
        live node says ``cluster_state:ok``; returns the promoted replica. A replica's own
        failover starts once the others mark the primary failed (``cluster-node-timeout``)."""
        replicas = self.replicas_of(primary)
        if not replicas:
            raise RuntimeError(f"{primary!r} has no replica to take over its slots")
        primary.kill()
        return self.wait_promoted(replicas, timeout)

    def wait_promoted(self, replicas: Sequence[RedisServer], timeout: float = 30.0) -> RedisServer:
        """Until one of ``replicas`` (of a dead primary) is a primary and every live node
        says ``cluster_state:ok``; returns it."""
        self._wait(lambda: any(self._role(r) == "master" for r in replicas), timeout,
                   f"one of {list(replicas)} to be promoted")  # fmt: skip
        self.wait_ok(timeout)
        return next(r for r in replicas if self._role(r) == "master")

    # -- reading the nodes -------------------------------------------------------------------

    def _live(self) -> RedisServer:
        for server in self.servers:
            if server.pid is not None:
                return server
        raise RuntimeError("no node of the cluster is running")

    @staticmethod
    def _info(server: RedisServer) -> dict[str, str]:
        raw = _text(_command(server, "CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in raw.split() if ":" in line)

    def _known(self, server: RedisServer) -> int:
        return int(self._info(server)["cluster_known_nodes"])

    @staticmethod
    def _primary_port(server: RedisServer) -> int | None:
        """The port of the primary ``server`` replicates (``ROLE``), None for a primary."""
        role = _command(server, "ROLE")
        return int(role[2]) if _text(role[0]) == "slave" else None

    @staticmethod
    def _synced(replica: RedisServer) -> bool:
        return _text(_command(replica, "ROLE")[3]) == "connected"  # its first sync is done

    def _role(self, server: RedisServer) -> str:
        return _text(_command(server, "ROLE")[0])

    def _node_id_seen(self, server: RedisServer) -> bool:
        return int(self._info(server).get("cluster_slots_assigned", 0)) == CLUSTER_SLOTS

    def _agreed(self) -> bool:
        live = [s for s in self.servers if s.pid is not None]
        try:
            if any(self._info(s).get("cluster_state") != "ok" for s in live):
                return False
            views = {self._slots_view(s) for s in live}
        except Exception:  # a node still starting or reconfiguring: look again
            return False
        return len(views) == 1

    @staticmethod
    def _slots_view(server: RedisServer) -> tuple[tuple[int, int, int], ...]:
        slots = _command(server, "CLUSTER", "SLOTS")
        return tuple(sorted((int(e[0]), int(e[1]), int(e[2][1])) for e in slots))

    @staticmethod
    def _wait(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise RuntimeError(f"local cluster: gave up waiting {timeout}s for {what}")


def slots_of(ranges: Sequence[tuple[int, int]]) -> list[int]:
    """Every slot in ``ranges`` (as ``LocalCluster.slot_map`` gives them)."""
    return [slot for lo, hi in ranges for slot in range(lo, hi + 1)]
