"""The operator's pages as the example Flask app serves them (``celery_supervise.contrib.flask``
at ``/supervision/``, behind ``example_project/flask_app/operators.py``'s login), through
Flask's test client, against the session's Redis; steps and ticks run in-process
(``LocalRunner``)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import _state as celery_state
from celery import current_app

from celery_supervise import ConfigurationError, Supervision
from celery_supervise.contrib import pages
from celery_supervise.contrib.flask import blueprint
from celery_supervise.testing import LocalRunner
from tests.pages_scenario import WALLET, csrf_token, fast_payments, quarantined_wallet, until

VIEWER = {"Authorization": "Basic " + base64.b64encode(b"viewer:viewer-pw").decode()}
OPERATOR = {"Authorization": "Basic " + base64.b64encode(b"operator:operator-pw").decode()}
BASE = "/supervision"


@dataclass
class Site:
    flask: Any
    sup: Supervision
    runner: LocalRunner

    def client(self) -> Any:
        return self.flask.test_client()


@pytest.fixture(scope="module")
def flask_app(supervise_redis_url: str) -> Iterator[Any]:
    from example_project.flask_app import create_app

    default = celery_state.default_app
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EXAMPLE_REDIS_URL", supervise_redis_url)
        env.setenv("EXAMPLE_KEY_PREFIX", "expages")
        env.setenv("EXAMPLE_VIEWER_PASSWORD", "viewer-pw")
        env.setenv("EXAMPLE_OPERATOR_PASSWORD", "operator-pw")
        app = create_app({"TESTING": True})
        yield app
    celery_state.set_default_app(default)  # create_app made the example's app the default


@pytest.fixture
def site(flask_app: Any, supervise_runner: Any) -> Iterator[Site]:
    previous = current_app._get_current_object()
    celery_app = flask_app.extensions["celery"]
    celery_app.set_current()
    sup = Supervision(celery_app)
    with fast_payments(sup):
        yield Site(flask_app, sup, supervise_runner(sup))
    previous.set_current()


def actor_url(key: str) -> str:
    return f"{BASE}/actor?type={WALLET}&key={key}"


def act(client: Any, key: str, action: str, token: str | None, **fields: str) -> Any:
    form = {"type": WALLET, "key": key, "action": action, **fields}
    if token is not None:
        form["csrf_token"] = token
    return client.post(f"{BASE}/act", data=form, headers=OPERATOR)


def notices(html: str) -> list[str]:
    return re.findall(r'<div class="cs-notice [^"]+" role="status">([^<]*)</div>', html)


def test_reading_needs_a_login(site: Site) -> None:
    client = site.client()
    anonymous = client.get(f"{BASE}/")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].lower().startswith("basic")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"viewer:guess").decode()}
    assert client.get(f"{BASE}/", headers=wrong).status_code == 401
    page = client.get(f"{BASE}/", headers=VIEWER)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Supervision tree" in html and "payments" in html and "audit" in html
    assert WALLET in html


def test_the_tree_counts_actors_and_dead_letter_holders(site: Site) -> None:
    quarantined_wallet(site.sup, site.runner, "q1")
    for key in ("a", "b"):
        site.sup.ref(WALLET, key).send({"deposit": 1})
    site.runner.run()
    ov = pages.overview(site.sup)
    counts = {t.name: t for t in ov.types}
    assert (counts[WALLET].actors, counts[WALLET].dead_letter_holders) == (3, 1)
    html = site.client().get(f"{BASE}/", headers=VIEWER).get_data(as_text=True)
    row = re.search(rf">{re.escape(WALLET)}</a></td><td>payments</td><td>(\d+)</td><td>(\d+)<",
                    html)  # fmt: skip
    assert row and row.groups() == ("3", "1")


def test_a_quarantined_wallet_is_resumed_from_its_page(site: Site) -> None:
    ref = quarantined_wallet(site.sup, site.runner, "carol")
    client = site.client()
    page = client.get(actor_url("carol"), headers=OPERATOR).get_data(as_text=True)
    assert "cs-quarantined" in page and "overdraft" in page  # status, the dead letter
    assert "ValueError" in page or "StateRejected" in page  # the crash records
    assert 'data-action="resume"' in page
    done = act(client, "carol", "resume", csrf_token(page))
    assert done.status_code == 303 and done.headers["Location"].endswith(actor_url("carol"))
    after = client.get(actor_url("carol"), headers=OPERATOR).get_data(as_text=True)
    assert notices(after)[0].startswith(f"resumed {WALLET}:carol from its last good state")
    # The malformed payment crashes twice more and is dead-lettered; the deposit behind it
    # is then applied: the mailbox drains.
    snap = until(site.runner, ref, status="idle", pending=0)
    assert snap.state["balance"] == 507 and snap.dead_letters == 2


def test_a_viewer_reads_but_cannot_act(site: Site) -> None:
    ref = quarantined_wallet(site.sup, site.runner, "dave")
    client = site.client()
    page = client.get(actor_url("dave"), headers=VIEWER).get_data(as_text=True)
    assert "cs-quarantined" in page and "data-action" not in page
    assert "the actions need the change permission" in page
    # The session's token (the same client, seen as the operator): only the login differs.
    token = csrf_token(client.get(actor_url("dave"), headers=OPERATOR).get_data(True))
    refused = client.post(f"{BASE}/act", headers=VIEWER, data={
        "type": WALLET, "key": "dave", "action": "resume", "csrf_token": token})
    assert refused.status_code == 403
    assert "not allowed to resume" in refused.get_data(as_text=True)
    assert ref.snapshot().status == "quarantined"


def test_an_action_needs_a_post_with_this_sessions_csrf_token(site: Site) -> None:
    ref = quarantined_wallet(site.sup, site.runner, "erin")
    client, other = site.client(), site.client()
    other_token = csrf_token(other.get(actor_url("erin"), headers=OPERATOR).get_data(True))
    own_token = csrf_token(client.get(actor_url("erin"), headers=OPERATOR).get_data(True))
    assert own_token != other_token
    for token in (None, "", other_token):
        refused = act(client, "erin", "resume", token)
        assert refused.status_code == 403
        assert "CSRF token is missing or out of date" in refused.get_data(as_text=True)
    assert client.get(f"{BASE}/act", headers=OPERATOR).status_code == 405
    assert ref.snapshot().status == "quarantined"
    assert act(client, "erin", "resume", own_token).status_code == 303


def test_a_refused_action_says_why(site: Site) -> None:
    site.sup.ref(WALLET, "frank").send({"deposit": 5})
    site.runner.run()
    client = site.client()
    token = csrf_token(client.get(actor_url("frank"), headers=OPERATOR).get_data(True))
    cases = [
        ("resume", {}, f"{WALLET}:frank is idle, not stopped or quarantined: nothing to resume"),
        ("restart", {}, f"{WALLET}:frank is idle: a last_good restart applies only to a halted"),
        ("rollback", {"version": "99"}, f"roll back {WALLET}:frank refused: {WALLET}:frank has "
                                        "no version 99 in its history"),
        ("rollback", {"version": "x"}, "rollback needs a version number, got 'x'"),
        ("requeue", {"message_id": "nope"}, f"requeue {WALLET}:frank refused: {WALLET}:frank "
                                            "has no dead letter 'nope'"),
        ("explode", {}, "unknown action 'explode' (one of resume, restart, restart_reset"),
    ]
    for action, fields, message in cases:
        assert act(client, "frank", action, token, **fields).status_code == 303
        shown = notices(client.get(actor_url("frank"), headers=OPERATOR).get_data(True))
        assert shown and shown[0].startswith(message.replace("'", "&#x27;")), (action, shown)
    missing = act(client, "nobody", "resume", token)
    shown = notices(client.get(actor_url("nobody"), headers=OPERATOR).get_data(True))
    assert missing.status_code == 303 and "does not exist" in shown[0]


def test_requeue_rollback_and_reset_from_the_page(site: Site) -> None:
    ref = site.sup.ref(WALLET, "gina")
    ref.send({"deposit": 500})
    ref.send({"withdraw": 10**9}, message_id="overdraft")  # dead-lettered after 3 crashes
    ref.send({"deposit": 100})
    snap = until(site.runner, ref, status="idle", pending=0)
    assert (snap.state["balance"], snap.version, snap.dead_letters) == (600, 2, 1)
    client = site.client()
    page = client.get(actor_url("gina"), headers=OPERATOR).get_data(as_text=True)
    assert 'name="message_id" value="overdraft"' in page
    assert 'name="version" value="1"' in page  # rollback offered for the older version
    token = csrf_token(page)

    act(client, "gina", "rollback", token, version="1")
    assert (ref.snapshot().state["balance"], ref.snapshot().version) == (500, 3)

    act(client, "gina", "requeue", token, message_id="overdraft")
    assert ref.snapshot().dead_letters == 0 and ref.snapshot().pending == 1

    act(client, "gina", "restart_reset", token)
    snap = ref.snapshot()
    assert snap.state == {"balance": 0, "held": {}, "recent": []}
    shown = notices(client.get(actor_url("gina"), headers=OPERATOR).get_data(True))
    # Each action's outcome is shown once, on the next page, in order.
    assert shown[0].startswith(f"rolled {WALLET}:gina back to the state of version 1")
    assert shown[1].startswith("requeued dead letter &#x27;overdraft&#x27; at the end")
    assert shown[2].startswith(f"restarted {WALLET}:gina (reset)")


def test_values_from_redis_are_escaped(site: Site) -> None:
    key = '<script>alert("k")</script>'
    site.sup.ref(WALLET, key).send({"deposit": 1})
    site.runner.run()
    client = site.client()
    listing = client.get(f"{BASE}/actors?type={WALLET}", headers=VIEWER).get_data(True)
    page = client.get(f"{BASE}/actor", query_string={"type": WALLET, "key": key},
                      headers=VIEWER).get_data(True)  # fmt: skip
    for html in (listing, page):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&quot;k&quot;)&lt;/script&gt;" in html


def test_the_actors_of_a_type_are_listed_a_page_at_a_time(site: Site) -> None:
    for key in ("k1", "k2", "k3"):
        site.sup.ref(WALLET, key).send({"deposit": 1})
    site.runner.run()
    client = site.client()
    first = client.get(f"{BASE}/actors?type={WALLET}&limit=2", headers=VIEWER).get_data(True)
    assert re.findall(r"key=(k\d)", first) == ["k1", "k2"]
    nxt = re.search(r'href="([^"]+)">next page<', first)
    assert nxt and "cursor=2" in nxt.group(1) and "limit=2" in nxt.group(1)
    second = client.get(nxt.group(1).replace("&amp;", "&"), headers=VIEWER)
    html = second.get_data(as_text=True)
    assert re.findall(r"key=(k\d)", html) == ["k3"] and "next page" not in html


def test_the_actors_in_a_status_come_from_the_status_index(site: Site) -> None:
    quarantined_wallet(site.sup, site.runner, "q2")
    site.sup.ref(WALLET, "fine").send({"deposit": 1})
    site.runner.run()
    listed = pages.actor_list(site.sup, WALLET, "quarantined")
    assert [r.key for r in listed.rows] == ["q2"] and listed.next_cursor == 0
    html = site.client().get(f"{BASE}/actors?type={WALLET}&status=quarantined",
                             headers=VIEWER).get_data(True)  # fmt: skip
    assert "key=q2" in html and "key=fine" not in html


def test_bad_requests_get_a_clear_error(site: Site) -> None:
    client = site.client()
    cases = [
        ("/actors?type=wallets.nope", 404, "wallets.nope"),
        (f"/actors?type={WALLET}&status=zombie", 404, "status &#x27;zombie&#x27; is not one of"),
        (f"/actors?type={WALLET}&cursor=x", 404, "cursor must be a whole number"),
        (f"/actors?type={WALLET}&limit=0", 404, "limit must be a whole number from 1 to 500"),
        ("/actor?type=wallets.nope&key=a", 404, "wallets.nope"),
        (f"/actor?type={WALLET}&key=", 404, "actor key must not be empty"),
    ]
    for url, status, text in cases:
        answer = client.get(BASE + url, headers=VIEWER)
        assert answer.status_code == status, url
        assert text in answer.get_data(as_text=True), url


def test_blueprint_checks_its_arguments(site: Site) -> None:
    with pytest.raises(ConfigurationError, match="takes the app's Supervision"):
        blueprint(site.flask, authorize=lambda request, action: True)
    with pytest.raises(ConfigurationError, match="must be a callable"):
        blueprint(site.sup, authorize=None)  # type: ignore[arg-type]


def test_the_blueprint_needs_a_secret_key_for_its_csrf_token(site: Site) -> None:
    from flask import Flask

    bare = Flask("no-secret")
    bare.config["TESTING"] = True
    bare.register_blueprint(blueprint(site.sup, authorize=lambda request, action: True))
    with pytest.raises(ConfigurationError, match=r"set app.secret_key"):
        bare.test_client().get(f"/actor?type={WALLET}&key=anyone")


def test_only_the_actions_authorize_allows_get_buttons(site: Site) -> None:
    from flask import Flask

    ref = site.sup.ref(WALLET, "hana")
    ref.send({"deposit": 5})
    ref.send({"withdraw": 10**9}, message_id="overdraft")  # dead-lettered after 3 crashes
    until(site.runner, ref, status="idle", pending=0)
    narrow = Flask("requeue-only")
    narrow.config.update(TESTING=True, SECRET_KEY="test")
    narrow.register_blueprint(
        blueprint(site.sup, authorize=lambda request, action: action in (None, "requeue"))
    )
    client = narrow.test_client()
    page = client.get(f"/actor?type={WALLET}&key=hana").get_data(as_text=True)
    assert re.findall(r'data-action="(\w+)"', page) == ["requeue"]
    form = {"type": WALLET, "key": "hana", "csrf_token": csrf_token(page)}
    assert client.post("/act", data={**form, "action": "resume"}).status_code == 403
    assert client.post("/act", data={**form, "action": "requeue",
                                     "message_id": "overdraft"}).status_code == 303  # fmt: skip
    assert ref.snapshot().dead_letters == 0
