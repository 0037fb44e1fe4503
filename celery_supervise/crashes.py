"""The one crash path, shared by a worker whose step failed and a tick that found a lease
expired: record the crash (fenced by the token), index a dead letter, report it, and relay
what the crash script put in the outbox (a dead-letter notice to an asker). A message due to
be dead-lettered while the actor holds ``supervise_max_dead_letters`` stays at the head of
its mailbox and the actor is quarantined (``dead_letters_full``) for an operator."""

from __future__ import annotations

from .delivery import Delivery
from .keyspace import ActorKeys
from .relay import relay_outbox
from .runtime import Runtime
from .store import ActorStore, CrashOutcome, CrashRecord

__all__ = ["record_crash"]


def record_crash(
    rt: Runtime,
    keys: ActorKeys,
    record: CrashRecord,
    *,
    token: int | str,
    max_attempts: int,
    only_if_expired: bool = False,
) -> CrashOutcome:
    """Record ``record`` against the lease ``token``; nothing happens for a stale token
    (someone else crashed, committed or took the lease meanwhile)."""
    outcome = ActorStore(rt).crash(
        keys,
        token=token,
        record=record,
        max_attempts=max_attempts,
        only_if_expired=only_if_expired,
    )
    if not outcome.crashed:
        return outcome
    if outcome.dead_lettered:
        Delivery(rt).index_dead(keys.type_name, keys.key)
    rt.events.record(
        "crash",
        actor=keys.type_name,
        key=keys.key,
        reason=record.reason,
        error=f"{record.type}: {record.message}",
        worker=record.worker,
        message_id=record.message_id,
        attempt=outcome.attempt,
        dead_lettered=outcome.dead_lettered,
        consecutive=outcome.consecutive,
        dead_letters_full=outcome.dead_letters_full,
    )
    if outcome.dead_letters_full:
        _quarantine_full(rt, keys, record)
    relay_outbox(rt, keys.type_name, keys.key)
    return outcome


def _quarantine_full(rt: Runtime, keys: ActorKeys, record: CrashRecord) -> None:
    """Quarantine the actor whose dead letters are full, unless a tick decided its crash
    first. Not atomic with the crash, and need not be: lost here (this process dies, or a
    tick restarts it first), the message is still at the head with its attempts counted,
    so the next run crashes on it, finds the list still full, and quarantines it then."""
    done = ActorStore(rt).halt(
        keys, "quarantined", reason="dead_letters_full", only_from=("crashed",)
    )
    if done == "ok":
        rt.events.record(
            "quarantined",
            actor=keys.type_name,
            key=keys.key,
            reason="dead_letters_full",
            message_id=record.message_id,
            max_dead_letters=rt.settings.max_dead_letters,
        )
