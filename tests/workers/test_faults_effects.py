"""Effects exactly once under fault injection (SPEC 6.4 with real processes): the chaos of
``test_faults.py`` (pool children and whole workers SIGKILLed at random; in the long run
also a worker SIGSTOPped past its lease and Redis crashed) while every message to
``faults.effector`` asks for one effect: ``ctx.send`` to a ``faults.sink``, ``ctx.reply`` to
an ``ask`` from the test, ``ctx.isolate`` of a small task, or ``ctx.send_after``. On top of
that, each worker SIGKILLs its own pool process now and then right after a commit that left
effects in its outbox, before relaying them (``FAULTS_DIE_AFTER_COMMIT``): the moment random
kills from outside almost never hit.

After it settles, every effect happened exactly once: each send received once by its sink
(by tag), each isolate produced one outcome message, each timer fired once, and each ask
was answered once -- either the ``ask`` returned the reply, or it raised ``AskTimeout``
and the one reply is still waiting in its reply list (nothing pushed twice). The messages
themselves were applied exactly once, in order per sender.

The short run is part of ``make test``; the long one runs with ``-m faults``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from celery_supervise import AskTimeout, RedisUnavailable
from celery_supervise.testing import RedisServer
from tests.harness import wait_until
from tests.workers.test_faults import LEASE, TICK, Chaos, Plan, _send_all

KINDS = ("send", "isolate", "timer", None)
ASK_TIMEOUT = 15.0
TIMED_OUT = "<AskTimeout>"


def fx_of(mid: str) -> dict[str, Any]:
    """The effect a sent message asks for: fixed by its id, so the check can predict it."""
    kind = KINDS[int(hashlib.sha256(mid.encode()).hexdigest(), 16) % len(KINDS)]
    return {"fx": kind, "tag": mid} if kind else {}


@dataclass
class EffectsPlan:
    """The sends (a ``Plan``) plus, per asker, an ordered list of (actor, n, message id)."""

    plan: Plan
    asks: list[list[tuple[int, int, str]]]
    answers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, rng: random.Random, actors: int, messages: int, senders: int,
             askers: int, asks: int) -> EffectsPlan:
        plan = Plan.make(rng, actors, messages, senders)
        run = uuid.uuid4().hex[:8]
        out: list[list[tuple[int, int, str]]] = [[] for _ in range(askers)]
        plan.per_sender += [Counter() for _ in range(askers)]  # askers are senders too
        for i in range(asks):
            j, a = i % askers, rng.randrange(actors)
            counter = plan.per_sender[senders + j]
            out[j].append((a, counter[a], f"{run}-ask{j}-{i}"))
            counter[a] += 1
            plan.expected_sum[a] += 1
            plan.expected_count[a] += 1
        return cls(plan, out)

    def tags(self, kind: str) -> Counter[tuple[int, str]]:
        """(actor, tag) of every sent message asking for ``kind``, once each."""
        return Counter((a, mid) for sends in self.plan.sends for a, _, _, mid in sends
                       if fx_of(mid).get("fx") == kind)


def _ask_all(refs: list[Any], asks: list[tuple[int, int, str]], sender: int, seconds: float,
             answers: dict[str, Any], errors: list[str]) -> None:
    """Ask in order, spread over ``seconds``; an ``AskTimeout`` is recorded (the reply must
    then be waiting); ``RedisUnavailable`` asks again with the same id (deduplicated)."""
    per = seconds / max(1, len(asks))
    start = time.monotonic()
    for i, (a, n, mid) in enumerate(asks):
        time.sleep(max(0.0, start + i * per - time.monotonic()))
        body = {"add": 1, "s": sender, "n": n, "fx": "reply", "tag": mid}
        deadline = time.monotonic() + 60
        while True:
            try:
                answers[mid] = refs[a].ask(body, timeout=ASK_TIMEOUT, message_id=mid)
                break
            except AskTimeout:
                answers[mid] = TIMED_OUT
                break
            except RedisUnavailable as exc:
                if time.monotonic() > deadline:
                    errors.append(f"asker {sender}: gave up on {mid}: {exc}")
                    return
                time.sleep(0.1)


def _settled(sup: Any, refs: list[Any], sinks: list[Any], ep: EffectsPlan) -> bool:
    snaps = [r.snapshot() for r in refs]
    if any(s.pending or s.status != "idle" for s in snaps):
        return False
    states = [s.state or {} for s in snaps]
    outcomes = sum(len(st.get("outcomes", [])) for st in states)
    fired = sum(len(st.get("fired", [])) for st in states)
    got = sum(len((s.snapshot().state or {}).get("got", [])) for s in sinks)
    pending_iso = sum(sup.client.exists(r.keys.isolates) for r in refs)
    return (sum(s.version for s in snaps) == ep.plan.total + sum(map(len, ep.asks))
            + outcomes + fired and outcomes == sum(ep.tags("isolate").values())
            and fired == sum(ep.tags("timer").values())
            and got == sum(ep.tags("send").values()) and not pending_iso)


def _check_messages(refs: list[Any], plan: Plan) -> list[str]:
    problems = []
    for a, ref in enumerate(refs):
        snap = ref.snapshot()
        state = snap.state or {"balance": 0, "seen": []}
        if state["balance"] != plan.expected_sum[a]:
            problems.append(f"{ref}: balance {state['balance']}, want {plan.expected_sum[a]}")
        by_sender: dict[int, list[int]] = {}
        for s, n in state["seen"]:
            by_sender.setdefault(s, []).append(n)
        for s, counter in enumerate(plan.per_sender):
            if by_sender.get(s, []) != list(range(counter[a])):
                problems.append(f"{ref}: sender {s} applied {by_sender.get(s, [])[:20]}..., "
                                f"want 0..{counter[a] - 1} once each in order")
        if ref.dead_letters():
            problems.append(f"{ref}: {len(ref.dead_letters())} dead letter(s)")
    return problems


def _check_effects(sup: Any, refs: list[Any], sinks: list[Any], ep: EffectsPlan) -> list[str]:
    problems = []
    states = [r.snapshot().state or {} for r in refs]
    outcomes = Counter((a, tag) for a, st in enumerate(states) for tag, _ in st["outcomes"])
    fired = Counter((a, tag) for a, st in enumerate(states) for tag in st["fired"])
    got = Counter((tuple(g)) for s in sinks for g in (s.snapshot().state or {}).get("got", []))
    want_sends = Counter((refs[a].key, tag) for a, tag in ep.tags("send"))
    for name, have, want in (("isolate outcomes", outcomes, ep.tags("isolate")),
                             ("timers fired", fired, ep.tags("timer")),
                             ("sends received", got, want_sends)):
        if have != want:
            extra, missing = have - want, want - have
            problems.append(f"{name}: {len(extra)} extra {list(extra.items())[:5]}, "
                            f"{len(missing)} missing {list(missing.items())[:5]}")
    for asks in ep.asks:
        for a, _, mid in asks:
            problems += _check_reply(sup, refs[a], mid, ep.answers.get(mid))
    return problems


def _check_reply(sup: Any, ref: Any, mid: str, answer: Any) -> list[str]:
    """Answered once: by the ask (nothing left in the reply list), or after an AskTimeout
    by the one reply still waiting there."""
    want = {"key": ref.key, "tag": mid}
    left = [json.loads(raw) for raw in sup.client.lrange(ref.keys.reply(mid), 0, -1)]
    if answer == TIMED_OUT:
        got = [x.get("value") for x in left]
        return [] if got == [want] else [f"{ref} ask {mid} timed out; replies waiting: {got}"]
    if answer != want or left:
        return [f"{ref} ask {mid}: answered {answer!r}, then still waiting {left}"]
    return []


def effects_run(tmp_path: Path, *, label: str, actors: int, messages: int, senders: int,
                askers: int, asks: int, send_seconds: float, full_chaos: bool,
                die_after_commit: float) -> None:
    seed = int(os.environ.get("CELERY_SUPERVISE_FAULTS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:10]
    server = RedisServer(appendonly=True, appendfsync="always").start()
    env = {"FAULTS_BROKER_URL": server.url, "FAULTS_REDIS_URL": server.url,
           "FAULTS_KEY_PREFIX": f"e{run_id}", "FAULTS_QUEUE": f"effects-{run_id}",
           "FAULTS_LEASE": str(LEASE), "FAULTS_TICK": str(TICK),
           "FAULTS_DIE_AFTER_COMMIT": str(die_after_commit)}
    from tests.apps.faults import EFFECTOR, SINK, died_after_commit_key, make_app

    _, sup = make_app(env)
    chaos = Chaos(rng, env, tmp_path, server, label=f"{label}{run_id[:4]}-")
    ep = EffectsPlan.make(rng, actors, messages, senders, askers, asks)
    refs = [sup.ref(EFFECTOR, f"fx-{i}") for i in range(actors)]
    sinks = [sup.ref(SINK, f"sink-{i}") for i in range(4)]
    stop, errors, retries = threading.Event(), list[str](), Counter[str]()

    def report(problems: list[str]) -> str:
        died = int(sup.client.get(died_after_commit_key(env["FAULTS_KEY_PREFIX"])) or 0)
        timeouts = sum(1 for v in ep.answers.values() if v == TIMED_OUT)
        return (f"[{label}] seed={seed} chaos={dict(chaos.counts)} died_after_commit={died} "
                f"ask timeouts={timeouts} errors={errors}\n" + "\n".join(problems[:40])
                + "\n--- chaos log\n" + "\n".join(chaos.events)
                + f"\n--- process logs\n{chaos.tails()}")

    try:
        chaos.start()
        at = (send_seconds * 0.3, send_seconds * 0.6) if full_chaos else (math.inf, math.inf)
        chaos_thread = threading.Thread(target=chaos.run, args=(stop, *at), daemon=True)
        chaos_thread.start()
        threads = [threading.Thread(target=_send_all, args=(
            refs, ep.plan.sends[s], s, send_seconds, retries, errors, fx_of))
            for s in range(senders)]
        threads += [threading.Thread(target=_ask_all, args=(
            refs, ep.asks[j], senders + j, send_seconds, ep.answers, errors))
            for j in range(askers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if full_chaos:
            wait_until(lambda: chaos.counts["redis_restarts"] and not chaos.stopped, 60,
                       message="chaos did not get to the Redis restart")
        stop.set()
        chaos_thread.join(60)
        chaos.resume_worker()
        chaos.replace_dead()
        assert not errors, report([])
        try:
            wait_until(lambda: _settled(sup, refs, sinks, ep), 150, interval=0.5)
        except AssertionError:
            raise AssertionError(report(["not settled", *_check_messages(refs, ep.plan),
                                         *_check_effects(sup, refs, sinks, ep)])) from None
        time.sleep(2 * TICK + 1)  # anything still to happen (a second relay) would now
        problems = _check_messages(refs, ep.plan) + _check_effects(sup, refs, sinks, ep)
        assert not problems, report(problems)
        died = int(sup.client.get(died_after_commit_key(env["FAULTS_KEY_PREFIX"])) or 0)
        assert died >= 1, report(["no worker died right after a commit: nothing was tested"])
        print(report([]).split("--- chaos log")[0])
    finally:
        stop.set()
        chaos.close()
        server.close()


def test_effects_exactly_once_under_worker_kills_short(tmp_path: Path) -> None:
    """The bounded profile for ``make test``: pool children killed at random, a worker
    dying right after some commits; about 240 sends and 24 asks over 8 s."""
    effects_run(tmp_path, label="es", actors=8, messages=240, senders=2, askers=1, asks=24,
                send_seconds=8, full_chaos=False, die_after_commit=0.08)


@pytest.mark.faults
def test_effects_exactly_once_under_faults(tmp_path: Path) -> None:
    """Every fault (``make test``'s size): also whole workers killed, a worker SIGSTOPped
    past its lease and Redis crashed and restarted; 2,000 sends and 100 asks over 12 s."""
    effects_run(tmp_path, label="ef", actors=30, messages=2000, senders=3, askers=2, asks=100,
                send_seconds=12, full_chaos=True, die_after_commit=0.02)


@pytest.mark.faults
@pytest.mark.long_profile
def test_effects_exactly_once_under_faults_long(tmp_path: Path) -> None:
    """The long run (``make faults``): 6,000 sends and 300 asks over 30 s."""
    effects_run(tmp_path, label="efl", actors=60, messages=6000, senders=3, askers=2,
                asks=300, send_seconds=30, full_chaos=True, die_after_commit=0.02)
