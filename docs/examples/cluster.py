"""Actor state on a Redis Cluster (docs/scaling.md): tests/cluster/test_cluster.py configures
an app with these settings against a real cluster and runs a send and a step through them."""

from __future__ import annotations

from typing import Any


def cluster_settings(nodes: str, broker: str) -> dict[str, Any]:
    """Celery settings for a cluster whose nodes are ``nodes`` (``h:p,h:p``); the broker
    stays on one server (kombu has no cluster transport)."""
    # --8<-- [start:cluster]
    broker_url = broker  # a single Redis (or RabbitMQ): Celery's own queues
    supervise_redis_url = f"redis-cluster://{nodes}"  # any nodes; the others are discovered
    supervise_redis_options = {
        "socket_timeout": 5.0,  # any keyword redis-py's RedisCluster takes
        # "password": ..., "ssl_ca_certs": ...: for rediss-cluster:// or an ACL user
    }
    # --8<-- [end:cluster]
    return {
        "broker_url": broker_url,
        "supervise_redis_url": supervise_redis_url,
        "supervise_redis_options": supervise_redis_options,
    }
