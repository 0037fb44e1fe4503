"""Encryption at rest (``supervise_codec``, docs/long-lived.md) against a real Redis, driven
in this process: under ``FernetCodec`` no payload is readable in Redis, everything reads
back, a wrong key is ``CodecError`` and never costs a message an attempt, and
``reencrypt`` rotates every actor of a type to the newest key."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import ModuleType
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from celery_supervise import CodecError, ConfigurationError, reencrypt, runner
from celery_supervise.codecs import FernetCodec, Payloads, load_codec
from celery_supervise.reencrypt import reencrypt_type
from celery_supervise.testing import LocalRunner

SECRET = b"PLAINTEXT"
K1, K2, WRONG = (Fernet.generate_key().decode() for _ in range(3))


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


@pytest.fixture
def keys(bank: ModuleType, local: LocalRunner) -> Iterator[Callable[..., None]]:
    """``keys(K2, K1)``: this process's codec is FernetCodec with these keys, newest first
    (``keys()``: back to plain JSON)."""
    rt = bank.supervision.runtime
    before = rt.settings

    def use(*given: str) -> None:
        rt.use_settings(replace(before, codec=FernetCodec(list(given)) if given else "json"))

    yield use
    rt.use_settings(before)


def values(client: redis.Redis) -> list[bytes]:
    """Every value stored under the test prefix, read by its type (not DUMP: RDB may
    compress a string, hiding the plaintext this looks for)."""
    out: list[bytes] = []
    for key in client.scan_iter(match="t:*", count=1000):
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            out += [v for kv in client.hgetall(key).items() for v in kv]
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            out += [str(e).encode() for e in client.xrange(key)]
        else:
            out.append(str(client.dump(key)).encode())
    return out


def until(local: LocalRunner, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not done():
        assert time.monotonic() < deadline
        local.run()
        local.tick()
        time.sleep(0.02)


def populate(bank: ModuleType, local: LocalRunner) -> Any:
    """An actor with state, history, a forward, a timer, a dead letter and pending messages."""
    ref = bank.vault.safe.ref("s1")
    ref.send({"secret": "PLAINTEXT-1", "forward": "s2", "later": True, "again": True,
              "reveal": True})
    local.run()
    ref.send({"secret": "PLAINTEXT-boom", "boom": True})
    until(local, lambda: bool(ref.dead_letters()))
    until(local, lambda: ref.snapshot().status == "idle")
    ref.send_many([{"secret": "PLAINTEXT-pending-1"}, {"secret": "PLAINTEXT-pending-2"}])
    local.queue.clear()  # the pending messages stay in the mailbox
    return ref


def test_fernet_leaves_no_payload_readable_in_redis(
    bank: ModuleType, local: LocalRunner, keys: Any, redis_client: redis.Redis
) -> None:
    keys(K1)
    populate(bank, local)
    stored = values(redis_client)
    assert any(b"sealed:" in v for v in stored)
    assert [v for v in stored if SECRET in v] == []


def test_the_json_codec_stores_payloads_as_plain_json(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """The control for the test above: without a codec the same data is readable."""
    populate(bank, local)
    stored = values(redis_client)
    assert any(SECRET in v for v in stored) and not any(b"sealed:" in v for v in stored)


def test_everything_reads_back_under_fernet(
    bank: ModuleType, local: LocalRunner, keys: Any
) -> None:
    keys(K1)
    ref = populate(bank, local)
    snap = ref.snapshot()
    assert sorted(snap.state["secrets"]) == ["PLAINTEXT-1", "PLAINTEXT-1-revealed",
                                             "PLAINTEXT-1-self"]  # fmt: skip
    assert snap.pending == 2
    assert ref.history()[0].state == snap.state
    (letter,) = ref.dead_letters()
    assert letter.message == {"secret": "PLAINTEXT-boom", "boom": True}
    assert bank.vault.safe.ref("s2").snapshot().state == {"secrets": ["PLAINTEXT-1-fwd"]}
    replayed = ref.replay(message_id=letter.message_id)
    assert replayed.message == letter.message and replayed.state == snap.state
    answers: list[Any] = []
    asker = threading.Thread(target=lambda: answers.append(ref.ask({"secret": "PLAINTEXT-ask"})))
    asker.start()
    until(local, lambda: not asker.is_alive())
    assert answers == [6]  # the reply, sealed in the outbox and the reply list, opened
    ref.rollback(ref.history()[-1].version)
    ref.requeue_dead_letter(letter.message_id)
    local.run()
    assert ref.snapshot().state == ref.history()[0].state


def test_a_wrong_key_is_a_codec_error_on_the_client(
    bank: ModuleType, local: LocalRunner, keys: Any, redis_client: redis.Redis
) -> None:
    keys(K1)
    ref = populate(bank, local)
    keys(WRONG)
    for read in (ref.snapshot, ref.history, ref.dead_letters):
        with pytest.raises(CodecError, match="wrong key"):
            read()
    keys(K1)
    stored = bytearray(redis_client.hget(ref.keys.meta, "state") or b"")
    stored[20] = ord("A") if stored[20] != ord("A") else ord("B")  # one byte tampered
    redis_client.hset(ref.keys.meta, "state", bytes(stored))
    with pytest.raises(CodecError, match="tampered"):
        ref.snapshot()
    keys()  # a process that has no codec at all cannot read them either
    with pytest.raises(CodecError, match="no supervise_codec"):
        ref.snapshot()


def test_a_worker_with_a_wrong_key_costs_no_message_an_attempt(
    bank: ModuleType, local: LocalRunner, keys: Any, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr(runner, "_refused", set())
    keys(K1)
    ref = populate(bank, local)
    before, crashes = ref.snapshot(), redis_client.llen(ref.keys.crashes)
    keys(WRONG)
    for _ in range(3):  # the worker refuses (and publishes it again later); it refuses again
        bank.supervision.publish("vault.safe", "s1")
        local.run()
        local.tick()
    # Each refusal published the run again one tick interval later, for a free worker (from
    # inside the refusing run, so not the refusing one): not at once, so no busy loop.
    assert [name for _, name, args, _ in local.later if args == ("s1",)] == ["vault.safe"] * 3
    meta = redis_client.hgetall(ref.keys.meta)
    assert meta.get(b"attempts", b"0") == b"0" and meta[b"status"] == b"active"
    assert redis_client.llen(ref.keys.crashes) == crashes and redis_client.llen(ref.keys.dead) == 1
    assert not local.queue  # nobody re-published it at once: no busy loop of refusals
    logged = [r for r in caplog.records if "codec_refused" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelname == "ERROR"  # once, for three refusals
    keys(K1)  # a correctly keyed worker takes it over
    until(local, lambda: ref.snapshot().pending == 0)
    after = ref.snapshot()
    assert after.version == before.version + 2 and len(ref.dead_letters()) == 1
    assert after.state["secrets"][-2:] == ["PLAINTEXT-pending-1", "PLAINTEXT-pending-2"]


def test_reencrypt_rotates_every_actor_of_the_type_to_the_newest_key(
    bank: ModuleType, local: LocalRunner, keys: Any
) -> None:
    keys(K1)
    ref = populate(bank, local)
    keys(K2)
    with pytest.raises(CodecError):  # without the rotation the new key alone reads nothing
        ref.snapshot()
    keys(K2, K1)
    expected = (ref.snapshot(), ref.history(), ref.dead_letters())
    report = reencrypt_type(bank.supervision.runtime, "vault.safe")
    assert sorted(report.rotated) == ["s1", "s2"] and report.failed == {}
    keys(K2)
    assert (ref.snapshot(), ref.history(), ref.dead_letters()) == expected
    named = [t for t in ref.snapshot().timers if t.name == "named"]
    assert [t.message for t in named] == [{"secret": "PLAINTEXT-1-named"}]  # a named timer too
    until(local, lambda: ref.snapshot().pending == 0)  # the mailbox too
    assert ref.snapshot().state["secrets"][-1] == "PLAINTEXT-pending-2"
    timers = local.supervision.runtime.client.zrange(ref.keys.timers, 0, -1)
    body = next(t for t in timers if not t.startswith(b"@")).partition(b"\n")[2]  # unnamed
    assert Payloads(FernetCodec([K2])).open(body, what="timer")  # the timer's body


def test_reencrypt_encrypts_what_was_stored_as_plain_json(
    bank: ModuleType, local: LocalRunner, keys: Any, redis_client: redis.Redis
) -> None:
    ref = populate(bank, local)
    expected = (ref.snapshot(), ref.history(), ref.dead_letters())
    keys(K1)
    reencrypt_type(bank.supervision.runtime, "vault.safe")
    assert [v for v in values(redis_client) if SECRET in v] == []
    assert (ref.snapshot(), ref.history(), ref.dead_letters()) == expected


def test_reencrypt_reads_again_when_the_actor_changed_in_between(
    bank: ModuleType, local: LocalRunner, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys(K1)
    ref = populate(bank, local)
    keys(K2, K1)
    resealed, reads = reencrypt._resealed, []

    def racing(*args: Any) -> Any:  # a send lands between the read and the fenced write
        reads.append(1)
        if len(reads) == 1:
            ref.send({"secret": "PLAINTEXT-raced"})
        return resealed(*args)

    monkeypatch.setattr(reencrypt, "_resealed", racing)
    reencrypt.reencrypt_actor(bank.supervision.runtime, ref.keys)
    assert len(reads) == 2  # the first write was refused, the second read saw the send
    keys(K2)
    assert ref.snapshot().pending == 3
    until(local, lambda: ref.snapshot().pending == 0)
    assert ref.snapshot().state["secrets"][-1] == "PLAINTEXT-raced"


def test_reencrypt_under_the_json_codec_is_refused(bank: ModuleType, local: LocalRunner) -> None:
    with pytest.raises(ConfigurationError, match="supervise_codec"):
        reencrypt_type(bank.supervision.runtime, "vault.safe")


def test_the_codec_setting_is_validated() -> None:
    assert load_codec("json", "supervise_codec") is None
    with pytest.raises(ConfigurationError, match=r"supervise_codec.*cannot import"):
        load_codec("no.such.module:codec", "supervise_codec")
    with pytest.raises(ConfigurationError, match=r"supervise_codec.*no encode"):
        load_codec("celery_supervise.codecs:SEALED_PREFIX", "supervise_codec")
    with pytest.raises(ConfigurationError, match="no keys"):
        FernetCodec([])
    with pytest.raises(ConfigurationError, match="not a Fernet key"):
        FernetCodec(["short"])
