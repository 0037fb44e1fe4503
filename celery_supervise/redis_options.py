"""``supervise_redis_options``: extra keyword arguments for the Redis client (TLS files,
``username``/``password``, timeouts), checked against what redis-py's connection for the
URL's scheme accepts, so a typo or a TLS option on a ``redis://`` URL fails at
``Supervision(app)`` naming the key, not at the first connection deep inside a worker.

Celery's own TLS settings (``redis_backend_use_ssl``, ``broker_use_ssl``) hold the same
redis-py keywords (``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``);
they are taken over when the supervise URL is that very ``rediss://`` URL, under any key
``supervise_redis_options`` gives itself (docs/decisions.md, "TLS options").
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Mapping
from typing import Any

from .validators import invalid

__all__ = ["OWNED", "celery_tls_options", "check_redis_options"]

#: Keywords celery_supervise sets itself: ``send``'s client must never repeat a command
#: (``retry``), replies are decoded by the library (``decode_responses``), and the first
#: connection of a process checks the server's version (``redis_connect_func``).
OWNED = frozenset({"retry", "decode_responses", "redis_connect_func", "connection_pool"})

#: Celery's TLS setting for the URL it configures.
_CELERY_TLS = (("result_backend", "redis_backend_use_ssl"), ("broker_url", "broker_use_ssl"))


def _accepted(url: str) -> frozenset[str]:
    """Keywords the connection class of ``url``'s scheme (and its pool) takes."""
    # Imported here: settings are read in every process that installs Supervision, and
    # only this check needs redis-py's classes.
    import redis

    if url.startswith(("redis-cluster://", "rediss-cluster://")):
        from redis.cluster import KWARGS_DISABLED_KEYS, REDIS_ALLOWED_KEYS, RedisCluster

        own = set(inspect.signature(RedisCluster.__init__).parameters)
        own -= {"host", "port", "startup_nodes", "url", "retry"}
        return frozenset((own | set(REDIS_ALLOWED_KEYS)) - set(KWARGS_DISABLED_KEYS)
                         - {"self", "args", "kwargs"})  # fmt: skip
    if url.startswith("sentinel://"):  # the primary's connections, and the sentinels' own
        classes: tuple[type, ...] = (redis.SSLConnection, redis.Connection)
    elif url.startswith("rediss://"):
        classes = (redis.SSLConnection, redis.Connection)
    elif url.startswith("unix://"):
        classes = (redis.UnixDomainSocketConnection,)
    else:
        classes = (redis.Connection,)
    names = {"max_connections"}
    if url.startswith("sentinel://"):
        names |= {"master_name", "sentinel_kwargs", "min_other_sentinels"}
    for cls in (*classes, *redis.Connection.__mro__):
        init = cls.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return frozenset(names - {"self", "args", "kwargs"})


def check_redis_options(value: object, where: str, url: str) -> dict[str, Any]:
    """A dict of str keys, each a keyword redis-py's connection for ``url`` accepts and
    none of the library's own (``OWNED``)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise invalid(where, "must be a dict with str keys", value)
    accepted = _accepted(url)
    if url.startswith("sentinel://") and not isinstance(value.get("master_name"), str):
        raise invalid(
            where, "needs 'master_name' (the name the sentinels monitor) for a sentinel:// URL",
            dict(value),
        )
    for key in value:
        if key in OWNED:
            raise invalid(where, f"{key!r} is set by celery_supervise itself", dict(value))
        if key not in accepted:
            scheme = url.partition("://")[0]
            raise invalid(
                where, f"{key!r} is not an option of redis-py's {scheme}:// connection", key
            )
    return dict(value)


def celery_tls_options(conf: Any, url: str) -> dict[str, Any]:
    """Celery's TLS options for the backend or broker when ``url`` is that ``rediss://``
    URL, else ``{}``."""
    if not url.startswith("rediss://"):
        return {}
    for url_setting, tls_setting in _CELERY_TLS:
        tls = conf.get(tls_setting)
        if conf.get(url_setting) == url and isinstance(tls, Mapping):
            return {k: _cert_reqs(v) if k == "ssl_cert_reqs" else v for k, v in tls.items()}
    return {}


def _cert_reqs(value: Any) -> Any:
    """Celery also takes ``"CERT_REQUIRED"`` as a string; redis-py takes the constant."""
    if isinstance(value, str) and value.startswith("CERT_"):
        return getattr(ssl, value, value)
    return value
