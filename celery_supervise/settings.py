"""Settings read once from the Celery app's configuration and validated strictly.

Settings are ``supervise_*`` keys of ``app.conf``: Django's ``CELERY_SUPERVISE_*`` with
``namespace="CELERY"``, lowercase keys of Flask's ``CELERY`` dict. Values are read with
``app.conf.get`` (``add_defaults`` would override the user's values). An unknown
``supervise_*`` key or a bad value raises ``ConfigurationError`` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

__all__ = ["DEFAULTS", "Settings", "read_settings"]

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
}

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class Settings:
    redis_url: str
    key_prefix: str = "supervise"
    tick_interval: float = 1.0
    lease_seconds: float = 5.0
    supervisors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_state_bytes: int = 1_048_576
    max_message_bytes: int = 262_144
    dedup_window: int = 86_400


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


def _number(key: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        kind = "an int" if integer else "a number"
        raise ConfigurationError(f"{key}: must be {kind}, got {value!r}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")) or number < minimum:
        raise ConfigurationError(f"{key}: must be a finite number >= {minimum}, got {value!r}")
    return value


def _positive(key: str, value: Any, *, integer: bool = False) -> Any:
    _number(key, value, minimum=0, integer=integer)
    if value <= 0:
        raise ConfigurationError(f"{key}: must be > 0, got {value!r}")
    return value


def _redis_url_default(conf: Any) -> str:
    for source in ("result_backend", "broker_url"):
        url = conf.get(source)
        if isinstance(url, str) and url.startswith(_REDIS_SCHEMES):
            return url
    raise ConfigurationError(
        "supervise_redis_url: not set, and neither result_backend nor broker_url is a "
        "Redis URL; set supervise_redis_url (CELERY_SUPERVISE_REDIS_URL in Django)"
    )


def read_settings(app: Any) -> Settings:
    """Build the frozen settings from ``app.conf``; raise ``ConfigurationError`` naming a key."""
    conf = app.conf
    for raw, name in _user_keys(conf, app.namespace or ""):
        if name not in DEFAULTS:
            known = ", ".join(sorted(DEFAULTS))
            raise ConfigurationError(f"{raw}: unknown celery_supervise setting (known: {known})")

    def get(name: str) -> Any:
        value = conf.get(name)
        return DEFAULTS[name] if value is None else value

    url = conf.get("supervise_redis_url") or _redis_url_default(conf)
    if not isinstance(url, str) or not url.startswith(_REDIS_SCHEMES):
        raise ConfigurationError(
            f"supervise_redis_url: must start with redis://, rediss:// or unix://, got {url!r}"
        )
    prefix = get("supervise_key_prefix")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} \n"):
        raise ConfigurationError(
            f"supervise_key_prefix: must be a non-empty string without braces or spaces, "
            f"got {prefix!r}"
        )
    supervisors = get("supervise_supervisors")
    if not isinstance(supervisors, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in supervisors.items()
    ):
        raise ConfigurationError(
            "supervise_supervisors: must be a dict of supervisor name -> spec dict, "
            f"got {supervisors!r}"
        )
    return Settings(
        redis_url=url,
        key_prefix=prefix,
        tick_interval=_positive("supervise_tick_interval", get("supervise_tick_interval")),
        lease_seconds=_positive("supervise_lease_seconds", get("supervise_lease_seconds")),
        supervisors=dict(supervisors),
        max_state_bytes=_positive(
            "supervise_max_state_bytes", get("supervise_max_state_bytes"), integer=True
        ),
        max_message_bytes=_positive(
            "supervise_max_message_bytes", get("supervise_max_message_bytes"), integer=True
        ),
        dedup_window=_positive(
            "supervise_dedup_window", get("supervise_dedup_window"), integer=True
        ),
    )
