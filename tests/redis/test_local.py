"""The runtime against a real Redis, driven in this process by ``LocalRunner`` (no workers):
settings, options and bad input, crash causes, restart types, recovery, quarantine and
escalation. The same code paths run in workers; tests with real processes are elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import pytest
import redis
from celery import Celery

from celery_supervise import (
    ConfigurationError,
    CorruptActorData,
    InvalidKey,
    InvalidMessage,
    MessageTooLarge,
    NotInstalled,
    Supervision,
    actor,
)
from celery_supervise.testing import LocalRunner


@pytest.fixture
def local(bank: ModuleType, supervise_runner: Any) -> LocalRunner:
    runner: LocalRunner = supervise_runner(bank.supervision)
    return runner


def _app(**conf: Any) -> Celery:
    app = Celery("cfg", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.update(conf)
    return app


# -- settings and installation ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("supervise_bogus", 1, "supervise_bogus: unknown"),
        ("supervise_tick_interval", 0, "supervise_tick_interval: must be a number > 0"),
        ("supervise_lease_seconds", "5", "supervise_lease_seconds: must be a number"),
        ("supervise_max_state_bytes", 1.5, "supervise_max_state_bytes: must be an int"),
        ("supervise_dedup_window", True, "supervise_dedup_window: must be an int"),
        ("supervise_max_dead_letters", 0, "supervise_max_dead_letters: must be an int >= 1"),
        ("supervise_max_dead_letters", "9", "supervise_max_dead_letters: must be an int"),
        ("supervise_redis_url", "http://x", "supervise_redis_url: must start with"),
        ("supervise_key_prefix", "a{b}", "supervise_key_prefix"),
        ("supervise_supervisors", {"s": {"intensity": -1}}, "['s']['intensity']"),
        ("supervise_supervisors", {"s": {"colour": 1}}, "['s']"),
        ("supervise_supervisors", {"s": {"parent": "nope"}}, "nope"),
    ],
)
def test_bad_settings_name_the_key(key: str, value: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Supervision(_app(**{key: value}))
    assert fragment in str(info.value)


def test_django_style_namespace_unknown_key_is_named() -> None:
    class Settings:
        CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
        CELERY_SUPERVISE_TICK_INTERVALL = 2

    app = Celery("dj", set_as_current=False)
    app.config_from_object(Settings, namespace="CELERY")
    with pytest.raises(ConfigurationError, match="CELERY_SUPERVISE_TICK_INTERVALL"):
        Supervision(app)


def test_django_style_nested_setting_errors_name_the_key_as_written() -> None:
    settings = {
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "CELERY_SUPERVISE_SUPERVISORS": {"orders": {"intensity": -1}},
    }
    app = Celery("dj3", set_as_current=False)
    app.config_from_object(type("Settings", (), settings), namespace="CELERY")
    with pytest.raises(ConfigurationError) as info:
        Supervision(app)
    assert str(info.value).startswith("CELERY_SUPERVISE_SUPERVISORS['orders']['intensity']: ")


def test_django_style_settings_are_read() -> None:
    class Settings:
        CELERY_BROKER_URL = "amqp://guest@localhost//"
        CELERY_SUPERVISE_REDIS_URL = "redis://127.0.0.1:1/3"
        CELERY_SUPERVISE_TICK_INTERVAL = 2.5

    app = Celery("dj2", set_as_current=False)
    app.config_from_object(Settings, namespace="CELERY")
    sup = Supervision(app)
    assert sup.settings.redis_url == "redis://127.0.0.1:1/3"
    assert sup.settings.tick_interval == 2.5


def test_redis_url_defaults_to_backend_then_broker_else_error() -> None:
    app = _app(result_backend="redis://127.0.0.1:1/5")
    assert Supervision(app).settings.redis_url == "redis://127.0.0.1:1/5"
    assert Supervision(_app()).settings.redis_url == "redis://127.0.0.1:1/0"
    amqp = Celery("amqp", broker="amqp://guest@localhost//", set_as_current=False)
    with pytest.raises(ConfigurationError, match="supervise_redis_url"):
        Supervision(amqp)


def test_install_is_idempotent_and_merges_beat_schedule() -> None:
    app = _app(beat_schedule={"mine": {"task": "x", "schedule": 10}}, supervise_tick_interval=2)
    first = Supervision(app)
    assert Supervision(app) is first
    schedule = app.conf.beat_schedule
    assert schedule["mine"] == {"task": "x", "schedule": 10}
    assert schedule["celery_supervise.tick"]["schedule"] == 2
    assert "celery_supervise.tick" in app.tasks


def test_actor_on_app_without_supervision_raises(bank: ModuleType) -> None:
    bare = Celery("bare", broker="redis://127.0.0.1:1/0")
    bare.set_current()
    try:
        with pytest.raises(NotInstalled, match="Supervision"):
            bank.account.ref("k")
    finally:
        bank.app.set_current()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"colour": "red"}, "unknown option"),
        ({"restart": "sometimes"}, "restart must be one of"),
        ({"recovery": "magic"}, "recovery must be one of"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"history": True}, "history"),
        ({"time_limit": -1}, "time_limit"),
        ({"initial": {1, 2}}, "initial"),
        ({"name": "a:b"}, "name"),
        ({"supervisor": "has space"}, "supervisor: a supervisor name must be"),
        ({"max_attempts": 1.0}, "max_attempts must be an int >= 1, got 1.0"),
        ({"time_limit": float("nan")}, "time_limit must be a finite number > 0"),
    ],
)
def test_actor_options_are_validated(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        actor(**options)(lambda ctx, state, message: state)


def test_importing_connects_nothing_and_registers_no_signal() -> None:
    code = (
        "import socket, celery.signals as s\n"
        "before = {n: len(getattr(s, n).receivers or []) for n in dir(s) "
        "if hasattr(getattr(s, n), 'receivers')}\n"
        "real = socket.socket.connect\n"
        "def refuse(*a): raise SystemExit('connected at import')\n"
        "socket.socket.connect = refuse\n"
        "import celery_supervise, celery_supervise.cli, celery_supervise.testing\n"
        "after = {n: len(getattr(s, n).receivers or []) for n in before}\n"
        "assert before == after, (before, after)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- bad input at the call site: clear error, nothing written ---------------------------------
@pytest.mark.parametrize(
    ("message", "error", "fragment"),
    [
        ({1, 2}, InvalidMessage, "set is not JSON"),
        ({"a": float("nan")}, InvalidMessage, "not valid JSON"),
        ({1: "a"}, InvalidMessage, "JSON keys must be str"),
        ({"when": object()}, InvalidMessage, "object is not JSON"),
        ("x" * 300_000, MessageTooLarge, "over supervise_max_message_bytes"),
    ],
)
def test_bad_messages_are_refused_before_anything_is_written(
    bank: ModuleType, redis_client: redis.Redis, message: Any, error: type, fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        bank.account.ref("k").send(message)
    assert redis_client.dbsize() == 0


def test_deep_nesting_is_refused(bank: ModuleType, redis_client: redis.Redis) -> None:
    deep: Any = []
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(InvalidMessage, match="nested deeper"):
        bank.account.ref("k").send(deep)
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("key", ["", "x" * 201, 42, None])
def test_bad_keys_are_refused(bank: ModuleType, redis_client: redis.Redis, key: Any) -> None:
    with pytest.raises(InvalidKey):
        bank.account.ref(key)
    assert redis_client.dbsize() == 0


def test_bad_message_ids_and_unknown_types(bank: ModuleType, redis_client: redis.Redis) -> None:
    from celery_supervise import ActorNotRegistered

    with pytest.raises(InvalidMessage, match="message_id"):
        bank.account.ref("k").send({"add": 1}, message_id="")
    with pytest.raises(ActorNotRegistered, match=r"no\.such"):
        bank.supervision.ref("no.such", "k")
    assert redis_client.dbsize() == 0


def test_keys_with_braces_and_colons_stay_on_one_slot(bank: ModuleType, local: LocalRunner) -> None:
    ref = bank.account.ref("we{ird}:key%7B")
    ref.send({"add": 2})
    local.run()
    assert ref.snapshot().state["balance"] == 2
    keys = ref.keys
    tags = {k[k.index("{") + 1 : k.index("}")] for k in (keys.meta, keys.mailbox, keys.history)}
    assert len(tags) == 1 and "{" not in tags.pop()


# -- steps and crashes --------------------------------------------------------------------------
def test_state_is_committed_after_every_step(bank: ModuleType, local: LocalRunner) -> None:
    ref = bank.account.ref("a")
    ref.send_many([{"add": i} for i in range(1, 6)])
    local.run()
    snap = ref.snapshot()
    assert (snap.version, snap.state["balance"], snap.status, snap.pending) == (5, 15, "idle", 0)
    assert [h.version for h in ref.history()] == [5, 4, 3, 2, 1]
    assert ref.history()[-1].state["balance"] == 1


@pytest.mark.parametrize(
    ("kind", "reason", "fragment"),
    [
        ("invalid", "invalid_state", "fails validate"),
        ("unserializable", "unserializable_state", "set is not JSON"),
        ("huge", "state_too_large", "over supervise_max_state_bytes"),
        ("ask", "exception", "inside an actor handler"),
    ],
)
def test_bad_new_state_is_a_crash_naming_the_cause(
    bank: ModuleType, local: LocalRunner, kind: str, reason: str, fragment: str
) -> None:
    ref = bank.supervision.ref("tree.strict", f"s-{kind}")
    ref.send({"kind": "ok"})
    ref.send({"kind": kind})
    local.run()
    snap = ref.snapshot()
    assert snap.version == 1 and snap.state == {"n": 1}  # last good state kept
    assert snap.last_crash is not None
    assert snap.last_crash["reason"] == reason
    assert fragment in snap.last_crash["message"]
    assert snap.status == "backoff"


def test_time_limit_is_a_crash(bank: ModuleType, local: LocalRunner) -> None:
    ref = bank.supervision.ref("tree.strict", "slow")
    ref.send({"kind": "sleep", "seconds": 3})
    started = time.monotonic()
    local.run()
    assert time.monotonic() - started < 2.5
    crash = ref.snapshot().last_crash
    assert crash is not None and crash["reason"] == "time_limit"


def test_garbage_in_redis_is_named_and_nothing_else_changes(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = bank.account.ref("g")
    ref.send({"add": 1})
    local.run()
    redis_client.hset(ref.keys.meta, "state", "{not json")
    ref.send({"add": 1})
    local.run()
    crash = redis_client.hget(ref.keys.meta, "last_crash")
    assert crash is not None and b"corrupt_data" in crash and b"not valid JSON" in crash
    assert b'"message_id":null' in crash  # not blamed on the innocent message
    assert redis_client.llen(ref.keys.mailbox) == 1  # the message is kept
    with pytest.raises(CorruptActorData, match="stored state"):
        ref.snapshot()
    other = bank.account.ref("wrongtype")
    redis_client.set(other.keys.meta, "hello")
    with pytest.raises(CorruptActorData, match="wrongtype"):
        other.send({"add": 1})
    assert redis_client.get(other.keys.meta) == b"hello"
    foreign = bank.account.ref("foreign")
    redis_client.hset(foreign.keys.meta, mapping={"type": "someone.else", "key": "x"})
    with pytest.raises(CorruptActorData, match="another actor"):
        foreign.send({"add": 1})
    assert redis_client.llen(foreign.keys.mailbox) == 0


def test_garbage_mailbox_entry_is_a_crash_then_dead_letter(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = bank.supervision.ref("tree.strict", "junk")
    ref.send({"kind": "ok"})
    local.run()
    redis_client.rpush(ref.keys.mailbox, b"7 12 garbage")
    ref.send({"kind": "ok"})
    local.settle(2.0)
    snap = ref.snapshot()
    assert snap.state == {"n": 2}  # max_attempts=2: the junk entry was dead-lettered
    (letter,) = ref.dead_letters()
    assert letter.message == "7 12 garbage"  # raw bytes kept for inspection
    assert "mailbox entry is not in celery_supervise's format" in letter.crashes[0]["message"]


# -- restart types and recovery ----------------------------------------------------------------
def test_temporary_actor_is_not_restarted(bank: ModuleType, local: LocalRunner) -> None:
    ref = bank.supervision.ref("tree.temporary", "t")
    ref.send("crash")
    ref.send("after")
    local.settle(1.0)
    snap = ref.snapshot()
    assert snap.status == "stopped" and snap.pending == 2  # mailbox kept
    ref.send("more")  # still accepted
    assert ref.snapshot().pending == 3


def test_transient_stopped_normally_is_not_restarted_crashed_is(
    bank: ModuleType, local: LocalRunner
) -> None:
    normal = bank.supervision.ref("tree.transient", "normal")
    normal.send("stop")
    normal.send("after")
    local.settle(1.0)
    assert normal.snapshot().status == "stopped"
    assert normal.snapshot().pending == 1
    crashed = bank.supervision.ref("tree.transient", "crashed")
    crashed.send({"crash": True, "once": True})
    crashed.send("ok")
    local.run()
    assert crashed.snapshot().status == "backoff"
    local.settle(1.0)
    assert crashed.snapshot().status in ("idle", "backoff")
    assert crashed.snapshot().last_crash is not None


def _restarted_keys(redis_client: redis.Redis) -> list[str]:
    events = [json.loads(f[b"event"]) for _, f in redis_client.xrange("t:events")]
    return sorted(e["key"] for e in events if e["event"] == "restarted")


def test_one_for_all_stops_a_temporary_sibling_and_restarts_the_transient_one(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    """OTP: a group restart terminates a temporary child and never starts it again."""
    sup = bank.supervision
    g0, g1, g2 = (sup.ref(t, k) for t, k in [("tree.member", "g0"), ("tree.temporary", "g1"),
                                              ("tree.transient", "g2")])
    for ref in (g0, g1, g2):
        ref.send("hello")
    local.run()
    g0.send({"crash_once": "grouped"})
    local.settle(1.0)
    assert g1.snapshot().status == "stopped"
    assert redis_client.hget(g1.keys.meta, "halt_reason") == b"stop:tree.member:g0"
    assert _restarted_keys(redis_client) == ["g0", "g2"]
    assert [r.snapshot().status for r in (g0, g2)] == ["idle", "idle"]
    assert [r.snapshot().state for r in (g0, g1, g2)] == [{"n": 2}, {"n": 1}, {"n": 1}]
    g1.send("kept")  # a stopped actor's mailbox keeps filling
    local.settle(0.3)
    assert (g1.snapshot().status, g1.snapshot().pending) == ("stopped", 1)


def test_rest_for_one_stops_only_the_temporary_siblings_after_the_crashed_one(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    sup = bank.supervision
    o0, o1, o2, o3 = (sup.ref(t, f"o{i}") for i, t in enumerate(
        ["tree.temporary", "tree.member", "tree.temporary", "tree.transient"]))
    for ref in (o0, o1, o2, o3):
        ref.send("hello")
    local.run()
    o1.send({"crash_once": "ordered_mixed"})
    local.settle(1.0)
    assert [r.snapshot().status for r in (o0, o1, o2, o3)] == ["idle", "idle", "stopped", "idle"]
    assert _restarted_keys(redis_client) == ["o1", "o3"]


def test_reset_recovery_resumes_from_initial_and_keeps_old_state_in_history(
    bank: ModuleType, local: LocalRunner
) -> None:
    ref = bank.supervision.ref("tree.resetting", "r")
    ref.send_many(["a", "b", "crash"])
    local.run()
    assert ref.snapshot().state == {"n": 2}
    local.settle(1.5)
    snap = ref.snapshot()
    assert snap.state["n"] in (0, 1) or snap.status != "idle"
    history = ref.history()
    assert any(h.reset for h in history)
    assert any(h.state == {"n": 2} for h in history)


def test_operator_stop_resume_restart(bank: ModuleType, local: LocalRunner) -> None:
    ref = bank.account.ref("op")
    ref.send({"add": 3})
    local.run()
    ref.stop()
    ref.send({"add": 4})
    local.run()
    assert ref.snapshot().status == "stopped" and ref.snapshot().pending == 1
    ref.resume()
    local.run()
    assert ref.snapshot().state["balance"] == 7
    ref.restart(recovery="reset")
    assert ref.snapshot().state == {"balance": 0, "seen": []}
    assert ref.history()[1].state["balance"] == 7


def test_startup_check_warns_when_redis_could_lose_or_evict_state(
    bank: ModuleType, redis_client: redis.Redis
) -> None:
    previous = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        redis_client.config_set("maxmemory-policy", "allkeys-lru")
        warnings = bank.supervision.check_redis()
        assert any("allkeys-lru" in w and "noeviction" in w for w in warnings)
        redis_client.config_set("maxmemory-policy", "noeviction")
        assert not any("maxmemory" in w for w in bank.supervision.check_redis())
    finally:
        redis_client.config_set("maxmemory-policy", previous)


def test_requeue_interrupted_between_send_and_removal_applies_once(
    bank: ModuleType, local: LocalRunner, monkeypatch: Any
) -> None:
    ref = bank.poison.ref("rq")
    bad = ref.send("poison")
    local.settle(2.5)
    (letter,) = ref.dead_letters()
    from celery_supervise.store import ActorStore

    # The requeue is one script now: the client can die only after it (its reply lost).
    real_requeue = ActorStore.requeue

    def dies_after_the_script(*args: Any, **kwargs: Any) -> Any:
        real_requeue(*args, **kwargs)
        raise SystemExit("client killed")

    monkeypatch.setattr(ActorStore, "requeue", dies_after_the_script)
    with pytest.raises(SystemExit):
        ref.requeue_dead_letter(bad)
    monkeypatch.undo()
    ref.requeue_dead_letter(bad)  # the operator tries again
    assert ref.dead_letters() == []
    assert ref.snapshot().pending == 1  # queued once, not twice
    assert letter.message == "poison"


def test_rollback_restores_a_committed_version_as_a_new_one(
    bank: ModuleType, local: LocalRunner
) -> None:
    from celery_supervise import UnknownVersion

    ref = bank.account.ref("rb")
    ref.send_many([{"add": 5}, {"add": 7}, {"add": 9}])
    local.run()
    assert ref.snapshot().state["balance"] == 21
    assert ref.rollback(1) == 4
    snap = ref.snapshot()
    assert (snap.version, snap.state["balance"]) == (4, 5)
    newest = ref.history()[0]
    assert (newest.version, newest.rollback_of, newest.reset) == (4, 1, True)
    ref.send({"add": 1})  # goes on from the restored state
    local.run()
    assert ref.snapshot().state["balance"] == 6
    with pytest.raises(UnknownVersion, match="no version 99"):
        ref.rollback(99)


def test_scripts_run_by_sha_in_one_round_trip_and_survive_a_script_flush(
    bank: ModuleType, local: LocalRunner, redis_client: redis.Redis
) -> None:
    ref = bank.account.ref("sha")
    ref.send({"add": 1})
    local.run()
    redis_client.config_resetstat()
    for _ in range(20):
        ref.send({"add": 1})
    local.run()
    stats = redis_client.info("commandstats")
    # no SCRIPT EXISTS / SCRIPT LOAD per call: sends and commits are one round trip each
    assert not any(name.startswith("cmdstat_script") for name in stats), stats.keys()
    redis_client.script_flush()  # Redis restarted without its script cache
    ref.send({"add": 1})
    local.run()
    assert ref.snapshot().state["balance"] == 22


def test_ask_raises_redis_unavailable_when_redis_goes_away_while_it_waits(
    bank: ModuleType,
) -> None:
    """SPEC 6.7: an ``ask`` whose message was sent but whose Redis then goes down raises
    ``RedisUnavailable`` (a ``SuperviseError``), like ``send``, not redis-py's own error."""
    import threading

    from celery_supervise import RedisUnavailable, Supervision
    from celery_supervise.testing import RedisServer

    with RedisServer() as server:
        app = Celery("askdown", broker=server.url, set_as_current=False)
        app.conf.update(supervise_key_prefix="askdown", broker_connection_retry=False)
        ref = Supervision(app).ref("bank.account", "nobody-answers")  # no worker runs
        threading.Timer(0.5, server.kill).start()
        with pytest.raises(RedisUnavailable, match=r"bank\.account:nobody-answers"):
            ref.ask({"add": 1}, timeout=30)


def test_threads_that_first_use_the_clients_together_all_get_both(
    bank: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's two clients (retrying, and ``client_once`` for ``send``) are made on
    first use after a (re)configuration: threads racing there each see both, never one
    made and the other not yet. Making a client can take a while (a cluster client asks
    the nodes for the slots first): here each takes 20 ms."""
    import threading

    rt = bank.supervision.runtime
    connect = rt._connect

    def slow_connect(**kw: Any) -> Any:
        time.sleep(0.02)
        return connect(**kw)

    monkeypatch.setattr(rt, "_connect", slow_connect)
    for _ in range(5):
        rt.use_settings(rt.settings)  # clients made again on next use
        errors: list[BaseException] = []
        go = threading.Barrier(8)

        def first_use(i: int, go: threading.Barrier, errors: list[BaseException]) -> None:
            go.wait()
            time.sleep(0.005 * i)  # arriving one after another, while the first connects
            try:
                assert rt.client_once is not None and rt.client is not None
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=first_use, args=(i, go, errors)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:1]
        assert rt.client_once is not rt.client
