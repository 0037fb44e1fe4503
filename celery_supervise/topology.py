"""How ``supervise_redis_url`` becomes a Redis client: one place for every topology.

- ``redis://``, ``rediss://``, ``unix://``: one server (``redis.Redis``).
- ``sentinel://host:port[;sentinel://host:port...]`` with ``master_name`` (and optionally
  ``sentinel_kwargs``) in ``supervise_redis_options``: the primary found through the
  sentinels (``redis.sentinel.Sentinel.master_for``); after a failover each new connection
  asks the sentinels again, so clients follow the promoted replica by themselves.
- ``redis-cluster://host:port[,host:port...]`` (TLS: ``rediss-cluster://``): Redis or
  Valkey Cluster (``redis.cluster.RedisCluster``); the nodes given start the discovery of
  the others. Every actor's keys share one hash tag, so each script runs on one slot; the
  census keeps its shards in the slots of the actors they count (``Keyspace.cluster``).
"""

from __future__ import annotations

import functools
from typing import Any

from .validators import invalid

__all__ = [
    "CLUSTER_SCHEMES",
    "SENTINEL_OPTIONS",
    "SENTINEL_SCHEME",
    "cluster_nodes",
    "connect",
    "is_cluster",
    "is_sentinel",
    "safe_url",
    "sentinel_nodes",
]

CLUSTER_SCHEMES = ("redis-cluster://", "rediss-cluster://")
SENTINEL_SCHEME = "sentinel://"
#: ``supervise_redis_options`` keys for the sentinels themselves, not the primary's client.
SENTINEL_OPTIONS = frozenset({"master_name", "sentinel_kwargs", "min_other_sentinels"})


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def sentinel_nodes(url: str, where: str = "supervise_redis_url") -> list[tuple[str, int]]:
    """The ``(host, port)`` of each sentinel in ``sentinel://h:p[;sentinel://h:p...]``."""
    nodes: list[tuple[str, int]] = []
    for part in url.split(";"):
        part = part.strip()
        if not part.startswith(SENTINEL_SCHEME):
            raise invalid(where, f"names {part!r}, not a sentinel://host:port", url)
        nodes += cluster_nodes(part, where, "a sentinel")
    return nodes


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def cluster_nodes(
    url: str, where: str = "supervise_redis_url", what: str = "a cluster node"
) -> list[tuple[str, int]]:
    """The ``(host, port)`` startup nodes of a cluster URL; a clear error naming a bad one."""
    rest = url.partition("://")[2].split("/", 1)[0].rpartition("@")[2]
    nodes: list[tuple[str, int]] = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise invalid(where, f"names {what} {part!r} that is not host:port", url)
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def connect(url: str, **options: Any) -> Any:
    """A client for ``url`` with redis-py keyword ``options``. A ``redis_connect_func``
    among them runs redis-py's hand-shake itself on one server (``connection.on_connect()``)
    but not on a cluster, whose client runs it before calling the function."""
    import redis  # here: settings import this module in every process, before any client

    if is_cluster(url):
        return _cluster(url, options)
    if is_sentinel(url):
        return _sentinel(url, options)
    return redis.Redis.from_url(url, **options)


def _sentinel(url: str, options: dict[str, Any]) -> Any:
    from redis.sentinel import Sentinel

    options = dict(options)
    master_name = options.pop("master_name")
    sentinel_kwargs = options.pop("sentinel_kwargs", None) or {}
    # The sentinels are asked with short timeouts of their own unless told otherwise.
    sentinel_kwargs = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, **sentinel_kwargs}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinel_nodes(url),
        min_other_sentinels=options.pop("min_other_sentinels", 0),
        sentinel_kwargs=sentinel_kwargs,
    )
    return sentinel.master_for(master_name, **options)  # type: ignore[no-untyped-call]


def _cluster(url: str, options: dict[str, Any]) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    options = dict(options)
    options.pop("health_check_interval", None)  # not an option of cluster connections
    if url.startswith("rediss-cluster://"):
        options.setdefault("ssl", True)
    nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]  # type: ignore[no-untyped-call]
    routed = _routed_cluster()
    if routed is None:
        return RedisCluster(startup_nodes=nodes, **options)
    cluster_class, resolver = routed
    options.setdefault("policy_resolver", resolver)
    return cluster_class(startup_nodes=nodes, **options)


@functools.cache
def _routed_cluster() -> tuple[type, Any] | None:
    """A ``RedisCluster`` whose pipelines keep its command policies, and a policy resolver
    routing EVAL / EVALSHA by the keys they name, as the client does for a single command
    (made once). Without them, redis-py 8's cluster pipeline asks its "default node" for
    each script's keys (``COMMAND GETKEYS``; its ``pipeline()`` does not pass the client's
    policies on): a round trip more per script, and once that node is dead every pipeline
    fails, though the script's own node is alive. None on a redis-py without command
    policies (< 7.x), whose pipeline reads the keys from the call."""
    from redis.cluster import RedisCluster

    try:
        from redis._parsers.commands import CommandPolicies, RequestPolicy, ResponsePolicy
        from redis.commands.policies import BasePolicyResolver, StaticPolicyResolver
    except ImportError:
        return None

    keyed = CommandPolicies(
        request_policy=RequestPolicy.DEFAULT_KEYED, response_policy=ResponsePolicy.DEFAULT_KEYED
    )

    class ScriptRouting(BasePolicyResolver):
        def with_fallback(self, fallback: Any) -> Any:
            return ScriptRouting(self._policies, fallback)

    class Cluster(RedisCluster):
        def pipeline(self, *args: Any, **kwargs: Any) -> Any:
            pipe = super().pipeline(*args, **kwargs)  # type: ignore[no-untyped-call]
            pipe._policy_resolver = self._policy_resolver
            return pipe

    resolver = ScriptRouting({"core": {"eval": keyed, "evalsha": keyed}}, StaticPolicyResolver())
    return Cluster, resolver


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
