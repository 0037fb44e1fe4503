"""``supervise_max_dead_letters``: an actor holding that many dead letters is quarantined
(reason ``dead_letters_full``) instead of dead-lettering another message. Nothing is dropped:
the message stays at the head of its mailbox, with everything behind it, until an operator
makes room (requeue) and resumes the actor."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery

from celery_supervise import Context, Supervision, actor
from celery_supervise.testing import LocalRunner

#: The handler's bug, "fixed" by the test before it requeues the dead letters.
BROKEN = {"yes": True}


@actor(name="cap.fragile", initial={"got": []}, max_attempts=1)
def fragile(ctx: Context, state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    if message.get("poison") and BROKEN["yes"]:
        raise ValueError(f"poison {message['n']}")
    state["got"].append(message["n"])
    return state


@pytest.fixture
def capped(supervise_redis_url: str, supervise_runner: Any) -> Iterator[tuple[Any, LocalRunner]]:
    app = Celery("capped", broker=supervise_redis_url, set_as_current=False)
    app.conf.update(
        supervise_key_prefix="cap",
        supervise_max_dead_letters=2,
        # restarts quick and never over the intensity: only the cap quarantines here
        supervise_supervisors={"root": {"intensity": 1000, "backoff": {"initial": 0.01}}},
    )
    sup = Supervision(app)
    BROKEN["yes"] = True
    yield sup.ref("cap.fragile", "a"), supervise_runner(sup)
    BROKEN["yes"] = True


def _until(local: LocalRunner, ref: Any, settled: Callable[[Any], bool]) -> Any:
    """Run steps and ticks until ``settled(snapshot)`` (or give up after a while)."""
    deadline = time.monotonic() + 15
    while not settled(snap := ref.snapshot()) and time.monotonic() < deadline:
        local.run()
        local.tick()
        time.sleep(0.02)
    return snap


def _halted(snap: Any) -> bool:
    return snap.status in ("quarantined", "stopped")


def _poison_then_good(ref: Any, local: LocalRunner) -> Any:
    for n in (1, 2, 3):
        ref.send({"poison": True, "n": n}, message_id=f"p{n}")
    ref.send({"n": 4}, message_id="good")
    return _until(local, ref, _halted)


def _accounted(snap: Any) -> bool:
    return snap.received == snap.version + snap.dead_letters + snap.pending


def test_the_message_over_the_cap_quarantines_the_actor_and_is_kept(
    capped: tuple[Any, LocalRunner],
) -> None:
    ref, local = capped
    snap = _poison_then_good(ref, local)
    assert [d.message_id for d in ref.dead_letters()] == ["p1", "p2"]
    assert (snap.status, snap.halt_reason) == ("quarantined", "dead_letters_full")
    assert snap.pending == 2 and _accounted(snap)  # p3 at the head, the good one behind it
    assert snap.last_crash is not None and snap.last_crash["message"] == "poison 3"
    # Resumed without room, it crashes on p3 again and is quarantined again: still kept.
    before = snap.last_crash
    ref.resume()
    snap = _until(local, ref, lambda s: _halted(s) and s.last_crash != before)
    assert snap.last_crash["message"] == "poison 3"
    assert (snap.status, snap.halt_reason) == ("quarantined", "dead_letters_full")
    assert snap.pending == 2 and snap.dead_letters == 2 and _accounted(snap)


def test_after_requeue_and_resume_every_message_is_handled(
    capped: tuple[Any, LocalRunner],
) -> None:
    ref, local = capped
    _poison_then_good(ref, local)
    BROKEN["yes"] = False  # the operator read the dead letters and deployed the fix
    for message_id in ("p1", "p2"):
        ref.requeue_dead_letter(message_id)
    assert ref.snapshot().status == "quarantined"  # requeue alone does not resume it
    ref.resume()
    snap = _until(local, ref, lambda s: s.pending == 0 or _halted(s))
    assert snap.status == "idle" and snap.dead_letters == 0 and snap.pending == 0
    assert snap.state["got"] == [3, 4, 1, 2]  # each once (received counts the requeues too)


def test_below_the_cap_poison_is_dead_lettered_and_the_actor_goes_on(
    capped: tuple[Any, LocalRunner],
) -> None:
    ref, local = capped
    ref.send({"poison": True, "n": 1})
    ref.send({"n": 2})
    snap = _until(local, ref, lambda s: s.pending == 0 or _halted(s))
    assert snap.status == "idle" and snap.dead_letters == 1 and snap.state["got"] == [2]


def test_a_quarantine_lost_after_the_crash_happens_on_the_next_crash(
    capped: tuple[Any, LocalRunner], monkeypatch: Any
) -> None:
    """The crash and the quarantine are two writes: a process dying between them leaves
    the actor 'crashed' with the message kept, and the next run quarantines it."""
    from celery_supervise import crashes

    lost: list[str] = []
    real = crashes._quarantine_full

    def dies_before_quarantine(rt: Any, keys: Any, record: Any) -> None:
        if not lost:
            lost.append(record.message_id)
            return
        real(rt, keys, record)

    monkeypatch.setattr(crashes, "_quarantine_full", dies_before_quarantine)
    ref, local = capped
    snap = _poison_then_good(ref, local)
    assert lost == ["p3"]
    assert (snap.status, snap.halt_reason) == ("quarantined", "dead_letters_full")
    assert snap.dead_letters == 2 and snap.pending == 2 and _accounted(snap)
