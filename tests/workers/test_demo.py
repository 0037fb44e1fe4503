"""The README's main command must keep working: run the demo briefly, as a user would. Without
``--keep`` it stops everything it started; with ``--keep`` (README: "leaves everything running
to explore Flower") its Redis, workers, beat and Flower stay up until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import redis

from celery_supervise.testing.processes import _child_pids_of, _pid_alive
from tests.harness import PROJECT_ROOT, wait_until

APP = "example_project.flask_app.make_celery"


class Demo:
    """``python -m example_project.demo ARGS`` in a subprocess; its output read as it comes,
    and the processes it starts (its direct children) noted while it runs."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "example_project.demo", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.children: dict[int, str] = {}
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _watch(self) -> None:
        while self.proc.poll() is None:
            for pid in _child_pids_of(self.proc.pid):
                # read again each time: a child caught between fork and exec is the demo
                self.children[pid] = _cmdline(pid) or self.children.get(pid, "")
            time.sleep(0.3)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float = 240) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)  # the reader thread drains the last lines
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kinds(cmdlines: list[str]) -> list[str]:
    """What each started process is: redis, worker, beat, flower."""
    kinds = []
    for cmd in cmdlines:
        if " supervise " in cmd or "example_project.demo" in cmd:
            continue  # the operator's view it prints (run and done), or a fork not exec'd yet
        words = cmd.split()
        kind = next((w for w in ("worker", "beat", "flower") if w in words), None)
        kinds.append(kind or ("redis" if "redis" in cmd or "valkey" in cmd else cmd))
    return sorted(kinds)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DEMO_REDIS_URL"}
    return {**env, **extra}


def _assert_all_checks_ok(text: str) -> None:
    for check in (
        "[ok] every actor settled",
        "[ok] nothing lost",
        "[ok] money adds up",
        "[ok] the poison message was dead-lettered",
        "[ok] the crash-looping wallet was quarantined alone",
        "flower: ",
        "supervise status",
    ):
        assert check in text, f"{check!r} missing from the demo's output:\n{text[-6000:]}"
    assert "FAILED" not in text.split("checks:")[1].split("flower:")[0]


def test_demo_runs_and_accounts_for_every_message(supervise_redis_url: str) -> None:
    demo = Demo(
        "--seconds", "10", "--wallets", "6",
        env=_env(DEMO_REDIS_URL=supervise_redis_url.rsplit("/", 1)[0] + "/9"),
    )  # fmt: skip
    try:
        code = demo.wait()
    finally:
        demo.kill()
    assert code == 0, demo.text[-6000:]
    _assert_all_checks_ok(demo.text)
    # Without --keep, nothing it started outlives it.
    assert _kinds(list(demo.children.values())) == ["beat", "flower", "worker", "worker", "worker"]
    assert [p for p in demo.children if _pid_alive(p)] == []


def test_the_demo_runs_on_a_cluster(supervise_redis_url: str) -> None:
    """``--cluster``: the actors' state on a local 3-primary Redis Cluster, the broker on the
    one server; the same checks pass, and the cluster's nodes stop with the demo."""
    demo = Demo(
        "--cluster", "--seconds", "8", "--wallets", "4",
        env=_env(DEMO_REDIS_URL=supervise_redis_url.rsplit("/", 1)[0] + "/10"),
    )  # fmt: skip
    try:
        code = demo.wait()
    finally:
        demo.kill()
    assert code == 0, demo.text[-6000:]
    assert "redis-cluster://" in demo.text and "a local 3-primary cluster" in demo.text
    _assert_all_checks_ok(demo.text)
    kinds = _kinds(list(demo.children.values()))
    assert kinds.count("redis") == 3 and kinds.count("worker") == 3, kinds
    assert [p for p in demo.children if _pid_alive(p)] == []


def test_demo_keep_leaves_redis_workers_beat_and_flower_running_until_ctrl_c() -> None:
    demo = Demo("--keep", "--seconds", "6", "--wallets", "4", env=_env())  # its own Redis
    try:
        wait_until(lambda: "Ctrl-C to stop." in demo.text or demo.proc.poll() is not None, 240)
        text = demo.text
        assert "--keep: everything is still running" in text, text[-6000:]
        _assert_all_checks_ok(text)
        running = {p: c for p, c in demo.children.items() if _pid_alive(p)}
        # w1 was SIGKILLed by the demo on purpose; w2 and its replacement w3 remain.
        assert _kinds(list(running.values())) == ["beat", "flower", "redis", "worker", "worker"]
        _check_what_it_says_is_running(text)
        demo.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert demo.wait(60) == 0, demo.text[-3000:]
        assert [p for p in running if _pid_alive(p)] == []
    finally:
        demo.kill()
        for pid in demo.children:
            if _pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)  # each started process leads its own group


def _check_what_it_says_is_running(text: str) -> None:
    """Redis answers, Flower answers, and the printed ``supervise status`` command works."""
    redis_url = re.search(r"EXAMPLE_REDIS_URL=(\S+)", text)
    prefix = re.search(r"EXAMPLE_KEY_PREFIX=([^\s)]+)", text)
    flower = re.search(r"Flower: (http://\S+)", text)
    assert redis_url and prefix and flower, text[-3000:]
    client = redis.Redis.from_url(redis_url.group(1))
    try:
        assert client.ping()
    finally:
        client.close()
    with urllib.request.urlopen(f"{flower.group(1)}/api/workers?refresh=1", timeout=30) as r:
        workers = r.read().decode()
    assert "w2@" in workers and "w3@" in workers, workers[:2000]
    status = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "supervise", "status"],
        cwd=PROJECT_ROOT,
        env={
            **_env(),
            "EXAMPLE_REDIS_URL": redis_url.group(1),
            "EXAMPLE_KEY_PREFIX": prefix.group(1),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "payments" in status.stdout and "audit" in status.stdout, status.stdout
