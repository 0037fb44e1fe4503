"""Settings read once from the Celery app's configuration and validated strictly.

Settings are ``supervise_*`` keys of ``app.conf``: Django's ``CELERY_SUPERVISE_*`` with
``namespace="CELERY"``, lowercase keys of Flask's ``CELERY`` dict. Values are read with
``app.conf.get`` (``add_defaults`` would override the user's values). An unknown
``supervise_*`` key or a bad value raises ``ConfigurationError`` naming the key as the user's
configuration spells it (``CELERY_SUPERVISE_SUPERVISORS['orders']['intensity']``). Nothing
falls back silently: a setting left out takes its default, a setting given as ``None`` is an
error, except ``supervise_redis_url``, whose documented ``None`` means "derive it".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .codecs import Codec, load_codec
from .errors import ConfigurationError
from .redis_options import celery_tls_options, check_redis_options
from .specs import SupervisorTree, build_tree
from .topology import CLUSTER_SCHEMES, SENTINEL_SCHEME, cluster_nodes, sentinel_nodes
from .validators import check_int, check_number, invalid

__all__ = ["DEFAULTS", "NONE_ALLOWED", "Settings", "read_settings"]

#: Every setting with its default; ``supervise_redis_url`` is derived when None.
DEFAULTS: dict[str, Any] = {
    "supervise_redis_url": None,
    "supervise_key_prefix": "supervise",
    "supervise_tick_interval": 1.0,
    "supervise_lease_seconds": 5.0,
    "supervise_supervisors": {},
    "supervise_max_state_bytes": 1_048_576,
    "supervise_max_message_bytes": 262_144,
    "supervise_dedup_window": 86_400,
    "supervise_max_dead_letters": 10_000,
    "supervise_codec": "json",
    "supervise_redis_options": {},
    "supervise_replica_acks": 0,
}
#: Settings for which ``None`` is a documented value (the same as leaving them out).
NONE_ALLOWED = frozenset({"supervise_redis_url"})

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class Settings:
    """The validated settings. ``supervisors`` is the setting as given; ``tree`` is it parsed
    (``Supervision.tree`` starts from it and grows with ``supervision.supervisor(...)``)."""

    redis_url: str
    key_prefix: str = "supervise"
    tick_interval: float = 1.0
    lease_seconds: float = 5.0
    supervisors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_state_bytes: int = 1_048_576
    max_message_bytes: int = 262_144
    dedup_window: int = 86_400
    #: Dead letters one actor may hold; one more quarantines it (``dead_letters_full``).
    max_dead_letters: int = 10_000
    #: "json" (payloads stored as JSON), or the codec ``supervise_codec`` names, loaded.
    codec: Codec | str = "json"
    #: Extra keyword arguments for the Redis client (``supervise_redis_options``, with
    #: Celery's own TLS options for the same ``rediss://`` URL beneath them).
    redis_options: Mapping[str, Any] = field(default_factory=dict)
    #: Replicas that must hold a send and a commit before either counts (Redis ``WAIT``).
    replica_acks: int = 0
    tree: SupervisorTree = field(default_factory=lambda: SupervisorTree({}))


def _user_keys(conf: Any, namespace: str) -> list[tuple[str, str]]:
    """(name as the user wrote it, canonical ``supervise_*`` name) for every such key."""
    namespace = namespace.lower()
    found = []
    for raw in list(conf.keys()):
        if not isinstance(raw, str):
            continue
        name = raw.lower()
        if namespace and name.startswith(namespace + "_"):
            name = name[len(namespace) + 1 :]
        if name.startswith("supervise_"):
            found.append((raw, name))
    return found


class _Reader:
    """Reads settings from ``app.conf`` and names each as the user's config spells it."""

    def __init__(self, app: Any) -> None:
        self.conf = app.conf
        self.namespace: str = app.namespace or ""
        self.spelled: dict[str, str] = {}
        for raw, name in _user_keys(self.conf, self.namespace):
            if name not in DEFAULTS:
                known = ", ".join(sorted(self.where(k) for k in DEFAULTS))
                raise ConfigurationError(
                    f"{raw}: unknown celery_supervise setting (known: {known})"
                )
            self.spelled[name] = raw

    def where(self, name: str) -> str:
        """``name`` as written in the user's config; if it is not there, as it would be."""
        if name in self.spelled:
            return self.spelled[name]
        return f"{self.namespace}_{name}".upper() if self.namespace else name

    def get(self, name: str) -> Any:
        """The user's value, or the default when the setting is left out; ``None`` given
        for a setting whose default is not ``None`` is an error, not the default."""
        if name not in self.spelled:
            return DEFAULTS[name]
        value = self.conf.get(self.spelled[name])
        if value is None and name not in NONE_ALLOWED:
            raise ConfigurationError(
                f"{self.where(name)}: must not be None; leave it out for the default "
                f"({DEFAULTS[name]!r})"
            )
        return value

    def positive_number(self, name: str) -> float:
        return check_number(self.get(name), self.where(name), above=0)

    def positive_int(self, name: str) -> int:
        return check_int(self.get(name), self.where(name), minimum=1)

    def redis_url(self) -> str:
        url = self.get("supervise_redis_url")
        if url is None:
            url = self._derived_redis_url()
        where = self.where("supervise_redis_url")
        if isinstance(url, str) and url.startswith(CLUSTER_SCHEMES):
            cluster_nodes(url, where)  # each node a host:port, or a clear error
            return url
        if isinstance(url, str) and url.startswith(SENTINEL_SCHEME):
            sentinel_nodes(url, where)
            return url
        if not isinstance(url, str) or not url.startswith(_REDIS_SCHEMES):
            raise invalid(
                where,
                "must start with redis://, rediss://, unix://, redis-cluster://, "
                "rediss-cluster:// or sentinel://",
                url,
            )
        return url

    def _derived_redis_url(self) -> str:
        for source in ("result_backend", "broker_url"):
            url = self.conf.get(source)
            if isinstance(url, str) and url.startswith(_REDIS_SCHEMES):
                return url
        where = self.where("supervise_redis_url")
        raise ConfigurationError(
            f"{where}: not set, and neither result_backend nor broker_url is a Redis URL; "
            f"set {where}"
        )

    def redis_options(self, url: str) -> dict[str, Any]:
        given = check_redis_options(
            self.get("supervise_redis_options"), self.where("supervise_redis_options"), url
        )
        return {**celery_tls_options(self.conf, url), **given}

    def replica_acks(self, url: str) -> int:
        where = self.where("supervise_replica_acks")
        acks = check_int(self.get("supervise_replica_acks"), where, minimum=0)
        if acks and url.startswith(CLUSTER_SCHEMES):
            raise ConfigurationError(
                f"{where}: {acks} is not supported on a Redis Cluster yet (WAIT must follow "
                "each write on its own node's connection); use 0"
            )
        return acks

    def key_prefix(self) -> str:
        prefix = self.get("supervise_key_prefix")
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} \n"):
            raise invalid(
                self.where("supervise_key_prefix"),
                "must be a non-empty string without braces or spaces",
                prefix,
            )
        return prefix


def read_settings(app: Any) -> Settings:
    """Build the frozen settings from ``app.conf``; raise ``ConfigurationError`` naming a key
    as the user wrote it, also inside ``supervise_supervisors``."""
    reader = _Reader(app)
    supervisors = reader.get("supervise_supervisors")
    tree = build_tree(supervisors, where_prefix=reader.where("supervise_supervisors"))
    redis_url = reader.redis_url()
    return Settings(
        redis_url=redis_url,
        redis_options=reader.redis_options(redis_url),
        key_prefix=reader.key_prefix(),
        tick_interval=reader.positive_number("supervise_tick_interval"),
        lease_seconds=reader.positive_number("supervise_lease_seconds"),
        supervisors=dict(supervisors),
        max_state_bytes=reader.positive_int("supervise_max_state_bytes"),
        max_message_bytes=reader.positive_int("supervise_max_message_bytes"),
        dedup_window=reader.positive_int("supervise_dedup_window"),
        max_dead_letters=reader.positive_int("supervise_max_dead_letters"),
        codec=load_codec(reader.get("supervise_codec"), reader.where("supervise_codec")) or "json",
        replica_acks=reader.replica_acks(redis_url),
        tree=tree,
    )
