"""How ``supervise_redis_url`` becomes a Redis client: one place for every topology.

- ``redis://``, ``rediss://``, ``unix://``: one server (``redis.Redis``).
- ``redis-cluster://host:port[,host:port...]`` (TLS: ``rediss-cluster://``): Redis or
  Valkey Cluster (``redis.cluster.RedisCluster``); the nodes given start the discovery of
  the others. Every actor's keys share one hash tag, so each script runs on one slot; the
  census keeps its shards in the slots of the actors they count (``Keyspace.cluster``).
"""

from __future__ import annotations

from typing import Any

from .validators import invalid

__all__ = ["CLUSTER_SCHEMES", "cluster_nodes", "connect", "is_cluster", "safe_url"]

CLUSTER_SCHEMES = ("redis-cluster://", "rediss-cluster://")


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def cluster_nodes(url: str, where: str = "supervise_redis_url") -> list[tuple[str, int]]:
    """The ``(host, port)`` startup nodes of a cluster URL; a clear error naming a bad one."""
    rest = url.partition("://")[2].split("/", 1)[0]
    nodes: list[tuple[str, int]] = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise invalid(where, f"names a cluster node {part!r} that is not host:port", url)
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def connect(url: str, **options: Any) -> Any:
    """A client for ``url`` with redis-py keyword ``options``. A ``redis_connect_func``
    among them runs redis-py's hand-shake itself on one server (``connection.on_connect()``)
    but not on a cluster, whose client runs it before calling the function."""
    import redis  # here: settings import this module in every process, before any client

    if is_cluster(url):
        return _cluster(url, options)
    return redis.Redis.from_url(url, **options)


def _cluster(url: str, options: dict[str, Any]) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    options = dict(options)
    options.pop("health_check_interval", None)  # not an option of cluster connections
    if url.startswith("rediss-cluster://"):
        options.setdefault("ssl", True)
    nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, **options)


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs (kombu's own sanitizer
    cannot parse a cluster URL's list of nodes)."""
    if not is_cluster(url):
        from kombu.utils.url import maybe_sanitize_url

        return str(maybe_sanitize_url(url))
    scheme, _, rest = url.partition("://")
    userinfo, at, nodes = rest.partition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:**@{nodes}"
