#!/usr/bin/env python
"""celery_supervise benchmark: one run, one machine, one table.

    python benchmarks/run.py                        # full run (a few minutes)
    python benchmarks/run.py --quick                # smoke run (about two minutes)
    python benchmarks/run.py --only throughput100   # one section (see SECTIONS)
    make bench

It starts its own Redis servers (``celery_supervise.testing.RedisServer``: no persistence,
a free port) and real ``celery worker`` / ``celery beat`` subprocesses for two apps in this
directory -- ``benchmarks.actor_app`` (celery_supervise) and ``benchmarks.plain_app`` (plain
Celery tasks doing the same work) -- configured through ``BENCH_*`` environment variables.
Every process it started is killed on exit, on an error and on Ctrl-C / SIGTERM.

What is measured, one module each (its docstring says how; ``docs/performance.md`` has the
results and the discussion): ``throughput`` (sections ``throughput20``, ``throughput100``,
``throughput1000``), ``latency`` (send latency), ``memory`` (Redis bytes per idle actor),
``recovery`` (after SIGKILL: ``recovery`` with the defaults, ``recovery-fast`` with lease 2 s
and tick 0.5 s), ``tick_cost`` (``tick``), ``settle`` (a burst of due actors settled by 1
and by 2 workers) and ``replica_acks`` (``replica-acks``: what ``supervise_replica_acks=1``
adds to a send); ``table`` prints the one table of ratios against
plain Celery measured in the same run, then the details behind it. ``harness`` holds what
they share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks.harness import KEY_PREFIX, Config, Processes  # noqa: E402
from benchmarks.latency import bench_latency  # noqa: E402
from benchmarks.memory import bench_memory  # noqa: E402
from benchmarks.recovery import bench_recovery, bench_recovery_fast  # noqa: E402
from benchmarks.replica_acks import bench_replica_acks  # noqa: E402
from benchmarks.settle import bench_settle  # noqa: E402
from benchmarks.table import build_table, details, machine_info, render  # noqa: E402
from benchmarks.throughput import bench_throughput  # noqa: E402
from benchmarks.tick_cost import bench_tick  # noqa: E402
from celery_supervise.testing import RedisServer  # noqa: E402

#: Every section, in the order a run takes them; ``--only`` also takes the aliases.
SECTIONS = (
    "throughput20",
    "throughput100",
    "throughput1000",
    "latency",
    "memory",
    "recovery",
    "recovery-fast",
    "tick",
    "settle",
    "replica-acks",
)
ALIASES = {
    "throughput": ("throughput20", "throughput100", "throughput1000"),
    "recoveries": ("recovery", "recovery-fast"),
}


def parse_sections(only: str) -> list[str]:
    """The sections ``--only`` names (aliases expanded), in run order; unknown names fail."""
    wanted: set[str] = set()
    for name in (s.strip() for s in only.split(",")):
        if not name:
            continue
        if name in ALIASES:
            wanted.update(ALIASES[name])
        elif name in SECTIONS:
            wanted.add(name)
        else:
            known = ", ".join((*SECTIONS, *ALIASES))
            raise SystemExit(f"--only: unknown section {name!r} (known: {known})")
    if not wanted:
        raise SystemExit("--only: no section named")
    return [s for s in SECTIONS if s in wanted]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~2 min)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=1,
        help="worker_prefetch_multiplier for both apps (default 1)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run: {', '.join(SECTIONS)}; aliases "
        + "; ".join(f"{k} = {'+'.join(v)}" for k, v in ALIASES.items()),
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results here")
    parser.add_argument("--keep-logs", action="store_true", help="keep worker logs")
    args = parser.parse_args()
    cfg = Config(args.quick, args.concurrency, args.prefetch)
    sections = parse_sections(args.only)

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    log_dir = Path(tempfile.mkdtemp(prefix="celery-supervise-bench-"))
    procs = Processes(log_dir)
    servers: list[RedisServer] = []

    def new_server() -> RedisServer:
        srv = RedisServer(extra_args=["--maxmemory-policy", "noeviction"])
        servers.append(srv)
        return srv.start()

    results: dict[str, Any] = {"quick": cfg.quick}
    started = time.monotonic()
    ok = False
    try:
        server = new_server()
        env = {
            "BENCH_REDIS_URL": server.url,
            "BENCH_KEY_PREFIX": KEY_PREFIX,
            "BENCH_PREFETCH": str(cfg.prefetch),
            # Workers import benchmarks.* from the project root, wherever this was run from.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        for name in (
            "BENCH_LEASE",
            "BENCH_TICK",
            "BENCH_VISIBILITY_TIMEOUT",
            "BENCH_RESTORE_INTERVAL",
        ):
            os.environ.pop(name, None)  # the library defaults, whatever the caller's shell says
        os.environ.update(env)
        from benchmarks import actor_app, plain_app

        actor_app.app.set_current()  # the last app created is current; refs resolve through it

        client = redis.Redis.from_url(server.url)
        results["machine"] = machine_info(client)
        results["loadavg_start"] = os.getloadavg()
        print(
            f"celery_supervise benchmark ({'quick' if cfg.quick else 'full'}) - Redis at "
            f"{server.url}, logs in {log_dir}",
            flush=True,
        )
        print(
            f"load average at start: {' '.join(f'{x:.2f}' for x in results['loadavg_start'])}",
            flush=True,
        )
        shapes = [s for name in sections if name in cfg.shapes for s in cfg.shapes[name]]
        steps: list[tuple[str, Callable[[], Any]]] = [
            (
                "throughput",
                lambda: bench_throughput(cfg, procs, env, client, actor_app, plain_app, shapes),
            ),
            ("latency", lambda: bench_latency(cfg, client, server.url, actor_app, plain_app)),
            ("memory", lambda: bench_memory(cfg.memory_actors, client, actor_app)),
            ("recovery", lambda: bench_recovery(cfg, procs, env, client, actor_app, plain_app)),
            ("recovery-fast", lambda: bench_recovery_fast(cfg, procs, env, client, actor_app)),
            ("tick", lambda: bench_tick(cfg, client, actor_app, new_server)),
            ("settle", lambda: bench_settle(cfg, procs, env, client, actor_app)),
            ("replica-acks", lambda: bench_replica_acks(cfg, actor_app, new_server)),
        ]
        for name, step in steps:
            if name == "throughput" and not shapes:
                continue
            if name != "throughput" and name not in sections:
                continue
            t0 = time.monotonic()
            print(f"- {name} ...", end=" ", flush=True)
            results[name] = step()
            print(f"{time.monotonic() - t0:.0f} s", flush=True)
        results["loadavg_end"] = os.getloadavg()
        results["seconds"] = time.monotonic() - started
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything this run started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        procs.kill_all()
        for srv in servers:
            with contextlib.suppress(Exception):
                srv.close()
        if not ok:
            print(f"worker logs kept in {log_dir}", file=sys.stderr)
        elif not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    m = results["machine"]
    print()
    print(render(build_table(cfg, results)))
    print()
    print(
        f"{m['date']} | {m['cores']} cores {m['cpu']} | {m['ram_gib']} GiB | {m['os']} | "
        f"Python {m['python']} | Redis {m['redis']} | celery {m['celery']} | kombu {m['kombu']}"
        f" | redis-py {m['redis_py']}"
    )
    la0, la1 = results["loadavg_start"], results["loadavg_end"]
    print(
        f"load average (1/5/15 min): start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, "
        f"end {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}; run took {results['seconds']:.0f} s; "
        f"worker: prefork -c {cfg.concurrency}, -O fair, prefetch {cfg.prefetch}; "
        f"sections: {','.join(sections)}"
    )
    details(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
