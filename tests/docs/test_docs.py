"""The documentation cannot rot: the site builds with warnings as errors, every code example
in the pages is a checked copy of a region of a file under ``docs/examples/`` (see
``tests/docs/inlined.py``) that runs here against a real Redis, and the reference tables
match the code's own defaults."""

from __future__ import annotations

import ast
import concurrent.futures
import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from celery import _state

from celery_supervise.testing import LocalRunner
from tests.docs import inlined

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
#: Pages written by other people; everything else in docs/ follows the snippet rule.
NOT_OURS = {"effects.md", "performance.md", "keyspace.md", "protocol.md"}


def test_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link, a missing page, a bad anchor or
    an API reference that no longer resolves fails the build."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "requeue_dead_letter" in api and "LocalRunner" in api


def _our_pages() -> list[Path]:
    return [p for p in sorted(DOCS.glob("*.md")) if p.name not in NOT_OURS]


def test_python_in_pages_is_copied_from_tested_files() -> None:
    """Every ``python`` block of the pages is a marked copy of a region of a tested file, so a
    reader of the raw page (the repository's web view) sees the code the tests run."""
    fence = re.compile(r"^```python\n", re.M)
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        copied = {c.code for c in inlined.copies(page)}
        for start in fence.finditer(text):
            code = text[start.end() : text.index("\n```", start.end()) + 1]
            assert code in copied, f"{page.name}: python block with no example marker: {code!r}"
        assert "--8<--" not in text, f"{page.name}: an include line a raw page would show"


@pytest.mark.parametrize("page", inlined.pages(), ids=lambda p: p.name)
def test_copied_blocks_match_their_regions(page: Path) -> None:
    for copy in inlined.copies(page):
        assert copy.code == inlined.region(copy.path, copy.region), (
            f"{page.name}: the copy of {copy.path}#{copy.region} differs from the file; "
            "run `python tests/docs/inlined.py` to copy the region again"
        )


def _table_rows(page: str) -> dict[str, str]:
    """First column (a `code` name) -> second column, for every table row of ``page``."""
    rows = {}
    for line in (DOCS / page).read_text().splitlines():
        match = re.match(r"\| `([a-z_.]+)` \| (.*?) \|", line)
        if match:
            rows.setdefault(match.group(1), match.group(2))
    return rows


def _literal(cell: str) -> Any:
    match = re.match(r"`([^`]*)`", cell)
    assert match, cell
    return ast.literal_eval(match.group(1))


def test_settings_reference_matches_the_code() -> None:
    from celery_supervise.settings import DEFAULTS
    from celery_supervise.specs import BACKOFF_KEYS, SPEC_KEYS, BackoffSpec, SupervisorSpec

    rows = _table_rows("settings.md")
    for name, default in DEFAULTS.items():
        assert name in rows, f"settings.md does not document {name}"
        assert _literal(rows[name]) == default, name
    spec = SupervisorSpec(name="x", parent="root")
    for key in SPEC_KEYS - {"backoff"}:
        documented = _literal(rows[key])
        actual = getattr(spec, key)
        assert documented == (list(actual) if isinstance(actual, tuple) else actual), key
    assert _literal(rows["backoff"]) == vars(BackoffSpec())
    for key in BACKOFF_KEYS:
        assert _literal(rows[key]) == getattr(BackoffSpec(), key), key


def test_actor_options_reference_matches_the_code() -> None:
    from celery_supervise import actor

    probe = actor(name="docs.defaults_probe")(lambda ctx, state, message: state)
    rows = _table_rows("api.md")
    for option in ("initial", "validate", "supervisor", "restart", "recovery",
                   "max_attempts", "history", "time_limit", "idle_ttl"):
        assert _literal(rows[option]) == getattr(probe, option), option


def test_cli_commands_shown_exist() -> None:
    from celery_supervise.cli import supervise

    text = "\n".join(p.read_text() for p in _our_pages())
    shown = set(re.findall(r"celery -A proj supervise ([a-z-]+)", text))
    assert shown >= {"status", "actor", "dead-letters", "resume", "restart", "tick"}
    assert shown <= set(supervise.commands), shown - set(supervise.commands)


