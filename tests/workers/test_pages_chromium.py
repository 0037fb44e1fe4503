"""The operator's pages in a real browser: headless Chromium (Debian's package, driven over
its DevTools protocol by ``tests/chromium.py``) logs into the example site's Django admin,
opens a wallet that a real ``celery worker`` quarantined for a crash loop (the supervisor
tick run by a real ``celery beat``), clicks "Resume", and watches the wallet drain its
mailbox on its page.

The site runs in this process (Django's WSGI app, with its static files, on a threaded
server). With ``CELERY_SUPERVISE_SCREENSHOTS=docs/img`` the screenshots of
docs/operations.md are written there as well as into the test's directory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import redis
from celery import Celery

from celery_supervise import Supervision
from tests.chromium import Browser
from tests.conftest import DJANGO_SITE
from tests.harness import start_beat, start_worker, wait_until

WALLET = "wallets.wallet"
#: The largest screenshot kept in docs/img.
MAX_PNG_BYTES = 1_000_000


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def live_site(django_site: Celery) -> Iterator[str]:
    """The example site (its admin, with static files) on a free port: its base URL."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.wsgi import get_wsgi_application

    server = make_server("127.0.0.1", 0, StaticFilesHandler(get_wsgi_application()),
                         server_class=_ThreadingServer, handler_class=_QuietHandler)  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def operator(django_site: Celery) -> tuple[str, str]:
    """A staff user with celery_supervise.change_actor: (username, password)."""
    from django.contrib.auth.models import Permission, User

    User.objects.filter(username="night-operator").delete()
    user = User.objects.create_user("night-operator", password="pw-3am", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="celery_supervise", codename="change_actor")
    )
    return "night-operator", "pw-3am"


@pytest.fixture
def processes(
    django_site: Celery, django_site_env: dict[str, str], supervise_redis_url: str,
    tmp_path: Path,
) -> Iterator[None]:  # fmt: skip
    redis.Redis.from_url(supervise_redis_url).flushdb()
    worker = start_worker(DJANGO_SITE, concurrency=1, hostname="pages@%h", env=django_site_env,
                          log_dir=tmp_path / "worker")  # fmt: skip
    beat = start_beat(DJANGO_SITE, env=django_site_env, schedule_dir=tmp_path / "beat")
    yield
    beat.kill()
    worker.kill()


def screenshots(tmp_path: Path) -> list[Path]:
    places = [tmp_path]
    wanted = os.environ.get("CELERY_SUPERVISE_SCREENSHOTS")
    if wanted:
        places.append(Path(wanted))
    return places


def test_resume_a_quarantined_wallet_in_the_browser(
    django_site: Celery, processes: None, live_site: str, operator: tuple[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    django_site.loader.import_default_modules()  # the actors, as the worker finds them
    sup = Supervision(django_site)
    ref = sup.ref(WALLET, "mallory")
    ref.send({"deposit": 500}, message_id="open")
    for i in range(2):  # no payee: the wallet raises on each, a crash loop
        ref.send({"pay": 100, "to": ""}, message_id=f"malformed-{i}")
    quarantined = wait_until(lambda: ref.snapshot().status == "quarantined", 90,
                             message="the crash-looping wallet was not quarantined")  # fmt: skip
    assert quarantined
    for i in range(3):  # queued behind the quarantine, kept
        ref.send({"deposit": 10}, message_id=f"later-{i}")
    before = ref.snapshot()
    assert before.status == "quarantined" and before.pending >= 3

    shots = screenshots(tmp_path)
    browser = Browser(tmp_path / "chromium-profile")
    try:
        user, password = operator
        browser.open(f"{live_site}/admin/login/?next=/admin/")
        browser.js(f"document.querySelector('#id_username').value = {user!r}; "
                   f"document.querySelector('#id_password').value = {password!r};")  # fmt: skip
        browser.click_and_wait("input[type=submit]")
        assert "Supervision" in browser.text("#content"), "no Supervision section in the admin"

        browser.open(f"{live_site}/admin/celery_supervise/actor/")
        tree = browser.text("#content")
        assert "Supervision tree" in tree and "payments" in tree and WALLET in tree
        for place in shots:
            browser.screenshot(place / "admin-tree.png")

        browser.open(f"{live_site}/admin/celery_supervise/actor/actor/?type={WALLET}&key=mallory")
        assert browser.text(".cs-status") == "quarantined"
        assert int(browser.text("#cs-pending")) >= 3
        for place in shots:
            browser.screenshot(place / "admin-actor-quarantined.png")

        browser.click_and_wait("button[data-action=resume]")
        assert browser.text(".messagelist").startswith(f"Resumed {WALLET}:mallory")

        def drained() -> bool:
            browser.open(browser.js("location.href"))
            return browser.text(".cs-status") == "idle" and browser.text("#cs-pending") == "0"

        wait_until(drained, 60, interval=0.5, message="the wallet did not drain on its page")
        for place in shots:
            browser.screenshot(place / "admin-actor-resumed.png")
    finally:
        browser.close()
    after = ref.snapshot()
    assert after.state["balance"] == 530 and after.pending == 0
    assert after.dead_letters == 2  # the malformed payments, their attempts used up
    for place in shots:
        for name in ("admin-tree.png", "admin-actor-quarantined.png", "admin-actor-resumed.png"):
            png = (place / name).read_bytes()
            assert png.startswith(b"\x89PNG") and len(png) < MAX_PNG_BYTES, name
