"""Reproduce the Flower screenshots of docs/flower.md (saved in docs/img/).

    python docs/screenshots.py [--out docs/img] [--seconds 15] [--chromium chromium]

Needs headless Chromium (Debian: ``apt-get install -y chromium``) and what the demo needs
(a ``redis-server`` binary or ``$DEMO_REDIS_URL``; see README). From the project root, it

1. runs the demo, ``python -m example_project.demo --keep``, on a free Flower port, with
   ``FLOWER_TASKS_COLUMNS`` set so the task list shows arguments and results too (Flower
   reads any of its options from ``FLOWER_<OPTION>``; the demo's processes inherit it);
2. when the demo has printed its summary (it keeps workers, beat and Flower running), picks
   through Flower's ``/api/tasks`` a dead-lettered crash of the crash-looping wallet, and
   the tick that quarantined it;
3. takes the screenshots with headless Chromium, one page each:

   - ``flower-tasks.png``     the task list filtered to one actor type (``wallets.wallet``):
                              names, the actor key as the only argument, run summaries;
   - ``flower-failed.png``    the failed tasks: crashed steps, ``StepCrashed`` exceptions;
   - ``flower-crash.png``     one crashed step's page: the exception saying the message was
                              dead-lettered, and the traceback from the handler's ``raise``;
   - ``flower-tick.png``      the page of the ``celery_supervise.tick`` that quarantined the
                              crash-looping wallet: its decisions, in the task's result;
   - ``flower-isolated.png``  isolated subtasks (``celery_supervise.isolated``) in the list;

4. stops the demo (SIGTERM: it stops its workers, beat, Flower and Redis).

Each PNG is checked to stay under 300 KB. Timestamps, ids and counts differ at every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = "name,state,args,result,exception,received,worker"
MAX_BYTES = 300_000
#: The demo is run again if it ends before its summary (it should not; see docs/flower.md).
ATTEMPTS = 3
READY_LINE = "--keep: everything is still running"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # Flower's task list is filled by JavaScript (DataTables, over XHR): let it finish.
    "--virtual-time-budget=8000",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_demo(port: int, seconds: float) -> tuple[subprocess.Popen[str], threading.Event]:
    """Start the demo with ``--keep``; the event is set once it printed its summary."""
    env = {**os.environ, "FLOWER_TASKS_COLUMNS": COLUMNS}
    demo = subprocess.Popen(
        [sys.executable, "-m", "example_project.demo", "--keep",
         "--seconds", str(seconds), "--flower-port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    ready = threading.Event()

    def follow() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            if READY_LINE in line:
                ready.set()
            if any(word in line for word in ("[ok]", "[FAILED]", "flower", "Error")):
                print("demo |", line.rstrip())

    threading.Thread(target=follow, daemon=True).start()
    return demo, ready


def tasks(flower: str, **params: Any) -> dict[str, dict[str, Any]]:
    query = urllib.parse.urlencode({"limit": 5000, **params})
    with urllib.request.urlopen(f"{flower}/api/tasks?{query}", timeout=10) as response:
        found: dict[str, dict[str, Any]] = json.load(response)
    return found


def pick_crash(flower: str) -> str:
    """A dead-lettered crash raised by the handler itself (the crash-looping wallet)."""
    failed = tasks(flower, taskname="wallets.wallet", state="FAILURE")
    for wanted in ("ValueError", ""):
        for uuid, task in failed.items():
            text = task.get("exception") or ""
            if "dead-lettered" in text and wanted in text:
                return uuid
    raise SystemExit(f"no dead-lettered crash in Flower: {sorted(failed)}")


def pick_quarantine_tick(flower: str) -> str:
    """The tick whose result holds a quarantine decision."""
    ticks = tasks(flower, taskname="celery_supervise.tick", state="SUCCESS")
    for uuid, task in ticks.items():
        if "'action': 'quarantine'" in (task.get("result") or ""):
            return uuid
    raise SystemExit("no tick result with a quarantine decision in Flower")


def screenshot(chromium: str, url: str, out: Path, size: str) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-shot-")
    try:
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
             f"--screenshot={out}", url],
            check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    size_bytes = out.stat().st_size
    print(f"{out}  {size_bytes // 1000} KB  <- {url}")
    if size_bytes > MAX_BYTES:
        raise SystemExit(f"{out} is {size_bytes} bytes (over {MAX_BYTES})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--seconds", type=float, default=15.0, help="demo payments (s)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, ATTEMPTS + 1):
        port = free_port()
        flower = f"http://127.0.0.1:{port}"
        demo, ready = start_demo(port, args.seconds)
        if wait_ready(demo, ready, args.seconds + 240):
            break
        stop(demo)
        print(f"the demo ended before its summary (attempt {attempt} of {ATTEMPTS})")
    else:
        raise SystemExit("the demo did not finish its run (see its output above)")
    try:
        time.sleep(2)  # the last ticks' events reach Flower
        crash, tick = pick_crash(flower), pick_quarantine_tick(flower)
        shots = [
            ("flower-tasks.png", "/tasks?name=wallets.wallet", "1400,900"),
            ("flower-failed.png", "/tasks?state=FAILURE", "1400,900"),
            ("flower-crash.png", f"/task/{crash}", "1400,1250"),
            ("flower-tick.png", f"/task/{tick}", "1400,860"),
            ("flower-isolated.png", "/tasks?name=celery_supervise.isolated", "1400,700"),
        ]
        for name, path, size in shots:
            screenshot(args.chromium, flower + path, args.out / name, size)
    finally:
        stop(demo)
    return 0


def wait_ready(demo: subprocess.Popen[str], ready: threading.Event, timeout: float) -> bool:
    """True once the demo printed its summary and keeps running; False if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and demo.poll() is None:
        if ready.wait(0.5):
            return True
    return False


def stop(demo: subprocess.Popen[str]) -> None:
    if demo.poll() is None:
        demo.send_signal(signal.SIGTERM)  # the demo stops its workers, beat, Flower, Redis
    try:
        demo.wait(30)
    except subprocess.TimeoutExpired:
        demo.kill()


if __name__ == "__main__":
    sys.exit(main())
