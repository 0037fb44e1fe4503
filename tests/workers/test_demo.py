"""The README's main command must keep working: run the demo briefly, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness import PROJECT_ROOT


def test_demo_runs_and_accounts_for_every_message(supervise_redis_url: str) -> None:
    env = {**os.environ, "DEMO_REDIS_URL": supervise_redis_url.rsplit("/", 1)[0] + "/9"}
    out = subprocess.run(
        [sys.executable, "-m", "example_project.demo", "--seconds", "10", "--wallets", "6"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
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
