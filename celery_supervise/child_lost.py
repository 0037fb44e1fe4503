"""A prefork pool process that died mid-step (the OOM killer, a segfault in a C extension,
a ``SIGKILL``): its parent, the worker's main process, hears of it at once -- billiard
reports the job's ``WorkerLostError`` -- and ends the dead step's lease then, instead of
leaving it to run out ``supervise_lease_seconds`` later.

Ending it is fenced by the owner (``forfeit.lua``: only a lease still held by that dead
process, ``hostname:pid`` as its claim wrote it) and leaves the lease exactly as one that
ran out; the parent then visits the actor as a tick would (``tick.visit_or_retry``), so the
``worker_lost`` crash, its attempt, the dead-letter rule and the supervisor's decision are
the tick's own, fenced by the token as always. A whole worker killed leaves no parent to
notice: its leases run out and the tick finds them, as before.

``Supervision`` connects ``PoolWatch`` in the worker's main process only (``worker_init``),
never at import time.
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

from celery import signals
from celery.exceptions import WorkerLostError

from .codec import text
from .keyspace import actor_member
from .registry import all_types
from .runtime import Runtime, new_run_id, waiting_at_most
from .store import ActorStore
from .tick import visit_or_retry

__all__ = ["PATIENCE", "PoolWatch", "end_lost_lease", "end_lost_run"]

log = logging.getLogger("celery_supervise")

#: Longest the worker's main process waits for Redis on one lost pool process (seconds):
#: it runs in the worker's event loop, and if Redis does not answer the lease simply runs
#: out and the tick finds it.
PATIENCE = 1.0


def end_lost_run(rt: Runtime, type_name: str, key: str, task_id: str, worker: str) -> str:
    """The pool process ``worker`` died in the task run ``task_id``, published for actor
    ``type_name:key``: end the leases that process may hold -- on that actor, or on one it
    took from the type's ready set (``runner.serve_ready``) -- then give the ready set
    back what the run held. Returns what was done for ``key`` (see ``end_lost_lease``)."""
    outcome = end_lost_lease(rt, type_name, key, worker)  # first: the likeliest one
    try:
        with waiting_at_most(PATIENCE):
            raw = rt.client.hget(rt.keyspace.ready_taken(type_name), task_id)
        for other in (k for k in _keys(raw) if k != key):
            end_lost_lease(rt, type_name, other, worker, quiet=True)
        with waiting_at_most(PATIENCE):
            spawn_id = new_run_id()
            reply = rt.ready(type_name, "lost", task_id, spawn_id=spawn_id)
            (handed,) = (text(x) for x in reply)
            if handed:
                rt.dispatch_run(type_name, handed, spawn_id)
    except Exception as exc:  # the actor's own lease is ended; the rest waits a lease
        log.warning("celery_supervise child_lost_ready_failed actor=%s run=%s error=%r "
                    "(what the run held goes back when it stops counting as live)",
                    type_name, task_id, exc)  # fmt: skip
    return outcome


def _keys(raw: bytes | str | None) -> list[str]:
    try:
        keys = json.loads(raw) if raw else []
    except ValueError:
        return []  # garbage: ready.lua refuses it, naming the key
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


def end_lost_lease(
    rt: Runtime, type_name: str, key: str, worker: str, *, quiet: bool = False
) -> str:
    """The pool process ``worker`` ("hostname:pid") died running a task of actor
    ``type_name:key``: end the lease it may still hold and visit the actor at once. Returns
    what the visit did (``worker_lost``, ``released_more``, ...) or, when the lease was not
    that process's, ``not_held``. Recorded as a ``child_lost`` event either way (when
    ``quiet``, only if the lease was that process's)."""
    keys = rt.keyspace.actor(type_name, key)
    member = actor_member(type_name, key)
    with waiting_at_most(PATIENCE):
        lease, score = ActorStore(rt).forfeit(keys, worker)
        outcome: str = lease
        if lease != "not_held" and score is not None:
            # The same visit a tick makes when the hint comes due: expire_lease's
            # worker_lost (or the release of a batch that had ended), then the decision.
            bucket = rt.keyspace.due_bucket(member)
            outcome = visit_or_retry(rt, bucket, member, score, rt.now_ms())
    if not quiet or lease != "not_held":
        rt.events.record(
            "child_lost", actor=type_name, key=key, worker=worker, lease=lease, outcome=outcome
        )
    return outcome


class PoolWatch:
    """In the worker's main process: remembers the requests of running tasks (weakly, by
    task id: Celery's ``task_failure`` does not say which pool process ran the task), and
    on a ``WorkerLostError`` of an actor's task ends the dead process's lease."""

    def __init__(self, rt: Runtime, app: Any) -> None:
        self.rt, self.app = rt, app
        self.requests: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def connect(self) -> None:
        signals.task_received.connect(self.on_received, weak=False)
        signals.task_failure.connect(self.on_failure, weak=False)

    def on_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is not None and getattr(sender, "app", self.app) is self.app:
            self.requests[request.id] = request

    def on_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        args: Any = None,
        **_: Any,
    ) -> None:
        # task_failure also fires in the pool processes, for every task that raised: only
        # the parent ever sees a WorkerLostError.
        if not isinstance(exception, WorkerLostError) or task_id is None:
            return
        request = self.requests.pop(task_id, None)
        run = self._actor_run(sender, args)
        pid = getattr(request, "worker_pid", None)
        if request is None or run is None or not pid:
            return  # not an actor's run, or it never started in a pool process
        name, key = run
        worker = f"{request.hostname}:{pid}"
        try:
            end_lost_run(self.rt, name, key, task_id, worker)
        except Exception as exc:  # never into Celery's failure handling
            log.warning(
                "celery_supervise child_lost_unhandled actor=%s key=%s worker=%s error=%r "
                "(left to the lease's expiry and the tick)", name, key, worker, exc,
            )  # fmt: skip

    def _actor_run(self, task: Any, args: Any) -> tuple[str, str] | None:
        """(type, key) if ``task`` is an actor type's task of this app run for ``args``."""
        name = getattr(task, "name", None)
        if name not in all_types() or getattr(task, "app", None) is not self.app:
            return None
        if not isinstance(args, list | tuple) or len(args) != 1 or not isinstance(args[0], str):
            return None
        return name, args[0]
