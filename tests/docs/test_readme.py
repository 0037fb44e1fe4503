"""The README's "What it looks like" block is a copy of ``docs/examples/readme.py`` (checked
by ``tests/docs/test_docs.py::test_copied_blocks_match_their_regions``); here it runs, in
this process (``LocalRunner``) against the session's Redis."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from celery import _state

from celery_supervise.isolation import ISOLATED_TASK
from celery_supervise.testing import LocalRunner

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture(scope="module")
def readme(supervise_redis_url: str) -> Iterator[ModuleType]:
    previous_app = _state.get_current_app()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", supervise_redis_url)
        patch.syspath_prepend(str(EXAMPLES))
        module = importlib.import_module("readme")
    yield module
    sys.modules.pop("readme", None)
    previous_app.set_current()


@pytest.fixture
def runner(readme: ModuleType, supervise_redis_url: str) -> Iterator[LocalRunner]:
    client = redis.Redis.from_url(supervise_redis_url)
    for key in client.scan_iter(f"{readme.supervision.settings.key_prefix}:*"):
        client.delete(key)
    client.close()
    readme.app.set_current()
    local = LocalRunner(readme.supervision)
    yield local
    local.close()


def count_charges(readme: ModuleType) -> list[str]:
    """The ids of the charges the account starts (isolated subtasks published)."""
    started: list[str] = []
    publish = readme.supervision.dispatcher

    def recording(name: str, args: Any, kwargs: Any, options: Any) -> None:
        if name == ISOLATED_TASK:
            started.append(args[2])
        publish(name, args, kwargs, options)

    readme.supervision.dispatcher = recording
    return started


def test_readme_tour(readme: ModuleType, runner: LocalRunner) -> None:
    ref = readme.tour()
    runner.run()
    assert ref.snapshot().state == {"balance": 10, "held": {}}


def test_an_overdraw_is_never_charged_and_never_dead_lettered(
    readme: ModuleType, runner: LocalRunner
) -> None:
    charges = count_charges(readme)
    ref = readme.account.ref("acct-7")
    ref.send({"deposit": 10})
    ref.send({"pay": 8})
    ref.send({"pay": 8})               # 2 left once the first is held: more than there is
    runner.run()
    snap = ref.snapshot()
    assert ref.dead_letters() == [] and snap.last_crash is None
    assert snap.state == {"balance": 2, "held": {}}
    assert len(charges) == 1           # the overdraw was refused before any charge


def test_a_failed_charge_releases_its_hold(
    readme: ModuleType, runner: LocalRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def declined(amount: int, idempotency_key: str) -> None:
        raise RuntimeError("card declined")

    monkeypatch.setattr(readme.charge_card, "run", declined)
    ref = readme.account.ref("acct-9")
    ref.send({"deposit": 10})
    ref.send({"pay": 8})
    runner.run()
    assert ref.snapshot().state == {"balance": 10, "held": {}}
    assert ref.dead_letters() == []


def test_make_test_runs_on_two_processes_or_one_as_the_readme_says() -> None:
    """README: ``make test`` runs the suite on two processes; ``TEST_PROCS=0`` on one."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    assert "`make test TEST_PROCS=0` runs it in one" in (root / "README.md").read_text()
    make = shutil.which("make")
    assert make is not None, "make is not installed"

    def pytest_line(*args: str) -> str:
        said = subprocess.run([make, "-n", "test", *args], cwd=root, capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        return next(line.rstrip() for line in said.splitlines() if "-m pytest" in line)

    assert pytest_line().endswith("-m pytest -q -n 2 --dist loadfile")
    assert pytest_line("TEST_PROCS=0").endswith("-m pytest -q")
