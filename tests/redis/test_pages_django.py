"""The "Supervision" section of the example site's Django admin
(``celery_supervise.contrib.django``), through Django's test client, against the session's
Redis; steps and ticks run in-process (``LocalRunner``). The admin's users live in the
site's SQLite database (``django_site`` migrates it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery, current_app

from celery_supervise import Supervision
from celery_supervise.testing import LocalRunner
from tests.pages_scenario import WALLET, csrf_token, fast_payments, quarantined_wallet, until

BASE = "/admin/celery_supervise/actor/"


@dataclass
class Site:
    sup: Supervision
    runner: LocalRunner
    users: dict[str, Any]

    def client(self, user: str | None, *, csrf_checks: bool = False) -> Any:
        from django.test import Client

        client = Client(enforce_csrf_checks=csrf_checks)
        if user is not None:
            client.force_login(self.users[user])
        return client


@pytest.fixture(scope="module")
def users(django_site: Celery) -> dict[str, Any]:
    """``clerk`` (no staff status), ``viewer`` (staff), ``operator`` (staff with
    celery_supervise.change_actor), ``root`` (a superuser)."""
    from django.contrib.auth.models import Permission, User

    User.objects.filter(username__in=["clerk", "viewer", "operator", "root"]).delete()
    made = {
        "clerk": User.objects.create_user("clerk", password="x"),
        "viewer": User.objects.create_user("viewer", password="x", is_staff=True),
        "operator": User.objects.create_user("operator", password="x", is_staff=True),
        "root": User.objects.create_superuser("root", password="x"),
    }
    made["operator"].user_permissions.add(
        Permission.objects.get(content_type__app_label="celery_supervise", codename="change_actor")
    )
    return made


@pytest.fixture
def site(django_site: Celery, users: dict[str, Any], supervise_runner: Any) -> Iterator[Site]:
    previous = current_app._get_current_object()
    django_site.set_current()
    sup = Supervision(django_site)
    with fast_payments(sup):
        yield Site(sup, supervise_runner(sup), users)
    previous.set_current()


def actor_url(key: str) -> str:
    return f"{BASE}actor/?type={WALLET}&key={key}"


def messages(html: str) -> list[str]:
    """The admin's messages (``django.contrib.messages``) on a page (the admin shows each
    with its first letter capitalised)."""
    return [m.strip() for m in re.findall(r'<li class="(?:success|error)">(.*?)</li>', html, re.S)]


def test_the_section_is_in_the_admin_for_staff(site: Site) -> None:
    index = site.client("viewer").get("/admin/").content.decode()
    assert ">Supervision<" in index and f'href="{BASE}"' in index
    page = site.client("viewer").get(BASE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Supervision tree" in html and "payments" in html and WALLET in html
    assert 'class="breadcrumbs"' in html  # in the admin's own layout


def test_reading_needs_a_staff_login(site: Site) -> None:
    for user in (None, "clerk"):
        for url in (BASE, actor_url("x"), f"{BASE}actors/?type={WALLET}"):
            answer = site.client(user).get(url)
            assert answer.status_code == 302, (user, url)
            assert answer.headers["Location"].startswith("/admin/login/")
    assert site.client("clerk").get("/admin/").status_code == 302


def test_an_action_needs_the_change_permission(site: Site) -> None:
    ref = quarantined_wallet(site.sup, site.runner, "dora")
    viewer = site.client("viewer")
    page = viewer.get(actor_url("dora")).content.decode()
    assert "cs-quarantined" in page and "data-action" not in page
    refused = viewer.post(f"{BASE}act/", {"type": WALLET, "key": "dora", "action": "resume"})
    assert refused.status_code == 403
    assert "celery_supervise.change_actor" in refused.content.decode()
    assert ref.snapshot().status == "quarantined"
    assert 'data-action="resume"' in site.client("root").get(actor_url("dora")).content.decode()


def test_an_action_needs_a_post_and_the_csrf_token(site: Site) -> None:
    ref = quarantined_wallet(site.sup, site.runner, "ezra")
    client = site.client("operator", csrf_checks=True)
    form = {"type": WALLET, "key": "ezra", "action": "resume"}
    assert client.get(f"{BASE}act/").status_code == 405
    without = client.post(f"{BASE}act/", form)
    assert without.status_code == 403 and "CSRF" in without.content.decode()
    assert ref.snapshot().status == "quarantined"
    token = csrf_token(client.get(actor_url("ezra")).content.decode())
    done = client.post(f"{BASE}act/", {**form, "csrfmiddlewaretoken": token})
    assert done.status_code == 303 and done.headers["Location"] == actor_url("ezra")


def test_a_quarantined_wallet_is_resumed_and_drains(site: Site) -> None:
    ref = quarantined_wallet(site.sup, site.runner, "fay")
    client = site.client("operator", csrf_checks=True)
    page = client.get(actor_url("fay")).content.decode()
    assert "overdraft" in page and "malformed" in page  # the dead letter, the crashes
    client.post(f"{BASE}act/", {"type": WALLET, "key": "fay", "action": "resume",
                                "csrfmiddlewaretoken": csrf_token(page)})  # fmt: skip
    shown = messages(client.get(actor_url("fay")).content.decode())
    assert shown[0].startswith(f"Resumed {WALLET}:fay from its last good state")
    snap = until(site.runner, ref, status="idle", pending=0)
    assert snap.state["balance"] == 507
    html = client.get(actor_url("fay")).content.decode()
    assert 'cs-idle">idle<' in html and '<span id="cs-pending">0</span>' in html


def test_a_refused_action_is_shown_as_an_error(site: Site) -> None:
    site.sup.ref(WALLET, "gus").send({"deposit": 5})
    site.runner.run()
    client = site.client("operator")
    client.post(f"{BASE}act/", {"type": WALLET, "key": "gus", "action": "resume"})
    html = client.get(actor_url("gus")).content.decode()
    assert '<li class="error">' in html
    assert messages(html) == [
        f"{WALLET.capitalize()}:gus is idle, not stopped or quarantined: nothing to resume"
    ]


def test_bad_requests_get_a_clear_error(site: Site) -> None:
    client = site.client("viewer")
    for url, text in [
        (f"{BASE}actors/?type=wallets.nope", "wallets.nope"),
        (f"{BASE}actors/?type={WALLET}&status=zombie", "status &#x27;zombie&#x27; is not one of"),
        (f"{BASE}actors/?type={WALLET}&cursor=-1", "cursor must be a whole number"),
        (f"{BASE}actor/?type={WALLET}&key=", "actor key must not be empty"),
    ]:
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert text in answer.content.decode(), url


def test_the_app_carries_one_permission_and_no_table(site: Site) -> None:
    from django.contrib.auth.models import Permission
    from django.db import connection

    from celery_supervise.contrib.django.models import Actor

    codenames = Permission.objects.filter(content_type__app_label="celery_supervise")
    assert [p.codename for p in codenames] == ["change_actor"]
    assert Actor._meta.managed is False
    assert Actor._meta.db_table not in connection.introspection.table_names()


def test_the_pages_show_the_supervision_the_setting_names(site: Site, django_site: Celery) -> None:
    from django.conf import settings
    from django.test.utils import override_settings

    from celery_supervise.contrib.django.admin import supervision

    assert settings.SUPERVISION_ADMIN_CELERY_APP == "example_project.django_site.celery.app"
    assert supervision() is site.sup
    with override_settings(
        SUPERVISION_ADMIN_CELERY_APP="example_project.django_site.celery.supervision"
    ):
        assert supervision() is site.sup  # the Supervision itself may be named
    with override_settings():
        del settings.SUPERVISION_ADMIN_CELERY_APP
        assert supervision() is Supervision.for_current_app() is site.sup
