"""Which servers celery_supervise runs on, decided from their ``INFO server`` text.

Every ``send`` updates the due index with ``ZADD ... LT`` (Redis 6.2) and ``ask`` waits with
a fractional ``BLPOP`` timeout (Redis 6.0): an older server fails at the first send with an
obscure syntax error, so each process asks once, on its first connection, and refuses an
old server by name (``RedisTooOld``). Pure: the text in, a verdict out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import RedisTooOld

__all__ = ["REDIS_FLOOR", "VALKEY_FLOOR", "check_server_version", "info_fields"]

#: The oldest Redis whose commands every script and client call uses (``ZADD ... LT``).
REDIS_FLOOR = (6, 2)
#: Valkey forked from Redis 7.2.4: every Valkey has what Redis 6.2 has.
VALKEY_FLOOR = (7, 2)


def info_fields(text: str) -> dict[str, str]:
    """``INFO``'s ``name:value`` lines as a dict (``# Section`` headers and blanks skipped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.strip().partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value
    return fields


def _version(text: str) -> tuple[int, ...]:
    """``"7.2.4"`` -> ``(7, 2, 4)``; a suffix (``"8.0.0-rc1"``) ends the numbers."""
    numbers = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(n) for n in numbers.group().split(".")) if numbers else ()


def check_server_version(fields: Mapping[str, str]) -> None:
    """Raise ``RedisTooOld`` unless the server is Redis 6.2+ or Valkey 7.2+. Valkey also
    reports a ``redis_version`` (the Redis it is compatible with); its own
    ``valkey_version`` is what is compared then. A server that reports no version at all
    is refused too: nothing says it has ``ZADD ... LT``."""
    if "valkey_version" in fields:
        server, found, floor = "Valkey", fields["valkey_version"], VALKEY_FLOOR
    else:
        server, found, floor = "Redis", fields.get("redis_version", ""), REDIS_FLOOR
    if _version(found)[:2] < floor:
        raise RedisTooOld(server, found or "(no version reported)", ".".join(map(str, floor)))