def test_numbers_in_decisions_match_the_code() -> None:
    from celery_supervise import child_lost, delivery, runner, runtime, store, tick

    text = (DOCS / "decisions.md").read_text()
    assert runner.BATCH_SIZE == 32 and runner.BATCH_SECONDS == 1.0
    assert "at most 32 messages" in text and "at most 1 s" in text
    assert tick.REPAIR_CAP == 300.0 and "up to 300 s" in text
    assert tick.DUE_PER_BUCKET == 500 and "500 per shard" in text
    assert store.CRASHES_KEPT == 50 and "50 crash records" in text
    assert delivery.REPLY_TTL_SECONDS == 300 and "300 s" in text
    assert runtime.REDIS_PATIENCE == 120.0 and "120 s" in text
    assert runtime.EVENTS_KEPT == 10_000
    assert child_lost.PATIENCE == 1.0 and "for at most 1 s (`child_lost.PATIENCE`;" in text


# -- the examples, run -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def examples(supervise_redis_url: str) -> Iterator[dict[str, ModuleType]]:
    """``docs/examples`` imported as the docs show them, ``proj.app`` the current app."""
    previous_app = _state.get_current_app()
    previous_url = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = supervise_redis_url
    sys.path.insert(0, str(EXAMPLES))
    try:
        modules = {n: importlib.import_module(n) for n in ("proj", "billing", "web", "walkthrough")}
        client = redis.Redis.from_url(supervise_redis_url)
        for key in client.scan_iter("proj:*"):
            client.delete(key)
        client.close()
        modules["proj"].app.set_current()
        yield modules
    finally:
        sys.path.remove(str(EXAMPLES))
        previous_app.set_current()
        if previous_url is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = previous_url


@pytest.fixture
def runner(examples: dict[str, ModuleType]) -> Iterator[LocalRunner]:
    local = LocalRunner(examples["proj"].supervision)
    yield local
    local.close()


@pytest.mark.parametrize(
    "scenario",
    ["getting_started", "invalid_state", "isolated_subtask", "slow_crash_loop",
     "validated_importer"],
)
def test_walkthrough(examples: dict[str, ModuleType], runner: LocalRunner, scenario: str) -> None:
    walkthrough = examples["walkthrough"]
    assert scenario in {f.__name__ for f in walkthrough.SCENARIOS}
    getattr(walkthrough, scenario)(runner)


def test_client_functions(examples: dict[str, ModuleType], runner: LocalRunner) -> None:
    web = examples["web"]
    first = web.deposit("acct-web", 25, request_id="req-1")
    assert web.deposit("acct-web", 25, request_id="req-1") == first == "req-1"  # a retry
    runner.run()
    # Celery's current app is per thread: a web server's threads have the project's only app.
    app = examples["proj"].app
    with concurrent.futures.ThreadPoolExecutor(1, initializer=app.set_current) as pool:
        answer = pool.submit(web.balance, "acct-web")
        deadline = time.monotonic() + 10
        while not answer.done() and time.monotonic() < deadline:
            runner.run()  # the worker's part, while the client waits for its reply
            time.sleep(0.01)
        assert answer.result(timeout=1) == {"key": "acct-web", "balance": 25}


def test_framework_settings_are_read(examples: dict[str, ModuleType]) -> None:
    from celery import Celery

    from celery_supervise import Supervision

    django_settings = importlib.import_module("django_settings")
    app = Celery("dj_docs", set_as_current=False)
    app.config_from_object(django_settings, namespace="CELERY")
    settings = Supervision(app).settings
    assert settings.redis_url == "redis://localhost:6379/1"
    assert settings.supervisors["billing"]["intensity"] == 5

    flask_app = importlib.import_module("flask_app")
    examples["proj"].app.set_current()  # Celery(...) made the Flask one current
    assert flask_app.supervision.settings.key_prefix == "shop"
    assert flask_app.supervision.settings.dedup_window == 3600


def test_cli_against_the_example_project(
    examples: dict[str, ModuleType], supervise_redis_url: str
) -> None:
    """The commands of the operations page, run as an operator would, after the scenarios."""
    env = {**os.environ, "REDIS_URL": supervise_redis_url, "PYTHONPATH": str(EXAMPLES)}
    commands = {
        "status": ["status", "--json"],
        "actor": ["actor", "billing.account", "acct-42", "--json"],
        "dead": ["dead-letters", "billing.naive_importer", "bank-feed", "--json"],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "proj", "supervise", *args],
            cwd=EXAMPLES, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, args in commands.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, (name, stderr)
        out[name] = json.loads(stdout)
    names = [s["name"] for s in out["status"]["supervisors"]]
    assert names == ["root", "billing", "ledger"]
    assert out["actor"]["state"]["balance"] == 15
    assert len(out["dead"]["dead_letters"]) == 2


