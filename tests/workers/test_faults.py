"""Fault injection with real processes (SPEC 6.1-6.3, 6.7): many senders, many actors, workers
SIGKILLed at random (pool children and whole workers), one worker SIGSTOPped past its lease and
woken again, and the Redis server crashed and restarted mid-run. Afterwards every message must
have been applied exactly once, in order per sender, and none dead-lettered.

Each run owns its Redis server (``appendonly yes``, ``appendfsync always``: a committed step
survives the crash) and its key prefix; the RabbitMQ run also uses a queue name of its own.
The actor (``tests/apps/faults.py``) has a high ``max_attempts`` and high supervisor limits:
a kill mid-step counts an attempt of the message being handled (SPEC 4.1), so an unlucky
message could otherwise be dead-lettered, correctly, by the chaos alone.

Set ``CELERY_SUPERVISE_FAULTS_SEED`` to replay a run's random choices.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from celery_supervise import RedisUnavailable
from celery_supervise.testing import RedisServer
from tests.harness import CeleryProcess, start_beat, start_worker, wait_until

APP = "tests.apps.faults"
RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
RABBIT_URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}//"
LEASE = 2.0
TICK = 0.5
WORKERS = 3
CONCURRENCY = 2


@dataclass
class Plan:
    """What a run sends: per sender, an ordered list of (actor index, n, add, message id)."""

    actors: int
    sends: list[list[tuple[int, int, int, str]]]
    expected_sum: list[int] = field(default_factory=list)
    expected_count: list[int] = field(default_factory=list)
    per_sender: list[Counter[int]] = field(default_factory=list)

    @classmethod
    def make(cls, rng: random.Random, actors: int, messages: int, senders: int) -> Plan:
        sends: list[list[tuple[int, int, int, str]]] = [[] for _ in range(senders)]
        counters = [Counter[int]() for _ in range(senders)]
        total = [0] * actors
        count = [0] * actors
        run = uuid.uuid4().hex[:8]
        for i in range(messages):
            s = i % senders
            # uneven load: a few hot actors get many more messages than the rest
            a = rng.randrange(actors) if rng.random() < 0.8 else rng.randrange(max(1, actors // 20))
            add = rng.randint(1, 9)
            n = counters[s][a]
            counters[s][a] += 1
            total[a] += add
            count[a] += 1
            sends[s].append((a, n, add, f"{run}-s{s}-{i}"))
        return cls(actors, sends, total, count, counters)

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.sends)


class Chaos:
    """Kills, pauses and restarts things while messages flow; logs what it did."""

    def __init__(self, rng: random.Random, env: dict[str, str], tmp: Path, server: RedisServer,
                 label: str) -> None:
        self.rng, self.env, self.tmp, self.server, self.label = rng, env, tmp, server, label
        self.workers: list[CeleryProcess] = []
        self.dead_workers: list[CeleryProcess] = []
        self.beat: CeleryProcess | None = None
        self.stopped: CeleryProcess | None = None
        self.events: list[str] = []
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()
        self._names = itertools.count(1)

    def log(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:6.1f}s {what}")

    def new_worker(self) -> CeleryProcess:
        n = next(self._names)
        proc = start_worker(APP, concurrency=CONCURRENCY, hostname=f"{self.label}{n}@%h",
                            env=self.env, log_dir=self.tmp / "logs", ready_timeout=60)
        self.log(f"worker {n} up pid={proc.pid} log={proc.log_path.name}")
        return proc

    def replace_dead(self) -> None:
        """Keep WORKERS workers up: a worker that exited by itself is replaced (and counted:
        e.g. kombu's Redis transport can die with "Unrecoverable error" when Redis restarts)."""
        for worker in list(self.workers):
            if not worker.is_running() and worker is not self.stopped:
                self.workers.remove(worker)
                self.dead_workers.append(worker)
                self.counts["workers_exited_by_themselves"] += 1
                last = [ln for ln in worker.log_text().splitlines() if "rror" in ln][-1:]
                self.log(f"worker pid={worker.pid} exited by itself rc={worker.returncode}: "
                         f"{last}")
                self.workers.append(self.new_worker())

    def start(self) -> None:
        with ThreadPoolExecutor(WORKERS) as pool:
            self.workers = list(pool.map(lambda _: self.new_worker(), range(WORKERS)))
        self.beat = start_beat(APP, env=self.env, schedule_dir=self.tmp / "beat")
        self.started = time.monotonic()

    def all_procs(self) -> list[CeleryProcess]:
        return [*self.workers, *self.dead_workers, *([self.beat] if self.beat else [])]

    def killable(self) -> list[CeleryProcess]:
        return [w for w in self.workers if w is not self.stopped and w.is_running()]

    def kill_child(self) -> None:
        candidates = [(w, pid) for w in self.killable() for pid in w.child_pids()]
        if not candidates:
            return
        worker, pid = self.rng.choice(candidates)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.counts["child_kills"] += 1
        self.log(f"SIGKILL pool child {pid} of worker pid={worker.pid}")

    def kill_worker(self) -> None:
        candidates = self.killable()
        if not candidates:
            return
        worker = self.rng.choice(candidates)
        worker.kill()  # the whole process group: main process and pool children
        self.workers.remove(worker)
        self.dead_workers.append(worker)
        self.counts["worker_kills"] += 1
        self.log(f"SIGKILL whole worker pid={worker.pid}")
        self.workers.append(self.new_worker())

    def pause_worker(self, seconds: float) -> None:
        worker = self.rng.choice(self.killable())
        os.killpg(worker.pid, signal.SIGSTOP)
        self.stopped = worker
        self.counts["sigstops"] += 1
        self.log(f"SIGSTOP worker pid={worker.pid} for {seconds}s")
        threading.Timer(seconds, self.resume_worker).start()

    def resume_worker(self) -> None:
        worker, self.stopped = self.stopped, None
        if worker is not None and worker.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGCONT)
            self.log(f"SIGCONT worker pid={worker.pid}")

    def restart_redis(self, downtime: float) -> None:
        self.log("Redis SIGKILLed")
        self.server.restart(downtime=downtime)
        self.counts["redis_restarts"] += 1
        self.log("Redis back")

    def run(self, stop: threading.Event, pause_at: float, redis_at: float) -> None:
        paused = restarted = False
        while not stop.is_set():
            if stop.wait(self.rng.uniform(0.8, 2.2)):
                break
            self.replace_dead()
            now = time.monotonic() - self.started
            if not paused and now >= pause_at:
                self.pause_worker(LEASE * 3)
                paused = True
            elif not restarted and now >= redis_at:
                self.restart_redis(downtime=1.5)
                restarted = True
            elif self.rng.random() < 0.2 and self.counts["worker_kills"] < 3:
                self.kill_worker()
            else:
                self.kill_child()

    def close(self) -> None:
        self.resume_worker()
        for proc in self.all_procs():
            proc.kill()

    def tails(self, lines: int = 25) -> str:
        out = []
        for proc in self.all_procs():
            out.append(f"--- {proc!r} (rc={proc.returncode})\n{proc.log_tail(lines)}")
        return "\n".join(out)


