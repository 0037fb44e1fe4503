"""The tick split across real workers: a burst of due actors makes beat's tick hand groups
of the due buckets to group ticks (Celery tasks of their own), which the workers take and
visit in parallel, each group under its own lock: every due timer fires exactly once."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from celery_supervise.tick import FAN_OUT_AT, TICK_GROUPS
from tests.harness import CeleryProcess, start_beat, wait_until

ACTORS = 3 * FAN_OUT_AT


def test_a_burst_of_due_timers_is_shared_by_group_ticks_on_the_workers(
    bank: ModuleType, bank_env: dict[str, str], workers: Callable[..., CeleryProcess],
    tmp_path: Path,
) -> None:
    from tests.apps import shop
    # At DEBUG: Celery's "succeeded" lines about the tick, with its result, are DEBUG ones.
    one, two = workers("g1", extra=["-l", "debug"]), workers("g2", extra=["-l", "debug"])
    refs = [shop.timer.ref(f"burst{i}") for i in range(ACTORS)]
    for ref in refs:  # each step sets a durable timer, due half a second later
        ref.send({"after": 0.5, "tag": "x"})
    # No beat yet: the steps run, the timers come due, and nothing fires them.
    wait_until(lambda: all(r.snapshot().state["set"] == ["x"] for r in refs), timeout=90,
               message="every timer set")  # fmt: skip
    beat = start_beat("tests.apps.bank", env=bank_env, schedule_dir=tmp_path / "beat")
    try:
        wait_until(lambda: all(r.snapshot().pending == 0 and r.snapshot().state["fired"]
                               for r in refs),
                   timeout=120, message="every timer fired")  # fmt: skip
    finally:
        beat.kill()
    assert all([tag for tag, _ in r.snapshot().state["fired"]] == ["x"] for r in refs)

    # Celery logs each task's result: beat's ticks ran in the workers, as did the group ticks
    # they handed out ({"groups": [g], ...} with g > 0, and "handed" in the handing tick).
    logs = one.log_text() + two.log_text()
    ticks = re.findall(r"celery_supervise\.tick\[[^\]]+\] succeeded in [0-9.]+s: (\{.*\})", logs)
    handed = [t for t in ticks if "'handed': [" in t and "'handed': []" not in t]
    assert handed, ticks[-5:]
    group_ticks = {int(g) for t in ticks for g in re.findall(r"'groups': \[([1-9])\]", t)}
    assert group_ticks and group_ticks <= set(range(1, TICK_GROUPS)), ticks[-5:]
    by_worker = [{int(g) for g in re.findall(r"'groups': \[([1-9])\]", p.log_text())}
                 for p in (one, two)]  # fmt: skip
    assert all(by_worker), f"group ticks on one worker only: {by_worker}"
