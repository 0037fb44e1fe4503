"""State versions with real processes: a rolling deploy runs an old worker (state_version 1)
and a new one (state_version 2, with the upgrade) side by side on one Redis; the old one
never steps a state the new one upgraded, and nothing is lost or stranded. Then
``celery -A ... supervise migrate`` (its own process, running the new code) upgrades the
states nobody loaded yet, after a dry run that writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from tests.conftest import BANK
from tests.harness import CeleryProcess, start_worker, wait_until
from tests.redis.test_state_versions import image
from tests.workers.test_cli import _env, run

WALLETS = [f"w{i}" for i in range(6)]


@pytest.fixture
def deploy(
    bank: ModuleType, bank_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., CeleryProcess]]:
    """``deploy(name, version)``: a real worker running the code of that state version."""
    started: list[CeleryProcess] = []

    def start(name: str, version: int) -> CeleryProcess:
        env = {**bank_env, "TEST_STATE_VERSION": str(version)}
        proc = start_worker(BANK, concurrency=2, hostname=f"{name}@%h", env=env,
                            log_dir=tmp_path)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def _log(bank: ModuleType, key: str) -> list[str]:
    state = bank.versions.wallet.ref(key).snapshot().state
    return list(state["log"])


def test_an_old_worker_never_steps_a_state_a_new_worker_upgraded(
    bank: ModuleType, deploy: Callable[..., CeleryProcess], beat: CeleryProcess,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    wallet = bank.versions.wallet
    deploy("old", 1)
    for key in WALLETS:
        wallet.ref(key).send({"n": 0, "amount": 1})
    wait_until(lambda: all(wallet.ref(k).snapshot().version == 1 for k in WALLETS), timeout=60)
    deploy("new", 2)  # the rolling deploy: both run from now on

    def drained() -> bool:
        return all(wallet.ref(k).snapshot().pending == 0 for k in WALLETS)

    for n in range(1, 16):  # a burst: both workers race for the runs
        for key in WALLETS:
            wallet.ref(key).send({"n": n, "amount": 1})
    wait_until(drained, timeout=120)
    # Which worker takes a run is the broker's choice: on a busy machine the old worker can
    # drain a wallet's whole burst before the new one takes anything. Send more, one round
    # at a time, until the new worker has stepped every wallet, so the property below is
    # exercised for each.
    rounds = 15
    while not all(any(e.startswith("v2:") for e in _log(bank, k)) for k in WALLETS):
        assert rounds < 60, {k: _log(bank, k) for k in WALLETS}  # the new worker got nothing
        rounds += 1
        for key in WALLETS:
            wallet.ref(key).send({"n": rounds, "amount": 1})
        wait_until(drained, timeout=120)
    for key in WALLETS:
        log = _log(bank, key)
        assert [int(e.split(":")[1]) for e in log] == list(range(rounds + 1)), log  # once, FIFO
        first_v2 = next(i for i, e in enumerate(log) if e.startswith("v2:"))
        assert all(e.startswith("v2:") for e in log[first_v2:]), log  # old never after new
        snap = wallet.ref(key).snapshot()
        assert snap.last_crash is None and snap.status in ("idle", "active")
        assert redis_client.hget(wallet.ref(key).keys.meta, "state_version") == b"2"


def test_supervise_migrate_dry_run_then_in_place(
    bank: ModuleType, deploy: Callable[..., CeleryProcess], beat: CeleryProcess,
    redis_client: redis.Redis, bank_env: dict[str, str],
) -> None:  # fmt: skip
    wallet = bank.versions.wallet
    old = deploy("old", 1)
    for key in WALLETS:
        wallet.ref(key).send({"n": 0, "amount": 2})
    wait_until(lambda: all(wallet.ref(k).snapshot().version == 1 for k in WALLETS), timeout=60)
    old.kill()
    beat.kill()  # the tick writes its lock: stop it, so Redis stays still for the compare
    new_env = _env(bank_env, TEST_STATE_VERSION="2")
    before = image(redis_client)
    dry = run(new_env, "migrate", "versions.wallet", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["counts"] == {"would_upgrade": len(WALLETS)} and report["dry_run"]
    assert image(redis_client) == before
    done = run(new_env, "migrate", "versions.wallet", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"upgraded": len(WALLETS)}
    again = run(new_env, "migrate", "versions.wallet")
    assert again.returncode == 0 and f"{len(WALLETS)} current" in again.stdout, again.stdout
    for key in WALLETS:
        assert wallet.ref(key).snapshot().state == {"cents": 200, "log": ["v1:0"]}
