"""The celery_supervise demo: real workers, beat and Flower; failures injected; an account.

    python -m example_project.demo [--keep] [--seconds 25] [--wallets 12] [--no-flower]
                                   [--cluster]

It starts a Redis server of its own (persistence on: ``appendonly yes``, ``appendfsync
always``) unless ``$DEMO_REDIS_URL`` names one, two Celery workers, beat (the supervisor
tick) and Flower, all from the Flask example app (``--cluster``: the actors' state on a
local Redis Cluster of three primaries instead, the broker on the one server). Then it
drives the wallet domain -- deposits, then payments through a flaky gateway run as
isolated subtasks -- and injects:

- a worker SIGKILLed while it works (a replacement starts),
- the gateway failing about 30 % of calls, and one call hanging past its timeout,
- a poison message (an overdraft: it fails the wallet's ``validate``),
- a crash-looping wallet (every message it gets is malformed).

A panel shows progress and the supervision tree live. At the end a summary tells what was
sent, committed and dead-lettered, the restarts and quarantines, and checks that nothing was
lost: for every actor, every message it received is committed, dead-lettered or still queued,
and the money adds up against the ledger. ``--keep`` leaves everything running to explore
Flower; Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery_supervise import Supervision
from celery_supervise.testing import CeleryProcess, RedisServer, start_beat, start_worker
from celery_supervise.testing.topologies import LocalCluster

APP = "example_project.flask_app.make_celery"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Share of gateway calls that fail at random in the demo.
GATEWAY_FAILURE_RATE = "0.3"
#: Longest a gateway call takes (seconds): calls are in flight when a worker is killed.
GATEWAY_LATENCY = "1.5"
#: Cents every wallet starts with.
OPENING_DEPOSIT = 10_000
LOOP_WALLET = "w-crashloop"
POISON_WALLET = "w-03"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    """Everything the demo started and counted."""

    args: argparse.Namespace
    workdir: Path
    redis: RedisServer | None = None
    cluster: LocalCluster | None = None
    redis_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, CeleryProcess] = field(default_factory=dict)
    beat: CeleryProcess | None = None
    flower: CeleryProcess | None = None
    flower_url: str = ""
    sent: Counter[str] = field(default_factory=Counter)
    injected: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        self.injected.append(f"{time.monotonic() - self.started:5.1f}s  {text}")

    def stop_all(self) -> None:
        for proc in [*self.workers.values(), self.beat, self.flower]:
            if proc is not None:
                proc.kill()
        if self.redis is not None:
            self.redis.close()
        if self.cluster is not None:
            self.cluster.close()


# -- starting the parts --
def start(run: Run) -> None:
    url = os.environ.get("DEMO_REDIS_URL")
    if url is None:
        run.redis = RedisServer(
            appendonly=True, appendfsync="always", data_dir=str(run.workdir / "redis")
        ).start()
        url = run.redis.url
    broker = url
    if run.args.cluster:  # the actors' state on a cluster; the broker stays on one server
        run.cluster = LocalCluster(primaries=3, appendonly=True).start()
        url = run.cluster.url
    run.redis_url = url
    run.env = {
        "EXAMPLE_REDIS_URL": url,
        "EXAMPLE_BROKER_URL": broker,
        "EXAMPLE_KEY_PREFIX": f"demo-{int(time.time())}",
        "WALLETS_GATEWAY_FAILURE_RATE": GATEWAY_FAILURE_RATE,
        "WALLETS_GATEWAY_LATENCY": GATEWAY_LATENCY,
    }
    os.environ.update(run.env)
    if run.cluster:
        print(f"redis      {url}  (a local 3-primary cluster; broker on {broker})")
    else:
        print(f"redis      {url}" + ("  (embedded, appendfsync always)" if run.redis else ""))
    starters = [threading.Thread(target=_start_worker, args=(run, n)) for n in ("w1", "w2")]
    for t in starters:
        t.start()
    run.beat = start_beat(APP, env=run.env, schedule_dir=run.workdir / "beat")
    for t in starters:
        t.join()
    print("workers    w1, w2 (prefork, 2 processes each); beat runs the supervisor tick every 1 s")
    if not run.args.no_flower:
        port = run.args.flower_port or _free_port()
        run.flower = CeleryProcess(
            APP,
            "--address=127.0.0.1",
            f"--port={port}",
            name="flower",
            env={**run.env, "FLOWER_UNAUTHENTICATED_API": "true"},
            cwd=str(PROJECT_ROOT),
            log_dir=run.workdir,
        ).start_ready(30)
        run.flower_url = f"http://127.0.0.1:{port}"
        print(f"flower     {run.flower_url}")


def _start_worker(run: Run, name: str) -> None:
    run.workers[name] = start_worker(
        APP,
        concurrency=2,
        hostname=f"{name}@%h",
        env=run.env,
        log_dir=run.workdir,
        extra=("-E",),  # task events, for Flower
    )


# -- the workload --
def drive(run: Run, wallets: list[str]) -> None:
    from example_project.wallets.actors import wallet

    rng = random.Random(7)
    for key in wallets:
        wallet.ref(key).send({"deposit": OPENING_DEPOSIT}, message_id=f"open-{key}")
        run.sent["deposit"] += 1
    events = {
        3.0: lambda: _slow_payment(run),
        6.0: lambda: _kill_worker(run),
        8.0: lambda: _poison(run),
        10.0: lambda: _crash_loop(run),
    }
    begun = time.monotonic()
    deadline = begun + run.args.seconds
    n = 0
    while time.monotonic() < deadline:
        for at in [t for t in events if t <= time.monotonic() - begun]:
            events.pop(at)()
        payer = rng.choice(wallets)
        wallet.ref(payer).send(
            {"pay": rng.randrange(100, 900), "to": f"shop-{rng.randrange(5)}"},
            message_id=f"pay-{n}",
        )
        run.sent["pay"] += 1
        n += 1
        time.sleep(0.15)
    for action in events.values():
        action()


def _slow_payment(run: Run) -> None:
    from example_project.wallets.actors import wallet

    wallet.ref("w-00").send({"pay": 250, "to": "shop-slow", "simulate": "timeout"})
    run.sent["pay"] += 1
    run.note("w-00 pays through a gateway call that hangs past its 10 s timeout")


def _kill_worker(run: Run) -> None:
    victim = run.workers.pop("w1")
    victim.kill()
    run.note(
        f"SIGKILL worker w1 (pid {victim.pid}) and its pool: steps and gateway calls "
        "in flight die with it"
    )
    _start_worker(run, "w3")
    run.note("worker w3 started to replace it")


def _poison(run: Run) -> None:
    from example_project.wallets.actors import wallet

    wallet.ref(POISON_WALLET).send({"withdraw": 10**9}, message_id="poison-overdraft")
    run.sent["poison"] += 1
    run.note(f"poison message to {POISON_WALLET}: an overdraft, which fails validate()")


def _crash_loop(run: Run) -> None:
    from example_project.wallets.actors import wallet

    ref = wallet.ref(LOOP_WALLET)
    ref.send({"deposit": OPENING_DEPOSIT}, message_id=f"open-{LOOP_WALLET}")
    for i in range(4):  # malformed: no payee -- the wallet raises on every one
        ref.send({"pay": 100, "to": ""}, message_id=f"malformed-{i}")
    ref.send({"deposit": 1}, message_id="after-the-loop")
    run.sent["deposit"] += 2
    run.sent["malformed"] += 4
    run.note(f"{LOOP_WALLET} gets 4 malformed payments in a row: a crash loop")


# -- watching --
def panel(run: Run, wallets: list[str]) -> str:
    from example_project.wallets.actors import LEDGER_KEY, ledger, wallet

    sup = Supervision.for_current_app()
    snaps = [wallet.ref(k).snapshot() for k in [*wallets, LOOP_WALLET]]
    ledger_snap = ledger.ref(LEDGER_KEY).snapshot()
    statuses = Counter(s.status for s in snaps)
    outcomes = Counter(
        p["status"] if p["status"] != "failed" else f"failed:{p['error']['type']}"
        for s in snaps
        if s.state
        for p in s.state["recent"]
    )
    held = sum(len(s.state["held"]) for s in snaps if s.state)
    lines = [
        f"celery_supervise demo  {time.monotonic() - run.started:5.1f}s"
        + (f"   Flower: {run.flower_url}" if run.flower_url else ""),
        f"workers  {', '.join(run.workers)} | beat | redis {run.redis_url}",
        "",
        f"sent by the demo   {sum(run.sent.values()):4d}  ({_fmt(run.sent)})",
        f"steps committed    {sum(s.version for s in snaps) + ledger_snap.version:4d}  "
        f"(wallets {sum(s.version for s in snaps)}, ledger {ledger_snap.version})",
        f"queued             {sum(s.pending for s in snaps) + ledger_snap.pending:4d}   "
        f"dead letters {sum(s.dead_letters for s in snaps)}",
        f"payments           {_fmt(outcomes) or '-'}   on hold {held}",
        "",
        "supervision tree",
    ]
    for name in sup.tree.names():
        depth = _depth(sup, name)
        info = _text_dict(sup.client.hgetall(sup.keyspace.supervisor(name)))
        restarts = sup.client.zcard(sup.keyspace.supervisor_history(name))
        spec = sup.tree.spec(name)
        detail = ""
        if name == "payments":
            detail = "  wallets: " + _fmt(statuses)
        elif name == "audit":
            detail = f"  ledger: {ledger_snap.status}, {ledger_snap.version} entries"
        lines.append(
            f"{'  ' * (depth + 1)}{name} [{info.get('status', 'running')}] "
            f"{spec.strategy}, restarts kept {restarts}{detail}"
        )
    lines += ["", "injected"] + [f"  {line}" for line in run.injected[-6:]]
    lines += ["", "latest decisions"] + [f"  {d}" for d in _recent_decisions(sup, 6)]
    return "\n".join(lines)


def _depth(sup: Any, name: str) -> int:
    depth, parent = 0, sup.tree.parent(name)
    while parent is not None:
        depth, parent = depth + 1, sup.tree.parent(parent)
    return depth


def _text_dict(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)


def _events(sup: Any) -> list[dict[str, Any]]:
    return [json.loads(f[b"event"]) for _, f in sup.client.xrange(sup.keyspace.events)]


def _recent_decisions(sup: Any, n: int) -> list[str]:
    out = []
    for e in _events(sup)[-n:]:
        what = e.get("action") or e["event"]
        who = e.get("child") or (f"{e.get('actor')}:{e.get('key')}" if e.get("key") else "")
        extra = e.get("reason") or e.get("cause") or e.get("error") or ""
        out.append(f"{what:<15} {who} {extra}".rstrip())
    return out


def watch(run: Run, wallets: list[str], until: threading.Event) -> None:
    tty = sys.stdout.isatty()
    while not until.wait(1.0):
        try:
            text = panel(run, wallets)
        except Exception as exc:  # Redis restarting, a snapshot mid-write: show, go on
            text = f"(panel unavailable: {exc})"
        if tty:
            sys.stdout.write("\033[H\033[J" + text + "\n")
        else:
            sys.stdout.write(text.splitlines()[0] + " | " + text.splitlines()[3] + "\n")
        sys.stdout.flush()


def settle(run: Run, wallets: list[str], timeout: float) -> bool:
    """Wait until every wallet that is not quarantined has nothing queued or on hold."""
    from example_project.wallets.actors import LEDGER_KEY, ledger, wallet

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snaps = [wallet.ref(k).snapshot() for k in [*wallets, LOOP_WALLET]]
        busy = [
            s
            for s in snaps
            if s.status != "quarantined" and (s.pending or (s.state and s.state["held"]))
        ]
        if not busy and not ledger.ref(LEDGER_KEY).snapshot().pending:
            return True
        time.sleep(0.5)
    return False


# -- the account --
def summary(run: Run, wallets: list[str], settled: bool) -> bool:
    from example_project.wallets.actors import LEDGER_KEY, ledger, wallet

    sup = Supervision.for_current_app()
    refs = [wallet.ref(k) for k in [*wallets, LOOP_WALLET]] + [ledger.ref(LEDGER_KEY)]
    snaps = [r.snapshot() for r in refs]
    events = _events(sup)
    decisions = [e for e in events if e["event"] == "decision"]
    crashes = [e for e in events if e["event"] == "crash"]
    lost = [
        f"{s.type}:{s.key} received {s.received} = committed {s.version} + dead "
        f"{s.dead_letters} + queued {s.pending}?"
        for s in snaps
        if s.received != s.version + s.dead_letters + s.pending
    ]
    wallet_snaps = [s for s in snaps if s.type == "wallets.wallet"]
    totals = snaps[-1].state["totals"] if snaps[-1].state else {}
    balances = sum(s.state["balance"] for s in wallet_snaps if s.state)
    expected = totals.get("deposit", 0) - totals.get("payment", 0) - totals.get("withdrawal", 0)
    outcomes = Counter(
        p["status"] if p["status"] != "failed" else f"failed ({p['error']['type']})"
        for s in wallet_snaps
        if s.state
        for p in s.state["recent"]
    )
    quarantined = [
        f"{s.key} ({s.halt_reason}, {s.pending} queued)" for s in snaps if s.status == "quarantined"
    ]
    print("\n" + "=" * 78)
    print("SUMMARY")
    print("=" * 78)
    print(f"messages sent by the demo   {sum(run.sent.values())}  ({_fmt(run.sent)})")
    print(
        f"messages received by actors {sum(s.received for s in snaps)}  "
        "(the demo's, plus gateway outcomes and ledger entries sent by actors)"
    )
    print(f"steps committed             {sum(s.version for s in snaps)}")
    print(
        f"dead-lettered               {sum(s.dead_letters for s in snaps)}  "
        f"(inspect: celery -A {APP} supervise dead-letters)"
    )
    print(
        f"still queued                {sum(s.pending for s in snaps)}  "
        "(behind a quarantined actor; resume it to continue)"
    )
    print(
        f"crashes                     {len(crashes)}  "
        f"({_fmt(Counter(c['reason'] for c in crashes))})"
    )
    print(f"restarts                    {sum(1 for e in events if e['event'] == 'restarted')}")
    print(f"quarantines                 {len(quarantined)}  {', '.join(quarantined)}")
    print(f"supervisor decisions        {_fmt(Counter(d['action'] for d in decisions))}")
    print(f"payments                    {_fmt(outcomes)}")
    print("injected:")
    for line in run.injected:
        print(f"  {line}")
    print("checks:")
    ok = True
    for text, passed in [
        ("every actor settled (nothing in flight)", settled),
        ("nothing lost: every message received is committed, dead-lettered or queued", not lost),
        (
            f"money adds up: wallets hold {balances} = ledger deposits - payments - "
            f"withdrawals = {expected}",
            balances == expected,
        ),
        (
            "the poison message was dead-lettered, the wallet went on",
            any(
                s.key == POISON_WALLET and s.dead_letters == 1 and s.status == "idle" for s in snaps
            ),
        ),
        (
            "the crash-looping wallet was quarantined alone, its messages kept",
            [s.key for s in snaps if s.status == "quarantined"] == [LOOP_WALLET],
        ),
        ("the SIGKILLed worker's work was recovered (no step lost)", not lost and settled),
    ]:
        ok = ok and passed
        print(f"  [{'ok' if passed else 'FAILED'}] {text}")
    for line in lost:
        print(f"    {line}")
    if run.flower_url:
        _flower_check(run)
    _operator_view(run)
    return ok


def _operator_view(run: Run) -> None:
    """What an operator sees: the real CLI, run as a user would."""
    import subprocess

    for args in (["status"], ["actor", "wallets.wallet", LOOP_WALLET]):
        cmd = [sys.executable, "-m", "celery", "-A", APP, "supervise", *args]
        print(f"\n$ celery -A {APP} supervise {' '.join(args)}")
        out = subprocess.run(
            cmd,
            env={**os.environ, **run.env},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=PROJECT_ROOT,
        )
        lines = (out.stdout or out.stderr).splitlines()
        print("\n".join(lines[:40]) + ("\n  ..." if len(lines) > 40 else ""))


def _flower_check(run: Run) -> None:
    try:
        with urllib.request.urlopen(f"{run.flower_url}/api/tasks?limit=2000", timeout=5) as r:
            tasks = json.load(r)
    except OSError as exc:
        print(f"flower: not reachable ({exc})")
        return
    # a task whose received event came before Flower subscribed has no name
    names = Counter(t.get("name") or "(unnamed)" for t in tasks.values())
    failed = sum(1 for t in tasks.values() if t.get("state") == "FAILURE")
    print(
        f"flower: {len(tasks)} tasks listed ({_fmt(names)}); {failed} failed "
        f"(crashed steps, with tracebacks) -- {run.flower_url}/tasks"
    )


# -- main --
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave Redis, workers, beat and Flower running until Ctrl-C",
    )
    parser.add_argument(
        "--seconds", type=float, default=25.0, help="how long to send payments (default 25)"
    )
    parser.add_argument("--wallets", type=int, default=12, help="wallets (default 12)")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="keep the actors' state on a local 3-primary Redis Cluster (broker: one server)",
    )
    parser.add_argument("--no-flower", action="store_true", help="do not start Flower")
    parser.add_argument("--flower-port", type=int, default=0, help="Flower's port (default: free)")
    args = parser.parse_args(argv)
    os.chdir(PROJECT_ROOT)
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="celery-supervise-demo-"))
    run = Run(args=args, workdir=workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        start(run)
        import example_project.flask_app.make_celery  # noqa: F401  (the client: same app)

        wallets = [f"w-{i:02d}" for i in range(args.wallets)]
        done = threading.Event()
        watcher = threading.Thread(target=watch, args=(run, wallets, done), daemon=True)
        watcher.start()
        drive(run, wallets)
        settled = settle(run, wallets, timeout=45)
        done.set()
        watcher.join()
        print("\n" + panel(run, wallets))
        ok = summary(run, wallets, settled)
        print(f"\nlogs: {workdir}")
        if args.keep:
            print(
                f"\n--keep: everything is still running. Flower: {run.flower_url or 'off'}"
                f"\n  celery -A {APP} supervise status   (with EXAMPLE_REDIS_URL="
                f"{run.redis_url} EXAMPLE_KEY_PREFIX={run.env['EXAMPLE_KEY_PREFIX']})"
                "\nCtrl-C to stop."
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        run.stop_all()


if __name__ == "__main__":
    sys.exit(main())
