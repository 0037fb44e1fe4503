"""The commands of example_project/README.md, run as a user runs them: from the repository
root, each app's worker, beat and web server as the README writes them (only the port and the
Redis they are pointed at differ), then the "Try it" requests and ``supervise status``."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PROJECT_ROOT, wait_until

README = PROJECT_ROOT / "example_project" / "README.md"


def _readme_commands(section: str) -> list[str]:
    """The commands of one ``### section`` of the README (its bash block, comments off)."""
    text = README.read_text().split(f"### {section}\n", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [line.split("  #", 1)[0].strip() for line in lines if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Started:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, command: str) -> Path:
        argv = [sys.executable if a == "python" else a for a in shlex.split(command)]
        if argv[0] in ("celery", "flask"):
            argv = [sys.executable, "-m", argv[0], *argv[1:]]
        log = self.logs / f"{len(self.procs)}.log"
        out = log.open("w")
        self.procs.append(subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self.env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True))
        return log

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def started(supervise_redis_url: str, tmp_path: Path) -> Iterator[_Started]:
    env = {**os.environ, "EXAMPLE_REDIS_URL": supervise_redis_url,
           "EXAMPLE_KEY_PREFIX": f"readme-{uuid.uuid4().hex[:6]}",
           "WALLETS_GATEWAY_FAILURE_RATE": "0", "PYTHONPATH": str(PROJECT_ROOT)}
    runner = _Started(env, tmp_path)
    yield runner
    runner.stop()


def _http(port: int, method: str, path: str, body: Any = None, **headers: str) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=20) as answer:
        return answer.status, json.loads(answer.read() or b"null")


def _serving(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("section", ["Django", "Flask"])
def test_example_readme_commands_work(started: _Started, section: str) -> None:
    port = _free_port()
    worker, beat, web = _readme_commands(section)
    assert " worker " in worker and " beat " in beat and "8000" in web
    worker_log = started.start(worker)
    started.start(beat)
    started.start(web.replace("8000", str(port)))
    wait_until(lambda: "ready" in worker_log.read_text(), 60, message="worker never ready")
    wait_until(lambda: _serving(port), 60, message=f"{web!r} never served")

    tries = _readme_commands("Try it")
    assert tries[0].startswith("curl -X POST localhost:8000/wallets/alice/deposits")
    assert _http(port, "POST", "/wallets/alice/deposits", {"amount": 500},
                 **{"Idempotency-Key": "top-up-1"})[0] == 202
    wait_until(lambda: _http(port, "GET", "/wallets/alice/balance")[1]["balance"] == 500, 60,
               message="the deposit was never applied")
    status, paid = _http(port, "POST", "/wallets/alice/payments",
                         {"amount": 200, "to": "acme", "simulate": "decline"})
    assert status == 202 and paid["payment_id"]

    def failed() -> bool:
        recent = _http(port, "GET", "/wallets/alice")[1]["state"]["recent"]
        return any(p["status"] == "failed" for p in recent)

    wait_until(failed, 60, message="the declined payment never came back as failed")
    assert _http(port, "GET", "/ledger")[0] == 200
    app = worker.split()[2]  # celery -A <app> worker ...
    status_cmd = tries[-1].replace("example_project.django_site", app)
    done = subprocess.run([sys.executable, "-m", *shlex.split(status_cmd)], cwd=PROJECT_ROOT,
                          env=started.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "payments" in done.stdout, done.stderr