def _send_all(refs: list[Any], sends: list[tuple[int, int, int, str]], sender: int,
              seconds: float, retries: Counter[str], errors: list[str],
              fx_of: Callable[[str], dict[str, Any]] | None = None) -> None:
    """Send in order, spread over ``seconds``; on ``RedisUnavailable`` resend the same
    message with the same id until it goes through (the dedup makes that safe). ``fx_of``
    adds the effect a message asks for (the effects variant)."""
    start = time.monotonic()
    per = seconds / max(1, len(sends))
    for i, (a, n, add, mid) in enumerate(sends):
        ahead = start + i * per - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        deadline = time.monotonic() + 60
        while True:
            try:
                body = {"add": add, "s": sender, "n": n, **(fx_of(mid) if fx_of else {})}
                refs[a].send(body, message_id=mid)
                break
            except RedisUnavailable as exc:
                retries["redis_unavailable"] += 1
                if time.monotonic() > deadline:
                    errors.append(f"sender {sender}: gave up on {mid}: {exc}")
                    return
                time.sleep(0.1)
            except Exception as exc:  # not a promised error: report it, keep the order
                retries[type(exc).__name__] += 1
                if not any(type(exc).__name__ in e for e in errors):
                    errors.append(f"sender {sender}: send of {mid} raised "
                                  f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)