def test_tick_routing_example_routes_the_tick() -> None:
    from celery import Celery

    from celery_supervise import Supervision
    from docs.examples.routing import route_tick

    app = Celery("routing", broker="redis://127.0.0.1:1/0", set_as_current=False)
    route_tick(app)
    Supervision(app)
    route = app.amqp.router.route({}, "celery_supervise.tick")
    assert route["queue"].name == "supervise"


# -- claims of the pages that the code decides ------------------------------------------------
def _normal_key(key: str) -> str:
    """``P:a:{T:K}:mid:<id>`` and ``P:a:{x}:mid:`` both become ``P:a:{}:mid:``."""
    return re.sub(r"<[^>]*>$", "", re.sub(r"\{[^}]*\}", "{}", key))


def test_keyspace_page_draws_every_key() -> None:
    """Every key ``Keyspace`` builds is on the key layout page, and the page draws no key
    that the code does not build."""
    import dataclasses

    from celery_supervise import tree_shell
    from celery_supervise.delivery import reply_marker
    from celery_supervise.keyspace import Keyspace

    ks = Keyspace("P")
    actor = ks.actor("T", "K")
    names = {f.name for f in dataclasses.fields(actor)} - {"type_name", "key"}
    built = {getattr(actor, name) for name in names}
    built |= {reply_marker(actor.reply("<id>"))}
    built |= {ks.due(0), ks.plan("x"), ks.dead_index, ks.tick_lock, ks.tick_senders, ks.events}
    built |= {ks.quarantined_index("T"), ks.type_index("T")}
    built |= {ks.ready("T"), ks.ready_runs("T"), ks.ready_taken("T")}
    built |= {ks.stats("T", 0), ks.status_index("T", 0, "<status>"), ks.tick_stats}
    built |= {ks.tick_group_lock("<g>"), ks.stat_slots("T")}  # type: ignore[arg-type]
    on_cluster = Keyspace("P", cluster=True)
    built |= {on_cluster.stats("T", 0), on_cluster.status_index("T", 0, "<status>")}
    built |= {ks.supervisor("S"), ks.supervisor_history("S"), ks.supervisor_members("S")}
    built = {_normal_key(k) for k in built}

    layout = (DOCS / "keyspace.md").read_text().split("```")[1]
    drawn = {_normal_key(m) for m in re.findall(r"^(P:\S+)", layout, re.M)}
    assert built <= drawn, built - drawn
    assert drawn - built == set(), drawn - built
    assert tree_shell.PLAN_TTL_SECONDS == 3600
    assert "P:plan:{exit_id}          string a decided restart plan, TTL 1 h" in layout


def test_flower_page_states_the_tick_results_cut() -> None:
    from celery import Celery

    from celery_supervise import Supervision, tick

    app = Celery("flower_docs", broker="redis://127.0.0.1:1/0", set_as_current=False)
    supervision = Supervision(app)
    text = " ".join((DOCS / "flower.md").read_text().split())
    assert supervision.tick_task.resultrepr_maxsize == 16384
    assert "The tick task raises its cut to 16384 characters" in text
    assert tick.DECISIONS_IN_RESULT == 50 and "(at most 50 per tick)" in text


def test_effects_page_limits_hold() -> None:
    """The limits the effects page states: 1024 ``ctx.send`` per step, and only the
    ``queue`` option of a ``ctx.isolate`` signature is kept."""
    from types import SimpleNamespace

    from celery import signature

    from celery_supervise.context import Context
    from celery_supervise.effects import MAX_SENDS_PER_STEP
    from celery_supervise.errors import InvalidMessage

    text = " ".join((DOCS / "effects.md").read_text().split())
    assert "At most 1024 `ctx.send` per step." in text
    assert "`ctx.isolate` keeps only the signature's `queue` option." in text
    ctx = Context(actor="a", key="k", message_id="m", version=0, attempt=1,
                  reply_wanted=False, max_message_bytes=1024)
    other = SimpleNamespace(type_name="b", key="k")
    for i in range(1024):
        ctx.send(other, i)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage):
        ctx.send(other, 1024)  # type: ignore[arg-type]
    assert MAX_SENDS_PER_STEP == 1024  # the relay's ordinals reserve this many per step

    sig = signature("t", args=(1,), kwargs={}, queue="q", countdown=5, priority=3,
                    time_limit=9)
    ctx.isolate(sig, tag="t")
    assert ctx.effects.isolates[0]["options"] == {"queue": "q"}
