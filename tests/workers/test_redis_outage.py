"""SPEC 6.7: with Redis down, ``send`` raises promptly; workers and ticks wait and resume
when it returns. This test owns its Redis server (it kills and restarts it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celery_supervise.testing import RedisServer
from tests.harness import PROJECT_ROOT, start_beat, start_worker, wait_until

SCRIPT = """
import os, sys, time
from tests.apps import bank
from celery_supervise import RedisUnavailable
ref = bank.account.ref("outage")
mode = sys.argv[1]
if mode == "send":
    for i in range(int(sys.argv[2]), int(sys.argv[3])):
        ref.send({"add": 1, "n": i}, message_id=f"m{i}")
elif mode == "down":
    started = time.monotonic()
    try:
        ref.send({"add": 1})
    except RedisUnavailable as exc:
        print(f"raised after {time.monotonic() - started:.2f}s: {exc}")
        sys.exit(0)
    sys.exit("send did not raise")
elif mode == "state":
    s = ref.snapshot(); print(s.version, s.state["balance"], [n for _, n in s.state["seen"]])
"""


def _run(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.faults
def test_send_raises_promptly_and_everything_resumes(tmp_path: Path) -> None:
    server = RedisServer(appendonly=True, appendfsync="always").start()
    try:
        env = {
            "TEST_BROKER_URL": server.url,
            "TEST_KEY_PREFIX": "o",
            "TEST_LEASE": "2",
            "TEST_TICK": "0.5",
        }
        worker = start_worker(
            "tests.apps.bank", concurrency=2, hostname="o1@%h", env=env, log_dir=tmp_path
        )
        beat = start_beat("tests.apps.bank", env=env, schedule_dir=tmp_path / "beat")
        _run(env, "send", "0", "50")
        server.kill()
        out = _run(env, "down")
        assert float(out.split()[2].rstrip("s:")) < 5.0, out
        time.sleep(3)  # workers and beat keep running without Redis
        server.start()
        _run(env, "send", "50", "100")

        def done() -> bool:
            for proc in (worker, beat):  # a death is the finding: say so, with its log
                assert proc.is_running(), f"{proc} exited:\n{proc.log_text()[-3000:]}"
            return _run(env, "state").startswith("100 100")

        try:
            wait_until(done, 90, interval=1.0, message="did not resume after Redis came back")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstate: {_run(env, 'state')[:300]}\n"
                                 f"worker log:\n{worker.log_text()[-3000:]}") from None
        _version, _balance, *seen = _run(env, "state").split(maxsplit=2)
        assert seen[0].strip() == str(list(range(100)))
        assert worker.is_running() and beat.is_running()
        worker.kill()
        beat.kill()
    finally:
        server.close()