def _progress(refs: list[Any]) -> tuple[int, int]:
    snaps = [r.snapshot() for r in refs]
    return sum(s.version for s in snaps), sum(s.pending for s in snaps)


def _check(refs: list[Any], plan: Plan) -> list[str]:
    problems = []
    for a, ref in enumerate(refs):
        snap = ref.snapshot()
        want_sum, want_count = plan.expected_sum[a], plan.expected_count[a]
        state = snap.state or {"balance": 0, "seen": []}
        if state["balance"] != want_sum or snap.version != want_count:
            fields = ("reason", "type", "message", "message_id", "attempt")
            crash = {k: snap.last_crash.get(k) for k in fields} if snap.last_crash else None
            problems.append(f"{ref}: balance {state['balance']} (want {want_sum}), version "
                            f"{snap.version} (want {want_count}), pending {snap.pending}, "
                            f"status {snap.status}, last crash {crash}")
        by_sender: dict[int, list[int]] = defaultdict(list)
        for s, n in state["seen"]:
            by_sender[s].append(n)
        for s, counter in enumerate(plan.per_sender):
            want = list(range(counter[a]))
            got = by_sender.get(s, [])
            if got != want:
                dupes = [n for n, c in Counter(got).items() if c > 1]
                missing = sorted(set(want) - set(got))
                pairs = zip(got, want, strict=False)
                diverge = next((i for i, (x, y) in enumerate(pairs) if x != y), None)
                problems.append(f"{ref}: sender {s} order/count wrong: got {len(got)} want "
                                f"{len(want)}; duplicated {dupes[:10]}, missing {missing[:10]}, "
                                f"first divergence at {diverge}")
        if snap.pending or snap.status != "idle":
            problems.append(f"{ref}: pending {snap.pending}, status {snap.status}")
        dead = ref.dead_letters()
        if dead:
            problems.append(f"{ref}: {len(dead)} dead letter(s), first {dead[0].message_id}: "
                            f"{[c.get('reason') for c in dead[0].crashes]}")
    return problems


def _crash_reasons(sup: Any, refs: list[Any]) -> Counter[str]:
    import json

    reasons: Counter[str] = Counter()
    pipe = sup.client.pipeline(transaction=False)
    for ref in refs:
        pipe.lrange(ref.keys.crashes, 0, -1)
    for records in pipe.execute():
        for raw in records:
            reasons[json.loads(raw).get("reason", "?")] += 1
    return reasons


