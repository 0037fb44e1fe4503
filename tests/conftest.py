"""Fixtures shared by the integration tests: one Redis server per session (ours, started
here, or the one ``$CELERY_SUPERVISE_TEST_REDIS_URL`` names), flushed between tests, and
real ``celery worker`` / ``celery beat`` processes for the test app ``tests.apps.bank``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from tests.harness import CeleryProcess, start_beat, start_worker

BANK = "tests.apps.bank"
#: The example Django site (example_project/django_site), and its settings module.
DJANGO_SITE = "example_project.django_site"
DJANGO_SETTINGS = "example_project.django_site.settings"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long twins (``long_profile``: the state machine's long profile, the chaos runs at
    full size) run in ``make faults`` (``-m faults``) only: in a plain run their bounded
    twins cover the same faults, in a fraction of the time."""
    if "faults" in (config.option.markexpr or ""):
        return
    long_runs = [item for item in items if item.get_closest_marker("long_profile")]
    if long_runs:
        config.hook.pytest_deselected(items=long_runs)
        items[:] = [item for item in items if item not in long_runs]


@pytest.fixture(scope="session")
def bank_env(supervise_redis_url: str) -> dict[str, str]:
    """Environment for the bank app, in this process and in its workers."""
    env = {
        "TEST_BROKER_URL": supervise_redis_url,
        "TEST_KEY_PREFIX": "t",
        "TEST_LEASE": "2",
        "TEST_TICK": "0.5",
    }
    os.environ.update(env)
    return env


@pytest.fixture
def redis_client(supervise_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(supervise_redis_url)
    yield client
    client.close()


@pytest.fixture
def bank(bank_env: dict[str, str], redis_client: redis.Redis) -> ModuleType:
    """The bank test app, imported in this process, with an empty Redis database."""
    redis_client.flushdb()
    from tests.apps import bank as module

    module.app.set_current()  # actor refs follow the current app, like @shared_task
    return module


@pytest.fixture
def workers(
    bank: ModuleType, bank_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., CeleryProcess]]:
    """Start real ``celery worker`` processes: ``workers(name, concurrency=2)``."""
    started: list[CeleryProcess] = []

    def start(name: str, concurrency: int = 2, **kw: Any) -> CeleryProcess:
        proc = start_worker(
            BANK,
            concurrency=concurrency,
            hostname=f"{name}@%h",
            env=bank_env,
            log_dir=tmp_path,
            **kw,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def beat(bank: ModuleType, bank_env: dict[str, str], tmp_path: Path) -> Iterator[CeleryProcess]:
    """A real ``celery beat`` running the supervisor tick every 0.5 s."""
    proc = start_beat(BANK, env=bank_env, schedule_dir=tmp_path / "beat")
    yield proc
    proc.kill()


@pytest.fixture(scope="session")
def django_site_env(
    supervise_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment of the example Django site, in this process and in its workers: the
    session's Redis server (also the broker), key prefix ``exdj``, a gateway that never fails
    at random (``WALLETS_GATEWAY_FAILURE_RATE=0``) and an SQLite file for the admin's users.
    Celery's Django fixup runs Django's system checks in the worker, which import the
    URLconf, the views and so, by accident, the actors: ``CELERY_SKIP_CHECKS=1`` turns that
    off, so the worker knows the actors (defined only in ``wallets/actors.py``) by
    autodiscovery alone."""
    return {
        "DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS,
        "EXAMPLE_REDIS_URL": supervise_redis_url,
        "EXAMPLE_KEY_PREFIX": "exdj",
        "EXAMPLE_DJANGO_DB": str(tmp_path_factory.getbasetemp() / "example-site.sqlite3"),
        "WALLETS_GATEWAY_FAILURE_RATE": "0",
        "CELERY_SKIP_CHECKS": "1",
    }


@pytest.fixture(scope="session")
def django_site(django_site_env: dict[str, str]) -> Iterator[Any]:
    """Django set up with the example site's settings (once per process: Django cannot be
    set up twice), its database migrated (the admin's users), and the site's Celery app."""
    import django
    from django.apps import apps
    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import setup_test_environment, teardown_test_environment

    with pytest.MonkeyPatch.context() as env:
        for name, value in django_site_env.items():
            env.setenv(name, value)
        if apps.ready and settings.SETTINGS_MODULE != DJANGO_SETTINGS:
            pytest.fail(f"Django was already set up with {settings.SETTINGS_MODULE!r}")
        django.setup()
        from example_project.django_site import celery_app as app
    call_command("migrate", verbosity=0)
    setup_test_environment()  # lets the test client's host "testserver" in
    yield app
    teardown_test_environment()
