"""The benchmark harness' own logic (no Redis): the throughput plans and senders, the
``--only`` sections and the table's targets. The measurements themselves are not tests."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from benchmarks.harness import Config, Shape
from benchmarks.run import SECTIONS, parse_sections
from benchmarks.table import build_table
from benchmarks.throughput import plan, send_wave


def test_plan_is_seeded_and_within_the_shape() -> None:
    shape = Shape("s", 100, 1, 5, 3, 1, 5.0)
    waves = plan(shape, seed=1)
    assert waves == plan(shape, seed=1) != plan(shape, seed=2)
    assert len(waves) == 3 and all(len(w) == 100 for w in waves)
    assert {n for w in waves for n in w} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("senders", [1, 4])
def test_send_wave_sends_each_count_one_key_one_thread(senders: int) -> None:
    counts = [1, 5, 2, 3, 4, 1, 2]
    sent: Counter[int] = Counter()
    owner: dict[int, set[str]] = {}
    lock = threading.Lock()

    def send_one(i: int) -> None:
        with lock:
            sent[i] += 1
            owner.setdefault(i, set()).add(threading.current_thread().name)

    send_wave(senders, counts, send_one)
    assert [sent[i] for i in range(len(counts))] == counts
    assert all(len(threads) == 1 for threads in owner.values())
    assert len({t for ts in owner.values() for t in ts}) == min(senders, len(counts))


def test_send_wave_reports_a_sender_thread_error() -> None:
    def send_one(i: int) -> None:
        raise ConnectionError(f"boom {i}")

    with pytest.raises(ConnectionError, match="boom"):
        send_wave(4, [1, 1, 1, 1], send_one)


def test_only_takes_sections_and_aliases_in_run_order() -> None:
    assert parse_sections("tick,throughput100") == ["throughput100", "tick"]
    assert parse_sections("throughput") == ["throughput20", "throughput100", "throughput1000"]
    assert parse_sections(",".join(SECTIONS)) == list(SECTIONS)
    with pytest.raises(SystemExit, match="unknown section 'throughput10'"):
        parse_sections("throughput10")


def test_every_throughput_row_has_its_issue_target() -> None:
    cfg = Config(quick=False, concurrency=2, prefetch=1)
    targets = {s.name: (s.actors, s.senders, s.target) for v in cfg.shapes.values() for s in v}
    assert targets == {
        "deep20": (20, 1, 10.0),
        "shallow100": (100, 1, 5.0),
        "shallow100x4": (100, 4, 5.0),
        "shallow1000": (1000, 1, 5.0),
        "shallow1000x4": (1000, 4, 5.0),
    }


def _throughput_row(actor_rate: float, plain_rate: float) -> dict[str, object]:
    cpu = {"sender (this process)": 1.0, "worker main": 1.0, "pool children": 1.0, "redis": 1.0}
    return {
        "label": "x",
        "target": 5.0,
        "actor_rate": actor_rate,
        "plain_rate": plain_rate,
        "actor_cpu_ms": cpu,
        "plain_cpu_ms": cpu,
    }


def test_table_says_no_below_a_target_and_yes_at_it() -> None:
    cfg = Config(quick=True, concurrency=2, prefetch=1)
    worker = {"rss_mb": 1.0, "pss_mb": 1.0, "processes": 3}
    results = {
        "throughput": {
            "rows": [_throughput_row(499, 100), _throughput_row(500, 100)],
            "actor_worker": worker,
            "plain_worker": worker,
        },
        "memory": {"bytes_per_actor": 301.0, "state_bytes": 33},
        "recovery-fast": {
            "actor_trials": [3.4, 3.6],
            "lease_seconds": 2.0,
            "tick_interval": 0.5,
            "step_seconds": 1.0,
            "detection_delays": [0.2],
        },
    }
    met = [(r[0], r[5]) for r in build_table(cfg, results) if r[5]]
    assert [v for k, v in met if k.startswith("throughput")] == ["NO", "yes"]
    assert ("Redis memory per idle actor after one step, bytes (33-byte state)", "NO") in met
    # the worst trial (3.6 s) against lease + tick + step = 3.5 s; detection within a tick
    assert [v for k, v in met if "recovery" in k or "worker_lost" in k] == ["NO", "yes"]