def fault_run(tmp_path: Path, *, label: str, actors: int, messages: int, senders: int,
              send_seconds: float, broker: str | None = None) -> None:
    seed = int(os.environ.get("CELERY_SUPERVISE_FAULTS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:10]
    server = RedisServer(appendonly=True, appendfsync="always").start()
    env = {
        "FAULTS_BROKER_URL": broker or server.url,
        "FAULTS_REDIS_URL": server.url,
        "FAULTS_KEY_PREFIX": f"f{run_id}",
        "FAULTS_QUEUE": f"faults-{run_id}",
        "FAULTS_LEASE": str(LEASE),
        "FAULTS_TICK": str(TICK),
    }
    from tests.apps.faults import TYPE, make_app

    app, sup = make_app(env)
    if broker is not None:
        app.control.purge()  # our queue only: the app's one queue
    chaos = Chaos(rng, env, tmp_path, server, label=f"{label}{run_id[:4]}-")
    stop = threading.Event()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    plan = Plan.make(rng, actors, messages, senders)
    refs = [sup.ref(TYPE, f"acct-{i}") for i in range(actors)]
    retries: Counter[str] = Counter()
    errors: list[str] = []

    def report(problems: list[str]) -> str:
        try:
            reasons = dict(_crash_reasons(sup, refs))
        except Exception as exc:
            reasons = {"<unreadable>": str(exc)}
        lease_lost = sum(p.log_text().count("lease_lost") for p in chaos.all_procs())
        return (
            f"[{label}] seed={seed} (replay: CELERY_SUPERVISE_FAULTS_SEED={seed})\n"
            f"timings={timings}\nchaos={dict(chaos.counts)} sender retries={dict(retries)} "
            f"crash records by reason={reasons} lease_lost log lines={lease_lost}\n"
            f"sender errors={errors}\n"
            + "\n".join(problems[:40])
            + f"\n{len(problems)} problem(s)\n--- chaos log\n" + "\n".join(chaos.events)
            + f"\n--- process logs\n{chaos.tails()}\n--- redis log\n"
            + "\n".join(server.log_text().splitlines()[-15:])
        )

    try:
        chaos.start()
        timings["startup"] = round(time.monotonic() - t0, 1)
        chaos_thread = threading.Thread(
            target=chaos.run, args=(stop, send_seconds * 0.3, send_seconds * 0.6), daemon=True
        )
        chaos_thread.start()
        threads = [
            threading.Thread(target=_send_all,
                             args=(refs, plan.sends[s], s, send_seconds, retries, errors))
            for s in range(senders)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        timings["sending"] = round(time.monotonic() - t0 - timings["startup"], 1)
        # let the chaos go on while the backlog drains, at least until pause and restart ran
        wait_until(lambda: chaos.counts["redis_restarts"] and not chaos.stopped, 60,
                   message="chaos did not get to the Redis restart")
        stop.set()
        chaos_thread.join(60)
        chaos.resume_worker()
        chaos.replace_dead()
        assert not errors, report([])

        def done() -> bool:
            versions, pending = _progress(refs)
            return versions == plan.total and pending == 0

        try:
            wait_until(done, 150, interval=0.5)
        except AssertionError:
            versions, pending = _progress(refs)
            problems = [f"not drained: {versions}/{plan.total} committed, {pending} pending",
                        *_check(refs, plan)]
            raise AssertionError(report(problems)) from None
        timings["drained"] = round(time.monotonic() - t0, 1)
        # a client retry long after the fact is still recognised (caller-given ids)
        sample = rng.sample([m for s in plan.sends for m in s], 50)
        for a, n, add, mid in sample:
            refs[a].send({"add": add, "s": -1, "n": n}, message_id=mid)
        time.sleep(2 * TICK + 1)
        problems = _check(refs, plan)
        timings["total"] = round(time.monotonic() - t0, 1)
        assert not problems, report(problems)
        reasons = _crash_reasons(sup, refs)
        # the faults must actually have hit steps, or this test proves nothing
        assert reasons["worker_lost"] >= 1, report(["no step was ever lost to a fault"])
        print(report([]).split("--- process logs")[0])
    finally:
        stop.set()
        chaos.close()
        server.close()
        if broker is not None:
            with contextlib.suppress(Exception), app.connection_for_write() as conn:
                conn.default_channel.queue_delete(env["FAULTS_QUEUE"])


@pytest.mark.faults
def test_faults_redis_broker(tmp_path: Path) -> None:
    """The bounded profile for ``make test``: every kind of fault (SIGKILL, SIGSTOP past the
    lease, Redis crashed and restarted), 6,000 messages over 15 s."""
    fault_run(tmp_path, label="r", actors=100, messages=6_000, senders=4, send_seconds=15)


@pytest.mark.faults
@pytest.mark.long_profile
def test_faults_redis_broker_long(tmp_path: Path) -> None:
    """The long run (``make faults``): 20,000 messages to 200 actors over 30 s."""
    fault_run(tmp_path, label="rl", actors=200, messages=20_000, senders=4, send_seconds=30)


def _rabbit_answers() -> bool:
    try:
        with socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=1.0):
            pass
    except OSError:
        return False
    from kombu import Connection

    try:
        with Connection(RABBIT_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.mark.faults
def test_faults_rabbitmq_broker(tmp_path: Path) -> None:
    if not _rabbit_answers():
        how = ("apt-get install rabbitmq-server, then rabbitmq-server -detached (.ci/run starts "
               "an installed one that is not running)")
        # In CI a RabbitMQ that is installed must answer: .ci/run started it.
        if os.environ.get("CI") and shutil.which("rabbitmq-server"):
            pytest.fail(f"RabbitMQ is installed but nothing answers at {RABBIT_URL}")
        pytest.skip(f"no RabbitMQ server answers at {RABBIT_URL}; to run this variant: {how}")
    fault_run(tmp_path, label="q", actors=100, messages=6_000, senders=3, send_seconds=20,
              broker=RABBIT_URL)
