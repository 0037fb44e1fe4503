"""Encryption at rest with real worker processes (docs/long-lived.md): workers configured
with ``supervise_codec = "celery_supervise.codecs.FernetCodec"`` (keys from
``$SUPERVISE_FERNET_KEYS``) step sealed actors; a worker holding the wrong key refuses to
step them and costs no message an attempt, and a correctly keyed worker then takes them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from types import ModuleType
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from celery_supervise.codecs import FernetCodec
from tests.harness import PROJECT_ROOT, wait_until
from tests.workers.test_cli import _env

RIGHT, WRONG, NEW = (Fernet.generate_key().decode() for _ in range(3))


@pytest.fixture
def sealed(
    bank: ModuleType, bank_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """This process seals with ``RIGHT``; workers started from ``bank_env`` use FernetCodec."""
    monkeypatch.setitem(bank_env, "TEST_CODEC", "celery_supervise.codecs.FernetCodec")
    monkeypatch.setitem(bank_env, "SUPERVISE_FERNET_KEYS", RIGHT)  # beat's, until a test says
    rt = bank.supervision.runtime
    before = rt.settings
    rt.use_settings(replace(before, codec=FernetCodec([RIGHT])))
    yield
    rt.use_settings(before)


def _plaintext(client: redis.Redis) -> list[bytes]:
    found = []
    for key in client.scan_iter(match="t:a:*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            found += [v for v in client.hvals(key) if b"PLAINTEXT" in v]
        elif kind == b"list":
            found += [v for v in client.lrange(key, 0, -1) if b"PLAINTEXT" in v]
    return found


def test_a_wrongly_keyed_worker_refuses_and_a_keyed_one_takes_over(
    bank: ModuleType, bank_env: dict[str, str], sealed: None, workers: Any, beat: Any,
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(bank_env, "SUPERVISE_FERNET_KEYS", WRONG)
    workers("wrong", concurrency=1)
    ref = bank.vault.safe.ref("w1")
    ref.send_many([{"secret": f"PLAINTEXT-{i}"} for i in range(5)])
    # The wrong worker claims it, refuses, releases; the tick re-publishes; it refuses again.
    wait_until(lambda: int(redis_client.hget(ref.keys.meta, "token") or 0) >= 2, timeout=60)
    meta = redis_client.hgetall(ref.keys.meta)
    assert b"state" not in meta and meta.get(b"attempts", b"0") == b"0"
    assert redis_client.llen(ref.keys.crashes) == 0 and ref.dead_letters() == []
    monkeypatch.setitem(bank_env, "SUPERVISE_FERNET_KEYS", RIGHT)
    workers("right", concurrency=1)
    wait_until(lambda: ref.snapshot().version == 5, timeout=90)
    assert ref.snapshot().state == {"secrets": [f"PLAINTEXT-{i}" for i in range(5)]}
    assert ref.dead_letters() == [] and redis_client.llen(ref.keys.crashes) == 0
    assert _plaintext(redis_client) == []


def _reencrypt(bank_env: dict[str, str], keys: str) -> subprocess.CompletedProcess[str]:
    env = _env(bank_env, SUPERVISE_FERNET_KEYS=keys)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.bank", "supervise", "reencrypt",
         "vault.safe", "--json"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_supervise_reencrypt_rotates_to_the_new_key(
    bank: ModuleType, bank_env: dict[str, str], sealed: None, workers: Any, beat: Any,
) -> None:  # fmt: skip
    workers("w", concurrency=1)
    ref = bank.vault.safe.ref("r1")
    ref.send({"secret": "PLAINTEXT-r", "later": True})
    wait_until(lambda: ref.snapshot().version == 1, timeout=60)
    refused = _reencrypt(bank_env, WRONG)  # a key that opens nothing: reported, exit code 1
    assert refused.returncode == 1 and "r1" in json.loads(refused.stdout)["failed"]
    done = _reencrypt(bank_env, f"{NEW},{RIGHT}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"type": "vault.safe", "rotated": ["r1"], "gone": [],
                                       "failed": {}}  # fmt: skip
    rt = bank.supervision.runtime
    rt.use_settings(replace(rt.settings, codec=FernetCodec([NEW])))  # the old key dropped
    assert ref.snapshot().state == {"secrets": ["PLAINTEXT-r"]}
    assert ref.history()[0].state == {"secrets": ["PLAINTEXT-r"]}
