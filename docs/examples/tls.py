"""Actor state on a TLS Redis (docs/settings.md, "Redis client options"):
tests/redis/test_servers.py configures its TLS server with these settings and runs send,
a step and a tick through them."""

from __future__ import annotations

from typing import Any


def tls_settings(server: str, ca_certs: str) -> dict[str, Any]:
    """Celery settings for a TLS Redis at ``server`` (``host:port``) signed by ``ca_certs``."""
    # --8<-- [start:tls]
    supervise_redis_url = f"rediss://{server}/0"
    supervise_redis_options = {
        "ssl_ca_certs": ca_certs,  # the CA that signed the server's certificate
        "ssl_cert_reqs": "required",  # the default for rediss://
        # "ssl_certfile": ..., "ssl_keyfile": ...: client certificates, if the server asks
        # "username": ..., "password": ...: an ACL user (or in the URL)
        "socket_timeout": 5.0,  # celery_supervise's defaults: 5.0, and 2.0 to connect
    }
    # --8<-- [end:tls]
    return {
        "supervise_redis_url": supervise_redis_url,
        "supervise_redis_options": supervise_redis_options,
    }
