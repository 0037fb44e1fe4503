"""Scenarios the documentation shows, step by step, with what they print as assertions.

Each function takes a ``celery_supervise.testing.LocalRunner``: it runs the actor tasks
(``runner.run()``) and supervisor ticks (``runner.tick()``, ``runner.settle(seconds, until=...)``) in
this process against a real Redis, exactly as workers and beat would. ``tests/docs/test_docs.py``
calls every one of them.
"""

from __future__ import annotations

from typing import Any

from billing import account, importer, naive_importer


def getting_started(runner: Any) -> None:
    # --8<-- [start:getting_started]
    ref = account.ref("acct-42")
    ref.send({"deposit": 10})  # durable in Redis when it returns
    ref.send_many([{"deposit": 5}, {"deposit": "lots"}])  # one round trip, in order
    runner.run()  # a worker would do this: one task run handles the queued messages

    snap = ref.snapshot()
    assert snap.state == {"balance": 15, "rejected": 1, "pending": {}}
    assert (snap.version, snap.status, snap.pending) == (3, "idle", 0)
    assert [h.version for h in ref.history()] == [3, 2, 1]  # committed after every step
    # --8<-- [end:getting_started]


def invalid_state(runner: Any) -> None:
    # --8<-- [start:invalid_state]
    ref = account.ref("acct-7")
    ref.send({"deposit": 10})
    ref.send({"withdraw": 50})  # would commit balance -40: fails validate, so it crashes
    ref.send({"deposit": 1})
    # Ticks restart it (with backoff) and retry; it crashes each time. Wait for the outcome
    # (at most 30 s), not a fixed time: on a loaded machine the same time holds fewer ticks.
    runner.settle(30.0, until=lambda: ref.snapshot().pending == 0)

    snap = ref.snapshot()
    assert snap.state["balance"] == 11  # the last good state, then the next message
    (letter,) = ref.dead_letters()  # after max_attempts=3, with all its crash records
    assert letter.message == {"withdraw": 50}
    assert [c["reason"] for c in letter.crashes] == ["invalid_state"] * 3
    # --8<-- [end:invalid_state]
    # An operator may put it back (a fresh attempt count) once the account can pay.
    ref.send({"deposit": 100})
    runner.run()
    ref.requeue_dead_letter(letter.message_id)
    runner.run()
    assert ref.snapshot().state["balance"] == 61 and not ref.dead_letters()


def isolated_subtask(runner: Any) -> None:
    # --8<-- [start:isolated_subtask]
    ref = account.ref("acct-fx")
    ref.send({"convert": [100, "USD"]})
    ref.send({"convert": [100, "XXX"]})  # fetch_rate raises KeyError in its own task
    runner.run()  # the steps, the two subtasks, then the outcome messages

    snap = ref.snapshot()
    assert snap.state == {"balance": 90, "rejected": 1, "pending": {}}
    assert snap.last_crash is None  # the failing subtask never crashed the actor
    # --8<-- [end:isolated_subtask]


def slow_crash_loop(runner: Any) -> None:
    # --8<-- [start:slow_crash_loop]
    ref = naive_importer.ref("bank-feed")
    sibling = naive_importer.ref("card-feed")
    ref.send({"set_currency": "XXX"})  # commits: the naive invariant lets it through
    ref.send_many([{"amount": 10}, {"amount": 20}, {"amount": 30}])
    sibling.send({"amount": 5})
    runner.settle(30.0, until=lambda: ref.snapshot().status == "quarantined")

    snap = ref.snapshot()
    assert snap.status == "quarantined"  # 4 crashes in a row > max_consecutive_crashes=3
    assert snap.halt_reason == "limit:consecutive_crashes"
    assert snap.state == {"currency": "XXX", "total": 0}  # kept for inspection
    assert len(ref.dead_letters()) == 2 and snap.pending == 1  # nothing deleted
    assert sibling.snapshot().state["total"] == 5  # its sibling was never touched
    # --8<-- [end:slow_crash_loop]
    # --8<-- [start:operator_reset]
    ref.restart(recovery="reset")  # operator: back to initial(key); old state in history
    runner.run()
    assert ref.snapshot().state == {"currency": "EUR", "total": 30}
    assert any(h.state["currency"] == "XXX" for h in ref.history())
    # --8<-- [end:operator_reset]


def validated_importer(runner: Any) -> None:
    # --8<-- [start:validated_importer]
    ref = importer.ref("bank-feed")
    ref.send({"set_currency": "XXX"})  # fails validate: crashes, dead-lettered at attempt 2
    ref.send_many([{"amount": 10}, {"amount": 20}])
    runner.settle(30.0, until=lambda: ref.snapshot().pending == 0)

    snap = ref.snapshot()
    assert (snap.status, snap.state) == ("idle", {"currency": "EUR", "total": 30})
    assert snap.consecutive_crashes == 0  # a committed step clears the count
    assert [d.message for d in ref.dead_letters()] == [{"set_currency": "XXX"}]
    # --8<-- [end:validated_importer]


SCENARIOS = [getting_started, invalid_state, isolated_subtask, slow_crash_loop,
             validated_importer]
