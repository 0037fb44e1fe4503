"""One clock (correctness item 14) with real processes: a worker whose host clock is an hour
off (libfaketime, Debian's ``faketime`` package) still gets its timers and its isolated
subtasks' timeouts right, because everything it stamps for other processes is on Redis'
clock. Beat and the worker that runs the ticks keep the right time."""

from __future__ import annotations

import datetime
import glob
import os
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.harness import start_beat, start_worker, wait_until

TICKS = "ticks"

#: libfaketime 0.9.10 with the monotonic clock left alone fails ``clock_nanosleep`` on it
#: (EINVAL), which ``time.sleep`` uses; timed waits on locks work, so sleep is one of those.
SLEEP_SHIM = """\
import threading
import time

_never = threading.Event()


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    _never.wait(seconds)


time.sleep = _sleep
"""


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    found += sorted(glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    if not found:
        message = "libfaketime is missing: apt-get install faketime (.ci/run installs it)"
        if os.environ.get("CI"):  # in CI a missing dependency fails, never skips
            pytest.fail(message)
        pytest.skip(message)
    return found[0]


@pytest.fixture
def shop(bank: ModuleType) -> ModuleType:
    from tests.apps import shop as module

    return module


def _log_clock_skew(log: str) -> float:
    """How far the clock a worker logs with is from ours (seconds), from its last log line."""
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+:", log, re.MULTILINE)
    assert stamps, log[-2000:]
    at = datetime.datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S")
    return (at - datetime.datetime.now()).total_seconds()


def _key(shop: ModuleType, plan: str, prefix: str) -> str:
    return next(k for i in range(1000) if shop.gateway_plan(k := f"{prefix}-{i}") == plan)


@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_a_worker_an_hour_off_gets_its_timers_and_isolate_timeouts_right(
    shop: ModuleType, bank_env: dict[str, str], tmp_path: Path, offset: str
) -> None:
    env = {**bank_env, "TEST_TICK_QUEUE": TICKS}
    # The wall clock only: a host's skew is its wall clock's (and libfaketime's faked
    # monotonic clock makes every timed wait, e.g. threading.Event.wait, hang).
    faked = {"LD_PRELOAD": _libfaketime(), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    site = tmp_path / "faketime-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLEEP_SHIM)
    skewed_env = {**env, **faked, "PYTHONPATH": str(site)}
    started: list[Any] = []
    try:
        started.append(start_beat("tests.apps.bank", env=env, schedule_dir=tmp_path / "beat"))
        started.append(start_worker("tests.apps.bank", concurrency=1, hostname="ticks@%h",
                                    queues=TICKS, env=env, log_dir=tmp_path))  # fmt: skip
        skewed = start_worker("tests.apps.bank", concurrency=4, hostname="skewed@%h",
                              queues=f"celery,{shop.GATEWAY_QUEUE}", env=skewed_env,
                              log_dir=tmp_path)  # fmt: skip
        started.append(skewed)
        skew = 3600 if offset == "+1h" else -3600
        assert abs(_log_clock_skew(skewed.log_text()) - skew) < 120  # libfaketime took hold
        timer = shop.timer.ref(f"skewed{offset}")
        checkout = shop.checkout.ref(f"skewed{offset}")
        ok, hang = _key(shop, "ok", f"ok{offset}"), _key(shop, "hang", f"hang{offset}")
        sent = time.monotonic()
        timer.send({"after": 0.5, "tag": "a"})
        checkout.send({"pay": [[ok, 5, 1.0]], "timeout": 30.0})  # arrives after ~1 s
        checkout.send({"pay": [[hang, 5, 0.0]], "timeout": 2.0})  # never returns

        def both() -> dict[str, Any]:
            outcomes = (checkout.snapshot().state or {}).get("outcomes", [])
            by_tag = {o["isolated"]: o for o in outcomes}
            return by_tag if len(by_tag) == 2 else {}

        by_tag = wait_until(both, 20, message=f"isolate outcomes of a worker at {offset}")
        assert by_tag[ok]["ok"] is True, by_tag[ok]  # not timed out early
        assert by_tag[hang]["ok"] is False and by_tag[hang]["error"]["type"] == "Timeout"
        # the timeout came when it was due (2 s, plus ticks), not an hour off
        assert time.monotonic() - sent < 10

        def fired() -> Any:
            return (timer.snapshot().state or {}).get("fired")

        ((tag, late),) = wait_until(fired, 20, message=f"timer of a worker at {offset}")
        # due time plus a tick or two; not a repair interval (4 s here) late, as when the
        # worker stamped the timer's hint on its own clock and only the sender's hint counted
        assert tag == "a" and -0.1 <= late < 2.5, late
    finally:
        for proc in started:
            proc.kill()
