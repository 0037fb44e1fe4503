"""Which Redis a Supervision under test uses: the session's test server, checked.

Celery reads its settings when the app is imported, so a test module that imports a Django
or Flask project at its top level gets the project's own Redis (a developer's, say), not the
test server: the tests would read and write that server's data. ``supervise_runner`` refuses
such a Supervision with a message that says how to fix it.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

__all__ = ["clear_keys", "require_test_server", "same_server", "use_redis"]

#: Names that mean this machine, so ``localhost`` and ``127.0.0.1`` are one server.
_LOOPBACK = {"localhost", "127.0.0.1", "::1", ""}


def _server(url: str) -> tuple[str, str, int | None]:
    """What names the server in a Redis URL: scheme family, host (or socket path), port. The
    database number is left out: any database of the test server is the test server's."""
    parts = urlsplit(url)
    if parts.scheme.endswith("-cluster"):  # its nodes, in any order
        nodes = parts.netloc.rpartition("@")[2]
        return ("cluster", ",".join(sorted(nodes.replace("localhost", "127.0.0.1").split(","))),
                None)  # fmt: skip
    if parts.scheme == "unix":
        return ("unix", parts.path, None)
    host = parts.hostname or ""
    return ("tcp", "127.0.0.1" if host in _LOOPBACK else host, parts.port or 6379)


def same_server(url: str, other: str) -> bool:
    return _server(url) == _server(other)


def require_test_server(supervision: Any, test_url: str) -> None:
    """Fail the test (``pytest.fail``) if ``supervision`` does not use the server at
    ``test_url``, naming both and the two ways to fix it."""
    import pytest  # the plugin's own dependency; here, so importing this module stays cheap

    from celery_supervise.topology import safe_url

    used = supervision.settings.redis_url
    if same_server(used, test_url):
        return
    pytest.fail(
        f"Supervision of Celery app {supervision.app.main!r} uses Redis at "
        f"{safe_url(used)}, not this test session's server {test_url}: the test "
        "would read and write that server's data. Celery reads settings when the app is "
        "imported, so set them from the supervise_redis_url fixture before importing the app "
        "(e.g. CELERY_SUPERVISE_REDIS_URL, or what your settings read it from, in a "
        "session fixture of conftest.py; import the app there, not at a test module's top), "
        "or call supervise_use_test_redis(supervision) before supervise_runner(supervision).",
        pytrace=False,
    )


def use_redis(supervision: Any, url: str) -> Any:
    """Point an already-configured ``supervision`` at ``url`` in this process; returns the
    settings it had (give them back with ``supervision.runtime.use_settings``)."""
    before = supervision.runtime.settings
    # supervise_redis_options (TLS files, a password) were for the other server.
    test = dataclasses.replace(before, redis_url=url, redis_options={})
    supervision.runtime.use_settings(test)
    return before


def clear_keys(supervision: Any) -> int:
    """Delete every key under the Supervision's key prefix (not the rest of the database: a
    Celery broker on it keeps its queues). How many were deleted."""
    from celery_supervise.scripts import primaries

    prefix = supervision.settings.key_prefix
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + ":*"
    deleted = 0
    for client in primaries(supervision.client):  # a cluster: node by node
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += _unlink(client, batch)
                batch.clear()
        deleted += _unlink(client, batch)
    return deleted


def _unlink(client: Any, keys: list[Any]) -> int:
    """UNLINK ``keys`` of one node, one command per key (a node's keys span many slots)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(int(n) for n in pipe.execute())
