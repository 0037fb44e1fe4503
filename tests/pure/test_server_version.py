"""The server version check, on ``INFO server`` texts as the servers write them: Redis 6.2+
and Valkey 7.2+ pass, anything older is ``RedisTooOld`` naming what was found and the floor.
(The same check against real old servers: tests/redis/test_server_version.py.)"""

from __future__ import annotations

import pickle

import pytest

from celery_supervise import RedisTooOld, SuperviseError
from celery_supervise.server_version import check_server_version, info_fields


def info(**fields: str) -> str:
    lines = ["# Server", *(f"{k}:{v}" for k, v in fields.items()), "", "# Clients", "x:1"]
    return "\r\n".join(lines) + "\r\n"


REDIS_5 = info(redis_version="5.0.6", redis_mode="standalone", os="Linux")
REDIS_60 = info(redis_version="6.0.20", redis_mode="standalone")
REDIS_62 = info(redis_version="6.2.14", redis_mode="standalone")
REDIS_7 = info(redis_version="7.0.15", redis_mode="standalone")
REDIS_8_RC = info(redis_version="8.0.0-rc1")
# Valkey reports the Redis it is compatible with as redis_version, its own as valkey_version.
VALKEY_72 = info(redis_version="7.2.5", server_name="valkey", valkey_version="7.2.5")
VALKEY_9 = info(redis_version="7.2.4", server_name="valkey", valkey_version="9.1.2")
VALKEY_OLD = info(redis_version="7.2.4", server_name="valkey", valkey_version="7.0.0")


def test_info_fields_reads_name_value_lines_and_skips_headers() -> None:
    assert info_fields(VALKEY_9) == {
        "redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.1.2", "x": "1"
    }


@pytest.mark.parametrize("text", [REDIS_62, REDIS_7, REDIS_8_RC, VALKEY_72, VALKEY_9])
def test_supported_servers_pass(text: str) -> None:
    check_server_version(info_fields(text))


@pytest.mark.parametrize(
    ("text", "server", "found", "floor"),
    [
        (REDIS_5, "Redis", "5.0.6", "6.2"),
        (REDIS_60, "Redis", "6.0.20", "6.2"),
        (VALKEY_OLD, "Valkey", "7.0.0", "7.2"),
        (info(os="Linux"), "Redis", "(no version reported)", "6.2"),
    ],
)
def test_old_servers_are_refused_by_name(text: str, server: str, found: str, floor: str) -> None:
    with pytest.raises(RedisTooOld) as raised:
        check_server_version(info_fields(text))
    error = raised.value
    assert (error.server, error.found, error.floor) == (server, found, floor)
    assert isinstance(error, SuperviseError)
    assert str(error).startswith(f"{server} {found} is too old for celery_supervise: it needs "
                                 f"{server} {floor} or later")


def test_the_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(RedisTooOld("Redis", "5.0.6", "6.2")))
    assert (error.server, error.found, error.floor) == ("Redis", "5.0.6", "6.2")
